"""Events that :class:`~chanserv_trio.wire._connection.Connection` returns from received bytes.

Each is a small frozen record (sans-IO: no trio). A driver reads them in order and
acts: wake a reader, start a handler, cancel a task.
"""

from __future__ import annotations

from operator import itemgetter
from typing import TYPE_CHECKING, TypeAlias

import attrs

from ._codec import Status

__all__ = [
    "AdmissionRequested",
    "ConnectionTerminated",
    "Event",
    "GoAwayReceived",
    "HandshakeCompleted",
    "MessageReceived",
    "MessageTuple",
    "PingAcknowledged",
    "ResumeRequested",
    "Resumed",
    "ServiceAdvertised",
    "StreamEnded",
    "StreamOpened",
    "StreamReset",
    "WindowOpened",
]


@attrs.frozen
class HandshakeCompleted:
    """The peer's HELLO arrived and was accepted; streams may now be opened."""

    #: The protocol version both sides now speak.
    version: int


@attrs.frozen
class AdmissionRequested:
    """The peer's HELLO arrived on a connection that defers its own: judge the
    credential, then ``admit()`` or ``refuse()``; nothing else is processed before."""

    #: The bytes of the peer's CREDENTIAL field (empty when it sent none).
    credential: bytes


@attrs.frozen
class StreamOpened:
    """The peer opened a stream."""

    #: The new stream's id (chosen by the peer, so of the peer's parity).
    stream_id: int
    #: 0 for a top-level stream, else the stream this one is a child of.
    parent: int
    #: The service the stream is addressed to ("" for child streams).
    service: str
    #: The opaque header bytes from the OPEN frame.
    header: bytes
    #: True while the peer may send on it (its half is open: no NO_SEND flag).
    remote_open: bool
    #: True while we may send on it (our half is open: no NO_REPLY flag).
    local_open: bool
    #: The route key from the OPEN frame: opaque bytes a router picks its next hop by
    #: (empty: none).
    route_key: bytes = b""


class MessageReceived(tuple[int, bytes, int]):
    """A whole message arrived on a stream (chunks already joined).

    A record like the other events (immutable, equal to another only of its own class
    and values, matched by ``case MessageReceived()``), but built on a tuple: it is the
    one event made for every DATA frame, and a tuple costs a third of what a frozen
    attrs instance does to make. The connection's receive path makes it with
    ``tuple.__new__(MessageReceived, (stream_id, data, credit))``.
    """

    __slots__ = ()
    __match_args__ = ("stream_id", "data", "credit")

    def __new__(cls, stream_id: int, data: bytes, credit: int) -> MessageReceived:
        return tuple.__new__(cls, (stream_id, data, credit))

    if TYPE_CHECKING:

        @property
        def stream_id(self) -> int:
            """The stream it arrived on."""

        @property
        def data(self) -> bytes:
            """The message bytes."""

        @property
        def credit(self) -> int:
            """Flow-control credit (the message size) to return with ``acknowledge``
            once consumed."""

    else:
        stream_id = property(itemgetter(0), doc="The stream it arrived on.")
        data = property(itemgetter(1), doc="The message bytes.")
        credit = property(
            itemgetter(2),
            doc="Flow-control credit (the message size) to return with ``acknowledge`` "
            "once consumed.",
        )

        # Equal only to a MessageReceived, as a record is (not to a plain tuple).
        # (Out of the type checker's sight, which then narrows by == as before.)
        def __eq__(self, other: object) -> bool:
            return type(other) is MessageReceived and tuple.__eq__(self, other)

        def __ne__(self, other: object) -> bool:
            return not self == other

        __hash__ = tuple.__hash__

    def __repr__(self) -> str:
        return f"MessageReceived(stream_id={self[0]!r}, data={self[1]!r}, credit={self[2]!r})"


@attrs.frozen
class StreamEnded:
    """The peer finished its half of a stream with a status (OK or an error)."""

    #: The stream it ended.
    stream_id: int
    #: How it ended.
    status: Status


@attrs.frozen
class StreamReset:
    """The peer aborted a stream in both directions."""

    #: The stream it reset.
    stream_id: int
    #: Why.
    status: Status
    #: True when we reset it ourselves on receiving something the stream refuses
    #: (a message over its limit): the peer did not reset it.
    local: bool = False


@attrs.frozen
class WindowOpened:
    """Send credit grew: on one stream, or on every stream (``stream_id`` 0)."""

    #: The stream whose window grew, or 0 for the connection window.
    stream_id: int


@attrs.frozen
class PingAcknowledged:
    """The answer to one of our PINGs arrived."""

    #: The 8 bytes we sent.
    payload: bytes


@attrs.frozen
class ServiceAdvertised:
    """The peer offers (or withdraws) a named service."""

    #: The service name.
    name: str
    #: True when offered, False when withdrawn.
    available: bool
    #: True when the peer offers it by relaying to another node (it is a router).
    relayed: bool = False
    #: The end-of-advertisement marker (a SERVICE with the ``COMPLETE`` flag): every
    #: name the peer offers has been advertised; ``name`` is then empty and means
    #: nothing, nor do ``available`` and ``relayed``.
    complete: bool = False


@attrs.frozen
class GoAwayReceived:
    """The peer will accept no new streams above ``last_stream_id``."""

    #: The highest of our stream ids the peer will still process.
    last_stream_id: int
    #: Why (``OK`` for a graceful shutdown).
    code: int
    #: Human-readable detail.
    message: str


@attrs.frozen
class ConnectionTerminated:
    """The connection is over: GOAWAY with an error, or the byte stream ended."""

    #: Why.
    code: int
    #: Human-readable detail.
    message: str


@attrs.frozen
class ResumeRequested:
    """The first HELLO on this (accepting) connection is a resuming one: the link it
    names, if the node holds it, carries on over this transport
    (``docs/protocol.md``, section 17). Nothing else is read on this connection."""

    #: The link's resume token, as the peer presented it.
    token: bytes
    #: The peer's received position.
    position: int
    #: The credential the resuming HELLO carried (``b""``: none); a node that
    #: authenticates judges it again and resumes only for the link's own identity.
    credential: bytes = b""


@attrs.frozen
class Resumed:
    """The peer answered our resuming HELLO: the frames it had not received are queued
    again, before anything queued since."""

    #: The peer's received position.
    position: int
    #: Bytes queued again for the peer.
    replayed: int


#: Every event a Connection returns (a driver's dispatch over it can be checked exhaustive).
#: How a connection with ``message_tuples`` set reports a whole message taken on its fast
#: path: ``(stream_id, data, credit)``, the fields of :class:`MessageReceived` in a plain
#: tuple. A plain tuple of ints and bytes is one the cyclic garbage collector stops
#: tracking at its first pass; a tuple subclass it tracks for as long as it lives, and
#: one read's thousands of small messages, alive together until the driver dispatches
#: them, would be carried into its old generations and make full collections frequent.
MessageTuple: TypeAlias = tuple[int, bytes, int]

Event: TypeAlias = (
    HandshakeCompleted
    | AdmissionRequested
    | StreamOpened
    | MessageReceived
    | MessageTuple
    | StreamEnded
    | StreamReset
    | WindowOpened
    | PingAcknowledged
    | ServiceAdvertised
    | GoAwayReceived
    | ConnectionTerminated
    | ResumeRequested
    | Resumed
)
