"""The trio driver: runs the sans-IO :class:`Connection` over any ``trio.abc.Stream``.

One :class:`Link` per connection. Its reader task feeds received bytes to the state
machine and dispatches the events without ever waiting on application code: messages
go into per-stream buffers bounded by the flow-control window, a new stream starts its
handler with ``start_soon``. Its writer task sends whatever frames accumulated since
it last ran in one ``send_all``, so small frames from many streams coalesce.

A :class:`LinkStream` is one multiplexed stream of messages in both directions:
``send`` / ``receive`` whole messages, ``end`` our half with a status, ``reset`` both
halves. Handlers of streams the peer opened run in the link's nursery, each inside its
own cancel scope, which a RESET from the peer (or the link dying) cancels.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Awaitable, Callable
from types import TracebackType

import attrs
import trio

from ._errors import (
    ChanservError,
    ConnectionLost,
    MessageTooLarge,
    ProtocolError,
    RemoteProtocolError,
    ServerShuttingDown,
)
from ._link_status import error_from_status
from ._wire_codec import ErrorCode, Status
from ._wire_connection import Connection, Settings
from ._wire_events import (
    ConnectionTerminated,
    GoAwayReceived,
    HandshakeCompleted,
    MessageReceived,
    PingAcknowledged,
    ServiceAdvertised,
    StreamEnded,
    StreamOpened,
    StreamReset,
    WindowOpened,
)

__all__ = ["Link", "LinkStatistics", "LinkStream", "StreamHandler"]

_OK = Status(ErrorCode.OK)
_RECEIVE_SIZE = 256 * 1024
#: A task that sends or receives without having to wait still yields to the scheduler
#: once every this many calls on a link (it checks for cancellation on every call).
_SCHEDULE_EVERY = 32
#: Queued payloads at least this large are written without being copied into a batch.
_DIRECT_WRITE = 64 * 1024
#: Senders wait while this many bytes are queued for the transport and not yet taken by
#: the writer, so a link holds about this much (plus the write in progress) however many
#: streams send at once.
_QUEUE_LIMIT = 1 << 20
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint

#: What a service handler looks like: called with each stream the peer opens for it.
StreamHandler = Callable[["LinkStream"], Awaitable[None]]


@attrs.frozen
class LinkStatistics:
    """A snapshot of one link's counters."""

    #: Streams open (not yet closed both ways) on the link.
    open_streams: int
    #: Bytes received from / sent to the transport.
    bytes_in: int
    bytes_out: int
    #: Whole messages received / sent.
    messages_in: int
    messages_out: int
    #: Bytes of received messages not yet consumed by the application.
    bytes_buffered: int
    #: Bytes queued for the transport, not yet written.
    bytes_queued: int
    #: Times a sender had to wait for flow-control credit.
    window_stalls: int
    #: Last measured round-trip time in seconds, or None before the first ping answer.
    rtt: float | None


