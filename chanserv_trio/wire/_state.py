"""The state table of the chanserv_trio wire protocol (sans-IO: no trio).

Every rule about *when* something may happen lives here, in two tables: one for the
connection, one for each stream. A :class:`~chanserv_trio.wire._connection.Connection`
passes every local action and every received frame through :func:`connection_input`,
and every action or frame about a stream through :func:`stream_input` as well. Each
``(state, input)`` pair has one of three outcomes:

- **allowed**: the pair is in the table, which gives the next state;
- **ignored**: the table gives ``None``. Nothing is queued or reported, and the state
  stays. (A frame for a stream that already closed; a PING asked for after the
  connection closed: there is nobody to tell.)
- **forbidden**: the pair is not in the table. A local action raises
  :class:`~chanserv_trio.LocalProtocolError`; a received frame raises
  :class:`~chanserv_trio.RemoteProtocolError` with code ``PROTOCOL_ERROR``, which the
  connection sends to the peer in GOAWAY before it closes.

The tables know nothing about roles (which side dialed) or about sizes and windows:
the connection checks stream ids and flow control itself, and asks the tables only
whether the input may happen now.

Stream states are numbered so that bit 2 says "our half is open" (``local_open``: we
may still send) and bit 1 "the peer's half is open" (``remote_open``: the peer may
still send). The hot paths of the connection read the flat :data:`CONNECTION_NEXT` and
:data:`STREAM_NEXT` tuples, made from the same tables, instead of calling the
functions.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final, NoReturn

from .._errors import LocalProtocolError, RemoteProtocolError
from ._codec import ErrorCode

__all__ = [
    "CONNECTION_NEXT",
    "CONNECTION_TRANSITIONS",
    "FORBIDDEN",
    "IGNORED",
    "LOCAL_OPEN",
    "REMOTE_OPEN",
    "STREAM_NEXT",
    "STREAM_TRANSITIONS",
    "ConnectionInput",
    "ConnectionState",
    "StreamInput",
    "StreamState",
    "connection_input",
    "reject_connection_input",
    "reject_stream_input",
    "stream_input",
]


class ConnectionState(enum.IntEnum):
    """Where the connection as a whole is."""

    #: Our HELLO is queued; the peer's has not arrived. SERVICE and PING may be sent.
    HANDSHAKE = 0
    #: Both HELLOs are through: both sides may open streams.
    OPEN = 1
    #: We sent a graceful GOAWAY: the peer's new streams are refused; ours may open.
    LOCAL_GOAWAY = 2
    #: The peer sent a graceful GOAWAY: we open no new streams; the peer's may open.
    REMOTE_GOAWAY = 3
    #: Both sent a graceful GOAWAY: no new streams either way; open ones carry on.
    BOTH_GOAWAY = 4
    #: Over: a GOAWAY with an error code either way, a protocol error, or the byte
    #: stream ended. Nothing is queued and nothing received is processed any more.
    CLOSED = 5


class ConnectionInput(enum.IntEnum):
    """Everything that can happen to a connection: our actions, then received frames."""

    SEND_OPEN = 0
    SEND_DATA = 1
    SEND_END = 2
    SEND_RESET = 3
    #: Return flow-control credit (acknowledge, or a larger receive window).
    SEND_WINDOW = 4
    SEND_PING = 5
    SEND_SERVICE = 6
    #: A graceful GOAWAY (code ``OK``).
    SEND_GOAWAY = 7
    #: A GOAWAY with an error code: closes the connection.
    SEND_GOAWAY_ERROR = 8
    RECV_HELLO = 9
    RECV_OPEN = 10
    RECV_DATA = 11
    RECV_END = 12
    RECV_RESET = 13
    RECV_WINDOW = 14
    RECV_PING = 15
    RECV_SERVICE = 16
    RECV_GOAWAY = 17
    RECV_GOAWAY_ERROR = 18
    #: A frame of a type this version does not know.
    RECV_UNKNOWN = 19
    #: The byte stream ended.
    RECV_EOF = 20


#: Bit of a :class:`StreamState`: our half is open (we may still send DATA and END).
LOCAL_OPEN: Final = 2
#: Bit of a :class:`StreamState`: the peer's half is open (it may still send).
REMOTE_OPEN: Final = 1


class StreamState(enum.IntEnum):
    """One side's view of one stream: which of its two halves are still open."""

    #: Both halves closed, or reset: the stream is forgotten.
    CLOSED = 0
    #: We ended our half (or it started closed); the peer may still send.
    HALF_CLOSED_LOCAL = REMOTE_OPEN
    #: The peer ended its half (or it started closed); we may still send.
    HALF_CLOSED_REMOTE = LOCAL_OPEN
    #: Both halves open.
    OPEN = LOCAL_OPEN | REMOTE_OPEN


class StreamInput(enum.IntEnum):
    """Everything that can happen to a stream: our actions, then received frames."""

    SEND_DATA = 0
    SEND_END = 1
    SEND_RESET = 2
    SEND_WINDOW = 3
    RECV_DATA = 4
    RECV_END = 5
    RECV_RESET = 6
    RECV_WINDOW = 7


