"""The state a link shares with its streams: one :class:`LinkState` per link, one
:class:`StreamState` per stream.

A :class:`~chanserv_trio.Link` and its :class:`~chanserv_trio.LinkStream` objects never
touch each other's private members. Both hold the same state objects and change them
only through what is defined here (as trio's two ends of a memory channel share one
state object): the link's reader fills a stream's inbox and wakes its reader; the
stream consumes, returns credit through the link state and wakes the link's writer.

Parking lots and queues are made on first use: most streams only ever send or only
ever receive, and an idle open stream should cost little memory.
"""

from __future__ import annotations

from collections import deque
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from .._errors import ChanservError
    from ..wire._codec import Status
    from ..wire._connection import Connection
    from ._stream import LinkStream

__all__ = ["QUEUE_LIMIT", "SCHEDULE_EVERY", "LinkState", "StreamState"]

#: A task that sends or receives without having to wait still yields to the scheduler
#: once every this many calls on a link (it checks for cancellation on every call).
SCHEDULE_EVERY = 32
#: Senders wait while this many bytes are queued for the transport and not yet taken by
#: the writer, so a link holds about this much (plus the write in progress) however many
#: streams send at once.
QUEUE_LIMIT = 1 << 20


class StreamState:
    """What one stream's two users (its :class:`LinkStream` and the link's reader)
    both see: received messages and children, how each half ended, who waits."""

    __slots__ = (
        "children",
        "closed_locally",
        "error",
        "inbox",
        "lot",
        "refuse_children",
        "remote_status",
        "reset_status",
        "scopes",
        "stream_id",
        "unacked",
        "unacked_messages",
        "window_lot",
    )

    def __init__(self, stream_id: int) -> None:
        self.stream_id = stream_id
        #: Received messages not yet consumed, each with the credit it carries.
        self.inbox: deque[tuple[bytes, int]] | None = None
        #: Child streams the peer opened under this one, not yet taken.
        self.children: deque[LinkStream] | None = None
        #: Readers wait here for a message, a child or the end.
        self.lot: trio.lowlevel.ParkingLot | None = None
        #: A sender waits here for this stream's window to grow.
        self.window_lot: trio.lowlevel.ParkingLot | None = None
        #: How the peer ended its half (None while it may still send).
        self.remote_status: Status | None = None
        #: The status of the peer's RESET, once one arrived.
        self.reset_status: Status | None = None
        #: Set when the stream can no longer be used (reset, link lost).
        self.error: ChanservError | None = None
        #: We closed it (``reset`` or ``aclose``): nothing more is read or sent.
        self.closed_locally = False
        #: Credit of consumed messages not yet returned to the peer ...
        self.unacked = 0
        #: ... and how many messages it was.
        self.unacked_messages = 0
        #: Child streams the peer opens under this one are reset at once.
        self.refuse_children = False
        #: The cancel scope that a RESET from the peer, or the link dying, cancels; a
        #: list when there are several (usually there is one, a source's or a
        #: handler's: no list per stream then).
        self.scopes: trio.CancelScope | list[trio.CancelScope] | None = None

    def parking(self) -> trio.lowlevel.ParkingLot:
        """Where a reader waits (made on first use)."""
        lot = self.lot
        if lot is None:
            lot = self.lot = trio.lowlevel.ParkingLot()
        return lot

    def window_parking(self) -> trio.lowlevel.ParkingLot:
        """Where a sender waits for this stream's window (made on first use)."""
        lot = self.window_lot
        if lot is None:
            lot = self.window_lot = trio.lowlevel.ParkingLot()
        return lot

    def wake_all(self) -> None:
        """Wake every task waiting on the stream, to look again at what changed."""
        if self.lot:
            self.lot.unpark_all()
        if self.window_lot:
            self.window_lot.unpark_all()

    def add_child(self, child: LinkStream) -> None:
        """A child stream the peer opened under this one arrived."""
        if self.children is None:
            self.children = deque()
        self.children.append(child)
        if self.lot:
            self.lot.unpark_all()

    def remote_ended(self, status: Status) -> None:
        """The peer ended its half."""
        self.remote_status = status
        if self.lot:
            self.lot.unpark_all()

    def peer_reset(self, status: Status, error: ChanservError) -> None:
        """The peer reset the stream: it broke with ``error`` (an END before stays)."""
        self.reset_status = status
        if self.remote_status is None:
            self.remote_status = status
        self.broken(error)

    def broken(self, error: ChanservError) -> None:
        """The stream can no longer be used (the first error stays)."""
        if self.error is None:
            self.error = error
        self.wake_all()
        scopes = self.scopes
        if scopes is None:
            return
        if isinstance(scopes, list):
            for scope in scopes:
                scope.cancel()
        else:
            scopes.cancel()

    def add_scope(self, scope: trio.CancelScope) -> None:
        """Have ``scope`` cancelled when the stream breaks."""
        scopes = self.scopes
        if scopes is None:
            self.scopes = scope
        elif isinstance(scopes, list):
            scopes.append(scope)
        else:
            self.scopes = [scopes, scope]

    def remove_scope(self, scope: trio.CancelScope) -> None:
        """Undo :meth:`add_scope`."""
        scopes = self.scopes
        if scopes is scope:
            self.scopes = None
        elif isinstance(scopes, list):
            scopes.remove(scope)