class LinkStream:
    """One multiplexed stream of whole messages on a :class:`Link`."""

    __slots__ = (
        "__weakref__",
        "_ack_batch",
        "_children",
        "_closed_locally",
        "_error",
        "_inbox",
        "_link",
        "_lot",
        "_remote_status",
        "_scopes",
        "_sending",
        "_unacked",
        "_window_lot",
        "header",
        "parent",
        "peer_sends",
        "reset_status",
        "route_key",
        "service",
        "stream_id",
        "was_reset",
        "we_send",
    )

    def __init__(self, link: Link, stream_id: int, service: str, header: bytes, parent: int):
        self._link = link
        #: The stream's id on this link.
        self.stream_id = stream_id
        #: The service it was opened for ("" for a child stream).
        self.service = service
        #: The opaque header bytes it was opened with.
        self.header = header
        #: The id of the stream it is a child of, 0 for none.
        self.parent = parent
        #: The route key it was opened with (empty: none); routers pick a hop by it.
        self.route_key = b""
        #: Whether the peer may send data on it (set from the OPEN flags).
        self.peer_sends = True
        #: Whether we may send data on it.
        self.we_send = True
        #: True once the peer reset the stream (even after ending its half).
        self.was_reset = False
        #: The status of the peer's RESET, once one arrived.
        self.reset_status: Status | None = None
        # Queues and parking lots are made on first use: most streams only ever send
        # or only ever receive, and an idle open stream should cost little memory.
        self._inbox: deque[tuple[bytes, int]] | None = None
        self._children: deque[LinkStream] | None = None
        self._lot: trio.lowlevel.ParkingLot | None = None
        self._window_lot: trio.lowlevel.ParkingLot | None = None
        #: How the peer ended its half (None while it may still send).
        self._remote_status: Status | None = None
        #: Set when the stream can no longer be used (reset, link lost).
        self._error: ChanservError | None = None
        self._closed_locally = False
        self._sending = False
        self._unacked = 0
        self._ack_batch = link._ack_batch
        self._scopes: list[trio.CancelScope] | None = None

    def __repr__(self) -> str:
        return f"<LinkStream {self.stream_id} service={self.service!r}>"

    @property
    def link(self) -> Link:
        """The link the stream lives on."""
        return self._link

    @property
    def remote_addr(self) -> str:
        """The peer's address, as a URL."""
        return self._link.remote_addr

    # ----------------------------------------------------------------- sending

    async def send(self, message: bytes | bytearray | memoryview) -> None:
        """Send one whole message, waiting for flow-control credit as needed.

        Returns once the message is queued for the link (it may still be in transit).
        If cancelled with part of a large message sent, the stream is reset, because
        the rest of the message could never follow.
        """
        link = self._link
        conn = link.conn
        data = message if type(message) is bytes else bytes(message)
        size = len(data)
        limit = conn.peer_settings.max_message_size
        if size > limit:
            raise MessageTooLarge(f"message of {size} bytes exceeds the peer's limit of {limit}")
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        await _checkpoint_if_cancelled()
        if self._error is not None or self._closed_locally:
            self._check_sendable()
        if conn.outgoing_size >= _QUEUE_LIMIT:
            # The transport is behind: wait for the writer rather than queue without end
            # (the connection window would bound it, but far above what is useful).
            await link._wait_queue_below_limit()
            self._check_sendable()
        max_chunk = conn.peer_settings.max_frame_payload
        if conn.try_send_message(self.stream_id, data):
            link._kick_writer()
            if link._spend():
                await _cancel_shielded_checkpoint()
            return
        self._check_sendable()
        self._sending = True
        view = memoryview(data)
        offset = 0
        try:
            while True:
                window = conn.send_window(self.stream_id)
                n = min(window, size - offset, max_chunk)
                if n or offset == size:
                    more = offset + n < size
                    conn.send_data(self.stream_id, view[offset : offset + n], more=more)
                    link._kick_writer()
                    offset += n
                    if not more:
                        break
                    continue
                link._window_stalls += 1
                if conn.connection_send_window() == 0:
                    await link._window_lot.park()
                else:
                    if self._window_lot is None:
                        self._window_lot = trio.lowlevel.ParkingLot()
                    await self._window_lot.park()
                self._check_sendable()
        except BaseException:
            if 0 < offset < size:
                self.reset(ErrorCode.CANCEL, "sender stopped in the middle of a message")
            raise
        finally:
            self._sending = False
        await _cancel_shielded_checkpoint()

    def _check_sendable(self) -> None:
        if self._error is not None:
            raise self._error
        if self._closed_locally or not self._link.conn.can_send(self.stream_id):
            raise trio.ClosedResourceError("this stream's sending half is closed")

    def end(self, status: Status = _OK) -> None:
        """Close our sending half, telling the peer how it ended (OK or an error)."""
        if self._error is not None or self._closed_locally:
            return
        if self._link.conn.can_send(self.stream_id):
            self._link.conn.end_stream(self.stream_id, status)
            self._link._kick_writer()
        self._link._maybe_release(self)

    def reset(self, code: int = ErrorCode.CANCEL, message: str = "", kind: str = "") -> None:
        """Abort the stream in both directions; a no-op if it is already gone."""
        self._closed_locally = True
        link = self._link
        if link.conn.reset_stream(self.stream_id, Status(code, kind, message)):
            link._kick_writer()
        link._release(self)
        self._wake_all()

    async def aclose(self) -> None:
        """Reset the stream if it is still open (cancelling the peer's work on it)."""
        self.reset(ErrorCode.CANCEL, "closed by the receiver")
        await trio.lowlevel.checkpoint()

    # --------------------------------------------------------------- receiving

    def _consumed(self, credit: int) -> None:
        # Credit goes back in batches: one call into the state machine per batch.
        # Once the inbox is empty everything goes back at once: the state machine only
        # credits the chunks of a large message while nothing unconsumed is held.
        # (An empty message carries no credit but may still be the one that empties it.)
        link = self._link
        unacked = self._unacked + credit
        if unacked and (unacked >= self._ack_batch or not self._inbox):
            link._unacked_total -= self._unacked
            self._unacked = 0
            link._acknowledge(self.stream_id, unacked)
        else:
            link._unacked_total += credit
            self._unacked = unacked

    def receive_nowait(self) -> bytes:
        """The next buffered message; raises ``trio.WouldBlock`` if none is buffered,
        ``trio.EndOfChannel`` at a normal end, or the error the stream ended with."""
        if self._closed_locally:
            raise trio.ClosedResourceError("stream was closed")
        if self._inbox:
            data, credit = self._inbox.popleft()
            self._consumed(credit)
            return data
        self._raise_if_ended()
        raise trio.WouldBlock

    def _raise_if_ended(self) -> None:
        """Raise what a reader gets once nothing is left: ``trio.EndOfChannel`` after a
        normal end, the matching error after any other, the link's error if it broke."""
        status = self._remote_status
        if status is not None:
            if status.code == ErrorCode.OK:
                raise trio.EndOfChannel
            raise error_from_status(status)
        if self._error is not None:
            raise self._error

    async def receive(self) -> bytes:
        """Wait for the next message.

        Always a cancellation point. When messages are already buffered it returns
        without a trip through the scheduler, except once every few calls per link,
        so a fast consumer stays fair to other tasks without paying a full
        scheduling round for every message.
        """
        await _checkpoint_if_cancelled()
        inbox = self._inbox
        if inbox and not self._closed_locally:
            data, credit = inbox.popleft()
            self._consumed(credit)
            link = self._link
            if link._spend():
                await _cancel_shielded_checkpoint()
            return data
        parked = False
        while True:
            try:
                data = self.receive_nowait()
            except trio.WouldBlock:
                await self._parking().park()
                parked = True
                continue
            except BaseException:
                if not parked:
                    await _cancel_shielded_checkpoint()
                raise
            if not parked and self._link._spend():
                await _cancel_shielded_checkpoint()
            return data

    def receive_buffered(self, max_messages: int = 2**31) -> list[bytes]:
        """Every message already buffered (up to ``max_messages``), without waiting."""
        out: list[bytes] = []
        inbox = self._inbox
        credit = 0
        while inbox and len(out) < max_messages:
            data, c = inbox.popleft()
            credit += c
            out.append(data)
        self._consumed(credit)
        return out

    async def receive_child(self) -> LinkStream:
        """The next child stream the peer opened under this one.

        Raises ``trio.EndOfChannel`` once the peer ended this stream normally (all its
        children arrived before its END), or the error it ended with.
        """
        await _checkpoint_if_cancelled()
        parked = False
        while True:
            children = self._children
            if children:
                if not parked and self._link._spend():
                    await _cancel_shielded_checkpoint()
                return children.popleft()
            if self._closed_locally:
                raise trio.ClosedResourceError("stream was closed")
            self._raise_if_ended()
            if not self._link.conn.is_open(self.stream_id):
                raise trio.EndOfChannel  # closed both ways: no child can come any more
            await self._parking().park()
            parked = True

    async def wait_remote_end(self) -> None:
        """Wait until the peer ended or reset its half, or the stream broke."""
        while (
            self._remote_status is None
            and self._error is None
            and self._link.conn.is_open(self.stream_id)
        ):
            await self._parking().park()

    async def open_child(
        self, header: bytes, *, no_send: bool = False, no_reply: bool = True
    ) -> LinkStream:
        """Open a stream under this one (the peer receives it from ``receive_child``)."""
        if self._error is not None:
            raise self._error
        return await self._link.open_stream(
            "", header, parent=self.stream_id, no_send=no_send, no_reply=no_reply
        )

    @property
    def remote_status(self) -> Status | None:
        """How the peer ended its half, or None while it is still open."""
        return self._remote_status

    @property
    def is_finished(self) -> bool:
        """True once the stream is closed both ways or broken."""
        return self._error is not None or not self._link.conn.is_open(self.stream_id)

    def set_receive_window(self, window: int) -> None:
        """Let the peer send at most ``window`` bytes ahead of what we consumed on this
        stream (instead of the link's ``initial_stream_window``). Growing takes effect
        at once; shrinking as messages are consumed."""
        conn = self._link.conn
        before = conn.outgoing_size
        conn.set_receive_window(self.stream_id, window)
        # Batches of returned credit must stay well inside the window.
        self._ack_batch = max(1, min(self._link._ack_batch, window >> 3))
        if conn.outgoing_size != before:
            self._link._kick_writer()

    def cancel_on_reset(self) -> _CancelOnReset:
        """A cancel scope (use it in ``with``) that the peer's RESET, or the link dying,
        cancels."""
        return _CancelOnReset(self)

    def _parking(self) -> trio.lowlevel.ParkingLot:
        lot = self._lot
        if lot is None:
            lot = self._lot = trio.lowlevel.ParkingLot()
        return lot

    # ------------------------------------------------------ called by the link

    def _wake_all(self) -> None:
        if self._lot:
            self._lot.unpark_all()
        if self._window_lot:
            self._window_lot.unpark_all()

    def _broken(self, error: ChanservError) -> None:
        if self._error is None:
            self._error = error
        self._wake_all()
        for scope in self._scopes or ():
            scope.cancel()