_C = ConnectionState
_CI = ConnectionInput
_S = StreamState
_SI = StreamInput
_LIVE = (_C.OPEN, _C.LOCAL_GOAWAY, _C.REMOTE_GOAWAY, _C.BOTH_GOAWAY)


def _connection_table() -> dict[tuple[ConnectionState, ConnectionInput], ConnectionState | None]:
    table: dict[tuple[ConnectionState, ConnectionInput], ConnectionState | None] = {}
    # Before the peer's HELLO: only what needs nothing of the peer's settings.
    for action in (_CI.SEND_PING, _CI.SEND_SERVICE):
        table[_C.HANDSHAKE, action] = _C.HANDSHAKE
    for action in (_CI.SEND_RESET, _CI.SEND_WINDOW):
        table[_C.HANDSHAKE, action] = None  # no stream exists yet
    # A graceful GOAWAY before the handshake leaves nothing to drain: it closes.
    table[_C.HANDSHAKE, _CI.SEND_GOAWAY] = _C.CLOSED
    table[_C.HANDSHAKE, _CI.SEND_GOAWAY_ERROR] = _C.CLOSED
    table[_C.HANDSHAKE, _CI.RECV_HELLO] = _C.OPEN
    table[_C.HANDSHAKE, _CI.RECV_EOF] = _C.CLOSED
    # A side that refuses our credential sends GOAWAY instead of its HELLO: it closes.
    table[_C.HANDSHAKE, _CI.RECV_GOAWAY] = _C.CLOSED
    table[_C.HANDSHAKE, _CI.RECV_GOAWAY_ERROR] = _C.CLOSED
    # Once both HELLOs are through.
    goaway_sent = {
        _C.OPEN: _C.LOCAL_GOAWAY,
        _C.LOCAL_GOAWAY: _C.LOCAL_GOAWAY,
        _C.REMOTE_GOAWAY: _C.BOTH_GOAWAY,
        _C.BOTH_GOAWAY: _C.BOTH_GOAWAY,
    }
    goaway_received = {
        _C.OPEN: _C.REMOTE_GOAWAY,
        _C.LOCAL_GOAWAY: _C.BOTH_GOAWAY,
        _C.REMOTE_GOAWAY: _C.REMOTE_GOAWAY,
        _C.BOTH_GOAWAY: _C.BOTH_GOAWAY,
    }
    steady = (
        _CI.SEND_DATA,
        _CI.SEND_END,
        _CI.SEND_RESET,
        _CI.SEND_WINDOW,
        _CI.SEND_PING,
        _CI.SEND_SERVICE,
        # An OPEN received after our GOAWAY is allowed, and refused with a RESET.
        _CI.RECV_OPEN,
        _CI.RECV_DATA,
        _CI.RECV_END,
        _CI.RECV_RESET,
        _CI.RECV_WINDOW,
        _CI.RECV_PING,
        _CI.RECV_SERVICE,
    )
    for state in _LIVE:
        for event in steady:
            table[state, event] = state
        table[state, _CI.SEND_GOAWAY] = goaway_sent[state]
        table[state, _CI.RECV_GOAWAY] = goaway_received[state]
        for event in (_CI.SEND_GOAWAY_ERROR, _CI.RECV_GOAWAY_ERROR, _CI.RECV_EOF):
            table[state, event] = _C.CLOSED
    for state in (_C.OPEN, _C.LOCAL_GOAWAY):
        table[state, _CI.SEND_OPEN] = state
    # Closed: our control frames have nobody to go to, and nothing received counts.
    for event in ConnectionInput:
        if event not in (_CI.SEND_OPEN, _CI.SEND_DATA, _CI.SEND_END):
            table[_C.CLOSED, event] = None
    return table


def _stream_table() -> dict[tuple[StreamState, StreamInput], StreamState | None]:
    table: dict[tuple[StreamState, StreamInput], StreamState | None] = {}
    ended_by_us = {_S.OPEN: _S.HALF_CLOSED_LOCAL, _S.HALF_CLOSED_REMOTE: _S.CLOSED}
    ended_by_peer = {_S.OPEN: _S.HALF_CLOSED_REMOTE, _S.HALF_CLOSED_LOCAL: _S.CLOSED}
    for state in (_S.OPEN, _S.HALF_CLOSED_LOCAL, _S.HALF_CLOSED_REMOTE):
        table[state, _SI.SEND_RESET] = _S.CLOSED
        table[state, _SI.RECV_RESET] = _S.CLOSED
        # Credit from the peer may arrive for a half we have ended: it is harmless.
        table[state, _SI.RECV_WINDOW] = state
        if state & LOCAL_OPEN:
            table[state, _SI.SEND_DATA] = state
            table[state, _SI.SEND_END] = ended_by_us[state]
        if state & REMOTE_OPEN:
            table[state, _SI.RECV_DATA] = state
            table[state, _SI.RECV_END] = ended_by_peer[state]
            table[state, _SI.SEND_WINDOW] = state
        else:
            # The peer sends no more: its credit is restored without telling it.
            table[state, _SI.SEND_WINDOW] = None
    # A stream that closed: frames the peer sent before it knew are dropped, and
    # resetting or crediting it again does nothing; only sending on it is a mistake.
    for event in StreamInput:
        if event not in (_SI.SEND_DATA, _SI.SEND_END):
            table[_S.CLOSED, event] = None
    return table