class LinkState:
    """What a link and all its streams share: the connection, the open streams, the
    writer's wake-up, the waits for credit and the counters."""

    __slots__ = (
        "ack_batch",
        "budget",
        "conn",
        "drained_lot",
        "open_lot",
        "released_lot",
        "streams",
        "unacked_total",
        "window_lot",
        "window_stalls",
        "writer_done",
        "writer_lot",
        "writer_parked",
    )

    def __init__(self, conn: Connection) -> None:
        #: The sans-IO state machine of the link.
        self.conn = conn
        #: The streams not yet released, by id.
        self.streams: dict[int, StreamState] = {}
        #: Credit goes back to the peer in batches of about this many bytes.
        self.ack_batch = max(1, conn.local_settings.initial_stream_window >> 3)
        #: Calls that may finish without waiting before it is this link's turn to yield.
        self.budget = SCHEDULE_EVERY
        #: Credit consumed on all streams and not yet returned (counted as not buffered).
        self.unacked_total = 0
        #: Times a sender had to wait for flow-control credit or for the writer.
        self.window_stalls = 0
        #: The writer waits here for frames; ``writer_parked`` says it does.
        self.writer_lot = trio.lowlevel.ParkingLot()
        self.writer_parked = False
        #: Woken each time the writer handed everything queued to the transport.
        self.drained_lot = trio.lowlevel.ParkingLot()
        #: The writer has stopped for good.
        self.writer_done = False
        #: Senders wait here for the connection window to grow.
        self.window_lot = trio.lowlevel.ParkingLot()
        #: Openers wait here while the peer's concurrency limit is reached.
        self.open_lot = trio.lowlevel.ParkingLot()
        #: Woken each time a stream is released (a graceful shutdown waits here).
        self.released_lot = trio.lowlevel.ParkingLot()

    def kick_writer(self) -> None:
        """Frames were queued: wake the writer if it waits."""
        if self.writer_parked:
            self.writer_parked = False
            self.writer_lot.unpark()

    def spend(self) -> bool:
        """Count one call that could finish without waiting; True when it is this
        link's turn to yield to the scheduler anyway (once every few such calls)."""
        self.budget -= 1
        if self.budget > 0:
            return False
        self.budget = SCHEDULE_EVERY
        return True

    def acknowledge(self, stream_id: int, credit: int, messages: int) -> None:
        """Return consumed credit (of ``messages`` messages) to the peer."""
        conn = self.conn
        before = conn.outgoing_size
        conn.acknowledge(stream_id, credit, messages)
        if conn.outgoing_size != before:
            self.kick_writer()

    async def wait_queue_below_limit(self) -> None:
        """Wait while the transport is behind (``QUEUE_LIMIT`` bytes queued)."""
        self.window_stalls += 1
        while self.conn.outgoing_size >= QUEUE_LIMIT and not self.writer_done:
            self.kick_writer()
            await self.drained_lot.park()

    def reset(self, stream: StreamState, status: Status | None) -> None:
        """Abort ``stream`` in both directions from our side (no-op on the wire if it
        is already gone, or with no ``status``: the caller saw it gone) and forget it."""
        stream.closed_locally = True
        # Nothing more is read from it: what it buffered goes now.
        stream.inbox = None
        if status is not None and self.conn.reset_stream(stream.stream_id, status):
            self.kick_writer()
        self.release(stream)
        stream.wake_all()

    def release_if_closed(self, stream: StreamState) -> None:
        """Forget ``stream`` once it is closed both ways."""
        if not self.conn.is_open(stream.stream_id):
            self.release(stream)

    def release(self, stream: StreamState) -> None:
        """Forget a finished stream; its buffered messages stay readable."""
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
            self.unacked_total -= stream.unacked
            stream.unacked = 0
            if stream.lot:
                stream.lot.unpark_all()
            if self.open_lot:  # (an empty lot's unpark still costs a generator)
                self.open_lot.unpark()
            if self.released_lot:
                self.released_lot.unpark_all()