class _CancelOnReset:
    """The context manager behind :meth:`LinkStream.cancel_on_reset` (a class, not a
    generator, because one exists for every open source)."""

    __slots__ = ("_scope", "_stream")

    def __init__(self, stream: LinkStream) -> None:
        self._stream = stream
        self._scope = trio.CancelScope()

    def __enter__(self) -> trio.CancelScope:
        stream = self._stream
        scope = self._scope.__enter__()
        if stream._error is not None:
            scope.cancel()
        if stream._scopes is None:
            stream._scopes = []
        stream._scopes.append(scope)
        return scope

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        scopes = self._stream._scopes
        if scopes is not None:
            scopes.remove(self._scope)
        return self._scope.__exit__(exc_type, exc, tb)


class Link:
    """One connection between two nodes, running the protocol over a trio stream.

    Create it, then ``await nursery.start(link.run)``: ``run`` reports ready once the
    handshake is complete and returns when the link is closed or lost.
    """

    def __init__(
        self,
        transport: trio.abc.Stream,
        *,
        initiator: bool | None = None,
        settings: Settings | None = None,
        remote_addr: str = "",
        local_addr: str = "",
        handler_for: Callable[[str], StreamHandler | None] | None = None,
        on_services: Callable[[Link], None] | None = None,
        handshake_timeout: float = 10.0,
        keepalive_interval: float | None = None,
        keepalive_timeout: float = 20.0,
        write_timeout: float | None = None,
        reset_burst: int = 1000,
        reset_rate: float = 100.0,
        on_error: Callable[[BaseException], object] | None = None,
    ) -> None:
        self.transport = transport
        self.conn = Connection(initiator=initiator, settings=settings)
        self.remote_addr = remote_addr
        self.local_addr = local_addr
        self.handshake_timeout = handshake_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self.write_timeout = write_timeout
        self.reset_burst = reset_burst
        self.reset_rate = reset_rate
        self._reset_tokens = float(reset_burst)
        self._reset_time = 0.0
        # Control frames (WINDOW, PING answers, RESET) may pile up when the peer does not
        # read; past this many queued bytes the reader waits for the writer.
        self._outgoing_limit = self.conn.local_settings.connection_window + (4 << 20)
        self._budget = _SCHEDULE_EVERY
        self._unacked_total = 0
        self._ack_batch = max(1, self.conn.local_settings.initial_stream_window >> 3)
        self._handler_for = handler_for or (lambda name: None)
        self._on_services = on_services
        self._on_error = on_error
        #: Services the peer currently offers.
        self.peer_services: set[str] = set()
        #: Those of ``peer_services`` the peer offers by relaying (it is a router).
        self.peer_relayed: set[str] = set()
        #: Services we told the peer we offer.
        self.advertised: dict[str, bool] = {}
        #: The URL this link was dialed to, when it was (a stable name for the peer).
        self.joined_url: str | None = None
        self._streams: dict[int, LinkStream] = {}
        self._writer_lot = trio.lowlevel.ParkingLot()
        self._writer_parked = False
        self._drained_lot = trio.lowlevel.ParkingLot()
        self._writer_done = False
        self._writing = False
        self._window_lot = trio.lowlevel.ParkingLot()
        self._open_lot = trio.lowlevel.ParkingLot()
        self._released_lot = trio.lowlevel.ParkingLot()
        self._handshake = trio.Event()
        self._closed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._error: ChanservError | None = None
        self._closing = False
        self._window_stalls = 0
        self._pings: dict[bytes, float] = {}
        self.rtt: float | None = None
        self._last_heard = 0.0

    def __repr__(self) -> str:
        return f"<Link {self.local_addr} <-> {self.remote_addr}>"

    # ---------------------------------------------------------------- lifetime

    async def run(self, *, task_status: trio.TaskStatus[Link] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the link until it closes; reports itself through ``task_status`` once the
        handshake completed. Raises :class:`ConnectionLost` if the handshake fails."""
        started = False
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._writer)
                nursery.start_soon(self._reader)
                with trio.move_on_after(self.handshake_timeout) as scope:
                    await self._handshake.wait()
                if scope.cancelled_caught:
                    self._fail(ConnectionLost("handshake timed out"))
                if self._error is None:
                    started = True
                    task_status.started(self)
                    if self.keepalive_interval:
                        nursery.start_soon(self._keepalive)
                    await self._closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._fail(ConnectionLost("link closed"))
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await trio.aclose_forcefully(self.transport)
        if not started:
            error = self._error
            assert error is not None
            if type(error) is ConnectionLost and not self.conn.handshake_done:
                # The other end hung up without a word of our protocol.
                raise ConnectionLost(
                    f"{self.remote_addr or 'peer'} closed the connection before the "
                    f"chanserv_trio handshake ({error}); is it a chanserv_trio node, "
                    f"reached with the right transport (tcp, tls, ws, wss, unix)?"
                ) from error
            raise error

    @property
    def is_alive(self) -> bool:
        """False once the link closed or was lost."""
        return self._error is None

    @property
    def error(self) -> ChanservError | None:
        """Why the link ended, once it has."""
        return self._error

    def statistics(self) -> LinkStatistics:
        """A snapshot of the link's counters."""
        conn = self.conn
        return LinkStatistics(
            open_streams=conn.open_stream_count,
            bytes_in=conn.bytes_received,
            bytes_out=conn.bytes_sent,
            messages_in=conn.messages_received,
            messages_out=conn.messages_sent,
            # Consumed messages whose credit waits for its batch are not buffered.
            bytes_buffered=max(0, conn.buffered_bytes() - self._unacked_total),
            bytes_queued=conn.outgoing_size,
            window_stalls=self._window_stalls,
            rtt=self.rtt,
        )

    @property
    def going_away(self) -> bool:
        """True once either side said GOAWAY: no new streams start on this link."""
        return self.conn.peer_goaway is not None or self.conn.local_goaway

    async def shutdown(self, grace: float, message: str = "server is shutting down") -> None:
        """Refuse new streams, let the open ones finish for up to ``grace`` seconds, then
        reset what is left with ``SHUTDOWN`` (the peer sees
        :class:`~chanserv_trio.ServerShuttingDown`) and close the link."""
        if self._error is not None:
            return
        if not self.conn.local_goaway:
            self.conn.go_away(ErrorCode.OK, message)
            self._kick_writer()
        self._closing = True
        with trio.move_on_after(grace):
            while self._streams and self._error is None:
                await self._released_lot.park()
        if self._error is None:
            error = ServerShuttingDown(message, ErrorCode.SHUTDOWN)
            for stream in list(self._streams.values()):
                stream.reset(ErrorCode.SHUTDOWN, message)
                stream._broken(error)
        await self.aclose(ErrorCode.OK, message)

    async def aclose(self, code: int = ErrorCode.OK, message: str = "link closed") -> None:
        """Say goodbye to the peer, flush what is queued and close the link."""
        if self._error is None:
            if not self.conn.local_goaway or code != ErrorCode.OK:
                self.conn.go_away(code, message)
            self._closing = True
            self._kick_writer()
            await self._drain(1.0)
            self._fail(ConnectionLost(message))
        await self._closed.wait()

    @property
    def node_key(self) -> str:
        """A name for the peer that is the same from every client: the URL it was joined
        at, else its address."""
        return self.joined_url or self.remote_addr

    async def wait_closed(self) -> None:
        """Wait until the link is closed or lost."""
        await self._closed.wait()

    def set_advertised(self, names: dict[str, bool]) -> None:
        """Tell the peer the services we offer now (name -> offered by relaying):
        additions, changes and removals only."""
        if self._error is not None:
            return
        for name in sorted(names):
            relayed = names[name]
            if self.advertised.get(name) != relayed:
                self.advertise(name, True, relayed=relayed)
        for name in sorted(self.advertised.keys() - names.keys()):
            self.advertise(name, False)
        self.advertised = dict(names)

    def advertise(self, name: str, available: bool, *, relayed: bool = False) -> None:
        """Tell the peer a service is offered here, or withdrawn."""
        if self._error is None:
            self.conn.advertise(name, available, relayed=relayed)
            self._kick_writer()

    def ping(self) -> None:
        """Send a PING; ``rtt`` is updated when its answer arrives."""
        if self._error is None:
            payload = os.urandom(8)
            self._pings[payload] = trio.current_time()
            self.conn.ping(payload)
            self._kick_writer()

    def _fail(self, error: ChanservError) -> None:
        if self._error is not None:
            return
        self._error = error
        self._handshake.set()  # wake run() if it still waits for the handshake
        for stream in list(self._streams.values()):
            stream._broken(error)
        self._streams.clear()
        self._window_lot.unpark_all()
        self._open_lot.unpark_all()
        self._writer_parked = False
        self._writer_lot.unpark_all()
        self._closed.set()
        if self._on_services is not None and self.peer_services:
            self.peer_services = set()
            self.peer_relayed = set()
            self._on_services(self)

    # ----------------------------------------------------------------- streams

    async def open_stream(
        self,
        service: str,
        header: bytes,
        *,
        parent: int = 0,
        no_send: bool = False,
        no_reply: bool = False,
        route_key: bytes = b"",
    ) -> LinkStream:
        """Open a stream to the peer, waiting while its concurrency limit is reached;
        ``route_key`` travels in the OPEN (a router picks the next hop by it)."""
        conn = self.conn
        limit = conn.peer_settings.max_open_payload
        if len(header) > limit:
            raise MessageTooLarge(
                f"header of {len(header)} bytes exceeds the peer's limit of {limit}"
            )
        await _checkpoint_if_cancelled()
        parked = False
        while not conn.can_open_stream():
            if self._error is not None:
                raise self._error
            if conn.peer_goaway is not None:
                raise ConnectionLost("peer is going away and accepts no new streams")
            parked = True
            await self._open_lot.park()
        if self._error is not None:
            raise self._error
        if parent and parent not in self._streams:
            raise trio.ClosedResourceError("parent stream is closed")
        stream_id = conn.open_stream(
            service, header, parent=parent, no_send=no_send, no_reply=no_reply, route_key=route_key
        )
        stream = LinkStream(self, stream_id, service, header, parent)
        stream.route_key = route_key
        stream.we_send = not no_send
        stream.peer_sends = not no_reply
        self._streams[stream_id] = stream
        self._kick_writer()
        if no_send and no_reply:
            self._release(stream)
        if not parked and self._spend():
            await _cancel_shielded_checkpoint()
        return stream

    def _acknowledge(self, stream_id: int, credit: int) -> None:
        conn = self.conn
        before = conn.outgoing_size
        conn.acknowledge(stream_id, credit)
        if conn.outgoing_size != before:
            self._kick_writer()

    def _maybe_release(self, stream: LinkStream) -> None:
        if not self.conn.is_open(stream.stream_id):
            self._release(stream)

    def _release(self, stream: LinkStream) -> None:
        """Forget a finished stream; its buffered messages stay readable."""
        if self._streams.get(stream.stream_id) is stream:
            del self._streams[stream.stream_id]
            self._unacked_total -= stream._unacked
            stream._unacked = 0
            if stream._lot:
                stream._lot.unpark_all()
            self._open_lot.unpark()
            if self._released_lot:
                self._released_lot.unpark_all()

    # ------------------------------------------------------------------ writer

    async def _wait_queue_below_limit(self) -> None:
        self._window_stalls += 1
        while self.conn.outgoing_size >= _QUEUE_LIMIT and not self._writer_done:
            self._kick_writer()
            await self._drained_lot.park()

    def _spend(self) -> bool:
        """Count one call that could finish without waiting; True when it is this
        link's turn to yield to the scheduler anyway (once every few such calls)."""
        self._budget -= 1
        if self._budget > 0:
            return False
        self._budget = _SCHEDULE_EVERY
        return True

    def _kick_writer(self) -> None:
        if self._writer_parked:
            self._writer_parked = False
            self._writer_lot.unpark()

    async def _writer(self) -> None:
        conn = self.conn
        transport = self.transport
        try:
            while True:
                if not conn.outgoing_size:
                    if self._error is not None:
                        return
                    self._writer_parked = True
                    await self._writer_lot.park()
                    continue
                self._writing = True
                for data in _batches(conn.take_outgoing()):
                    if self.write_timeout is None:
                        await transport.send_all(data)
                        continue
                    with trio.move_on_after(self.write_timeout) as stuck:
                        await transport.send_all(data)
                    if stuck.cancelled_caught:
                        self._fail(
                            ConnectionLost(
                                f"peer took no data for write_timeout ({self.write_timeout} s)"
                            )
                        )
                        return
                self._writing = False
                if self._drained_lot:
                    self._drained_lot.unpark_all()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._fail(_lost("sending failed", exc))
        finally:
            self._writer_done = True
            self._drained_lot.unpark_all()

    # ------------------------------------------------------------------ reader

    async def _reader(self) -> None:
        conn = self.conn
        transport = self.transport
        # A transport of whole messages (WebSocket) is read a message at a time.
        receive_size = None if getattr(transport, "whole_messages", False) else _RECEIVE_SIZE
        try:
            while self._error is None:
                data = await transport.receive_some(receive_size)
                self._last_heard = trio.current_time()
                try:
                    events = conn.receive_data(data)
                    for event in events:
                        self._dispatch(event)
                except RemoteProtocolError as exc:
                    if not conn.closed:
                        conn.go_away(exc.code, exc.message)
                    error = RemoteProtocolError(
                        f"peer broke the protocol: {exc.message}", exc.code
                    )
                    self._report(error)
                    # The connection is closed: its streams fail now, not once the
                    # GOAWAY is flushed (nothing can be sent on them any more).
                    for stream in list(self._streams.values()):
                        stream._broken(error)
                    await self._flush_and_fail(error)
                    return
                if conn.outgoing_size:
                    self._kick_writer()
                    if conn.outgoing_size > self._outgoing_limit:
                        # The peer is not reading what we owe it: wait for the writer.
                        while conn.outgoing_size > self._outgoing_limit and not self._writer_done:
                            await self._drained_lot.park()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._fail(_lost("receiving failed", exc))

    async def _flush_and_fail(self, error: ChanservError) -> None:
        await self._drain(1.0)
        self._fail(error)

    async def _drain(self, limit: float) -> None:
        """Wait (at most ``limit`` seconds) until the writer sent everything queued."""
        self._kick_writer()
        with trio.move_on_after(limit):
            while (self.conn.outgoing_size or self._writing) and not self._writer_done:
                await self._drained_lot.park()

    def _report(self, error: BaseException) -> None:
        if self._on_error is not None:
            self._on_error(error)

    def _dispatch(self, event: object) -> None:
        # Ordered by frequency: messages first.
        if type(event) is MessageReceived:
            stream = self._streams.get(event.stream_id)
            if stream is None or stream._closed_locally:
                self.conn.acknowledge(event.stream_id, event.credit)
                return
            inbox = stream._inbox
            if inbox is None:
                inbox = stream._inbox = deque()
            inbox.append((event.data, event.credit))
            lot = stream._lot
            if lot:
                lot.unpark()
        elif type(event) is WindowOpened:
            if event.stream_id == 0:
                self._window_lot.unpark_all()
                for stream in self._streams.values():
                    if stream._window_lot:
                        stream._window_lot.unpark_all()
            else:
                stream = self._streams.get(event.stream_id)
                if stream is not None and stream._window_lot:
                    stream._window_lot.unpark_all()
        elif type(event) is StreamOpened:
            self._on_stream_opened(event)
        elif type(event) is StreamEnded:
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream._remote_status = event.status
                if stream._lot:
                    stream._lot.unpark_all()
                self._maybe_release(stream)
        elif type(event) is StreamReset:
            if (event.stream_id % 2 == 0) == self.conn.initiator:
                self._count_peer_reset()
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                self._release(stream)
                stream.was_reset = True
                stream.reset_status = event.status
                if stream._remote_status is None:
                    stream._remote_status = event.status
                stream._broken(error_from_status(event.status))
        elif type(event) is ServiceAdvertised:
            if event.available:
                self.peer_services.add(event.name)
                if event.relayed:
                    self.peer_relayed.add(event.name)
                else:
                    self.peer_relayed.discard(event.name)
            else:
                self.peer_services.discard(event.name)
                self.peer_relayed.discard(event.name)
            if self._on_services is not None:
                self._on_services(self)
        elif type(event) is PingAcknowledged:
            sent = self._pings.pop(event.payload, None)
            if sent is not None:
                self.rtt = trio.current_time() - sent
        elif type(event) is HandshakeCompleted:
            self._handshake.set()
        elif type(event) is GoAwayReceived:
            self._open_lot.unpark_all()
            if self._on_services is not None:
                self._on_services(self)
        elif type(event) is ConnectionTerminated:
            if event.code in (ErrorCode.OK, ErrorCode.CONNECTION_LOST):
                self._fail(ConnectionLost(f"connection closed by peer: {event.message}"))
            else:
                error = ProtocolError(f"peer closed the connection: {event.message}", event.code)
                self._fail(error)

    def _count_peer_reset(self) -> None:
        """A token bucket against a peer that opens and resets streams to burn our CPU."""
        now = trio.current_time()
        elapsed = now - self._reset_time
        self._reset_time = now
        self._reset_tokens = min(
            float(self.reset_burst), self._reset_tokens + elapsed * self.reset_rate
        )
        self._reset_tokens -= 1
        if self._reset_tokens < 0:
            raise RemoteProtocolError(
                f"peer reset more than {self.reset_burst} of its streams "
                f"(sustained limit {self.reset_rate:g}/s)",
                ErrorCode.ENHANCE_YOUR_CALM,
            )

    def _on_stream_opened(self, event: StreamOpened) -> None:
        stream = LinkStream(self, event.stream_id, event.service, event.header, event.parent)
        stream.route_key = event.route_key
        stream.peer_sends = event.peer_sends
        stream.we_send = event.we_send
        self._streams[event.stream_id] = stream
        if event.parent:
            parent = self._streams.get(event.parent)
            if parent is None or parent._closed_locally:
                stream.reset(ErrorCode.CANCEL, "parent stream closed")
                return
            if parent._children is None:
                parent._children = deque()
            parent._children.append(stream)
            if parent._lot:
                parent._lot.unpark_all()
            return
        handler = self._handler_for(event.service)
        if handler is None or self._nursery is None or self._closing:
            stream.reset(ErrorCode.SERVICE_NOT_FOUND, f"no service named {event.service!r} here")
            return
        self._nursery.start_soon(self._run_handler, handler, stream)

    async def _run_handler(self, handler: StreamHandler, stream: LinkStream) -> None:
        try:
            with stream.cancel_on_reset():
                await handler(stream)
        except Exception as exc:
            self._report(exc)
            stream.reset(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
            return
        stream.end()
        if self.conn.is_open(stream.stream_id) and stream._remote_status is None:
            # The handler is done; the peer may still be sending, which nobody will read.
            stream.reset(ErrorCode.CANCEL, "handler finished")

    # --------------------------------------------------------------- keepalive

    async def _keepalive(self) -> None:
        assert self.keepalive_interval
        interval = self.keepalive_interval
        while self._error is None:
            await trio.sleep(interval)
            silent = trio.current_time() - self._last_heard
            if silent >= interval + self.keepalive_timeout:
                self._fail(ConnectionLost(f"peer silent for {silent:.1f} s (keepalive)"))
                return
            self.ping()


def _batches(chunks: list[bytes | memoryview]) -> list[bytes | memoryview]:
    """What to hand the transport for a list of queued pieces: runs of small pieces
    joined into one write, large payloads passed as they are (no copy)."""
    if len(chunks) == 1:
        return chunks
    out: list[bytes | memoryview] = []
    small: list[bytes | memoryview] = []
    for chunk in chunks:
        if len(chunk) < _DIRECT_WRITE:
            small.append(chunk)
            continue
        if small:
            out.append(b"".join(small))
            small = []
        out.append(chunk)
    if small:
        out.append(small[0] if len(small) == 1 else b"".join(small))
    return out


def _lost(what: str, exc: BaseException) -> ConnectionLost:
    error = ConnectionLost(f"{what}: {exc or type(exc).__name__}")
    error.__cause__ = exc
    return error