#: ``(state, input) -> next state``; ``None``: ignored; a pair not in it is forbidden.
CONNECTION_TRANSITIONS: Final[
    Mapping[tuple[ConnectionState, ConnectionInput], ConnectionState | None]
] = _connection_table()
#: ``(state, input) -> next state`` of one stream, the same way.
STREAM_TRANSITIONS: Final[Mapping[tuple[StreamState, StreamInput], StreamState | None]] = (
    _stream_table()
)

#: In the flat tables: the pair is forbidden.
FORBIDDEN: Final = -1
#: In the flat tables: the pair is ignored.
IGNORED: Final = -2


def _flatten(
    table: Mapping[tuple[Any, Any], enum.IntEnum | None],
    states: type[enum.IntEnum],
    inputs: type[enum.IntEnum],
) -> tuple[tuple[int, ...], ...]:
    """The table as rows indexed by state value, columns by input value."""
    assert [int(state) for state in states] == list(range(len(states)))
    assert [int(event) for event in inputs] == list(range(len(inputs)))
    rows = []
    for state in states:
        row = []
        for event in inputs:
            if (state, event) not in table:
                row.append(FORBIDDEN)
            else:
                outcome = table[state, event]
                row.append(IGNORED if outcome is None else int(outcome))
        rows.append(tuple(row))
    return tuple(rows)


#: ``CONNECTION_NEXT[state][input]``: the next state as an int, or FORBIDDEN / IGNORED.
CONNECTION_NEXT: Final = _flatten(CONNECTION_TRANSITIONS, ConnectionState, ConnectionInput)
#: ``STREAM_NEXT[state][input]``, the same way.
STREAM_NEXT: Final = _flatten(STREAM_TRANSITIONS, StreamState, StreamInput)


def _is_received(event: enum.IntEnum) -> bool:
    return event.name.startswith("RECV_")


def _connection_refusal(
    state: ConnectionState, event: ConnectionInput, frame_type: int | None
) -> str:
    if state is _C.CLOSED:
        return "connection is closed"
    if state is _C.HANDSHAKE:
        return "first frame must be HELLO" if _is_received(event) else "handshake not complete"
    if event is _CI.RECV_UNKNOWN:
        return f"unknown frame type {frame_type}"
    if event is _CI.RECV_HELLO:
        return "HELLO sent twice"
    assert event is _CI.SEND_OPEN, (state, event)
    return "no stream may be opened now: the peer sent GOAWAY"


def connection_input(
    state: int, event: ConnectionInput, frame_type: int | None = None
) -> ConnectionState | None:
    """The connection's next state after ``event``, or None if it is ignored.

    Raises :class:`LocalProtocolError` for a forbidden action, and
    :class:`RemoteProtocolError` (``PROTOCOL_ERROR``) for a forbidden frame
    (``frame_type``: the number an unknown frame type had, for the message).
    """
    key = (ConnectionState(state), event)
    if key not in CONNECTION_TRANSITIONS:
        reject_connection_input(state, event, frame_type)
    return CONNECTION_TRANSITIONS[key]


def reject_connection_input(state: int, event: int, frame_type: int | None = None) -> NoReturn:
    """Raise the error for an input the connection's table forbids in ``state``."""
    message = _connection_refusal(ConnectionState(state), ConnectionInput(event), frame_type)
    if _is_received(ConnectionInput(event)):
        raise RemoteProtocolError(message, ErrorCode.PROTOCOL_ERROR)
    raise LocalProtocolError(message)


def _stream_refusal(state: StreamState, event: StreamInput, stream_id: int) -> str:
    if event in (_SI.SEND_DATA, _SI.SEND_END):
        return f"stream {stream_id} is not open for sending"
    if event is _SI.RECV_DATA:
        return f"DATA on stream {stream_id} after its end"
    assert event is _SI.RECV_END, (state, event)
    return f"END twice on stream {stream_id}"


def stream_input(state: int, event: StreamInput, stream_id: int) -> StreamState | None:
    """The stream's next state after ``event``, or None if it is ignored; raises like
    :func:`connection_input` (the message names ``stream_id``)."""
    key = (StreamState(state), event)
    if key not in STREAM_TRANSITIONS:
        reject_stream_input(state, event, stream_id)
    return STREAM_TRANSITIONS[key]


def reject_stream_input(state: int, event: int, stream_id: int) -> NoReturn:
    """Raise the error for an input the stream table forbids in ``state``."""
    message = _stream_refusal(StreamState(state), StreamInput(event), stream_id)
    if _is_received(StreamInput(event)):
        raise RemoteProtocolError(message, ErrorCode.PROTOCOL_ERROR)
    raise LocalProtocolError(message)
