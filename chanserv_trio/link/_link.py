"""The trio driver: runs the sans-IO :class:`Connection` over any ``trio.abc.Stream``.

One :class:`Link` per connection. Its reader task feeds received bytes to the state
machine and dispatches the events without ever waiting on application code: messages
go into per-stream buffers bounded by the flow-control window, a new stream starts its
handler with ``start_soon``. Its writer task sends whatever frames accumulated since
it last ran in one ``send_all``, so small frames from many streams coalesce.

A :class:`LinkStream` (``link._stream``) is one multiplexed stream of messages in both
directions. The link and its streams share state objects (``link._state``) and never
reach into each other. Handlers of streams the peer opened run in the link's nursery,
each inside its own cancel scope, which a RESET from the peer (or the link dying)
cancels. What is the same for every link of a node comes in one ``LinkOptions``.
"""

from __future__ import annotations

import logging
import os
from collections import deque
from collections.abc import Callable
from typing import assert_never

import attrs
import trio

from .._errors import (
    AuthenticationFailed,
    ChanservError,
    ConnectionLost,
    MessageTooLarge,
    ProtocolError,
    RemoteProtocolError,
    ServerShuttingDown,
)
from ..wire._codec import ErrorCode, Status
from ..wire._connection import Connection
from ..wire._events import (
    AdmissionRequested,
    ConnectionTerminated,
    Event,
    GoAwayReceived,
    HandshakeCompleted,
    PingAcknowledged,
    Resumed,
    ResumeRequested,
    ServiceAdvertised,
    StreamEnded,
    StreamOpened,
    StreamReset,
    WindowOpened,
)
from ._auth import Identity, PeerInfo, judge
from ._keepalive import STALL, PingRecord
from ._options import CONTROL_LIMIT, LinkOptions
from ._resume import Attachment
from ._state import LinkState, StreamState
from ._status import error_from_goaway, error_from_status
from ._stream import LinkStream, StreamHandler

__all__ = ["Link", "LinkStatistics", "LinkStream", "StreamHandler"]

_RECEIVE_SIZE = 256 * 1024
#: Queued payloads at least this large are written without being copied into a batch.
_DIRECT_WRITE = 64 * 1024
#: With a write timeout, longer writes go to the transport in pieces this large, each
#: timed on its own: the timeout then means the peer took less than this for that long,
#: however large the message, and not that a whole write was slow. As large as a DATA
#: frame of the default ``max_frame_payload``, so the usual writes are not cut.
_WRITE_SLICE = 1 << 20
#: Seconds the streams still open get when an idle link is closed: the peer may have
#: opened some before it read our GOAWAY.
IDLE_CLOSE_GRACE = 5.0
#: Links up and down (INFO, WARNING when lost or the peer broke the protocol or a
#: limit), handlers that raised (ERROR), streams cut off by a shutdown (WARNING).
logger = logging.getLogger("chanserv_trio.link")

#: What one advertised name costs besides its UTF-8 bytes (its str, its set entries).
_NAME_COST = 128
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint


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
    #: PINGs of ours awaiting an answer: 0 or 1 (only the latest is remembered).
    pings_outstanding: int = 0
    #: Bytes the link holds on its peer's behalf (``LinkOptions.memory_budget``):
    #: DATA received and not consumed (messages and messages in assembly, decompressed),
    #: a fixed cost per message and per stream the peer opened (with its OPEN payload),
    #: advertised names, queued control replies and the receive buffer.
    bytes_held: int = 0
    #: The most it may hold: its memory budget.
    memory_budget: int = 0
    #: Times the link moved to a new transport after its transport broke.
    resumptions: int = 0
    #: Seconds the link spent without a transport, waiting to resume (so far).
    detached_seconds: float = 0.0
    #: Bytes sent or queued and not yet confirmed by the peer (``resume_buffer_size``
    #: bounds it); 0 on a link that does not resume.
    resume_buffered: int = 0


class Link:
    """One connection between two nodes, running the protocol over a trio stream.

    Create it, then ``await nursery.start(link.run)``: ``run`` reports ready once the
    handshake is complete and returns when the link is closed or lost.
    """

    def __init__(
        self,
        transport: trio.abc.Stream,
        options: LinkOptions | None = None,
        *,
        initiator: bool | None = None,
        remote_addr: str = "",
        local_addr: str = "",
        whole_messages: bool = False,
        peer: PeerInfo | None = None,
        accept_offers: bool = True,
        resume_only: bool = False,
    ) -> None:
        self.transport = transport
        #: The transport hands out one whole message per read (WebSocket): it is read
        #: with no size limit, so a large frame is never cut into pieces and copied again.
        self.whole_messages = whole_messages
        #: What this link announces, waits for and tolerates (shared by a node's links).
        self.options = options = options or LinkOptions()
        #: The peer's credential is judged by ``options.authenticate`` before anything
        #: else of its is processed: on every link we did not dial.
        self.authenticating = options.authenticate is not None and initiator is not True
        #: A connection admitted over its listener's ``max_links`` because a link of the
        #: listener waits to resume: only a resuming HELLO is answered; a plain one is
        #: refused with ``ENHANCE_YOUR_CALM`` before anything of the peer's is processed.
        self.resume_only = resume_only and initiator is False
        self.conn = Connection(
            initiator=initiator,
            settings=options.settings,
            credential=None if initiator is False else options.credential,
            defer_hello=self.authenticating or self.resume_only,
            memory_budget=options.budget(),
            # With authentication on, a resuming connection proves its identity again
            # (its HELLO carries the credential): the node judges it before handing the
            # transport to the link (``Multiplexer``).
            resume=options.resume,
        )
        # Whole messages as plain tuples: the garbage collector's part in a read of
        # many small messages (``wire.MessageTuple``).
        self.conn.message_tuples = True
        self.remote_addr = remote_addr
        #: What is known of the peer (for ``authenticate``).
        self.peer = peer or PeerInfo(remote_addr, "")
        #: Who the peer is, once ``authenticate`` let it in (None: not authenticated).
        self.identity: Identity | None = None
        #: The peer's SERVICE frames are trusted: we dialed it, its listener accepts
        #: offers, or its identity may offer. Otherwise they are ignored.
        self.accepts_offers = accept_offers
        #: SERVICE frames ignored because the peer may not offer.
        self.offers_ignored = 0
        #: Names the peer relays that were ignored past ``max_peer_services``,
        #: ``max_peer_service_bytes`` or the memory budget (the link stays up).
        self.relayed_names_ignored = 0
        self.local_addr = local_addr
        self._reset_tokens = float(options.reset_burst)
        self._reset_time = 0.0
        # Control frames (WINDOW, PING answers, RESET) may pile up when the peer does not
        # read; past this many bytes queued or being written the reader waits for the
        # writer (as HTTP/2 servers stop reading a peer that does not read).
        limit = options.outgoing_limit
        self._outgoing_limit = CONTROL_LIMIT if limit is None else limit
        # Bytes of control frames in the write in progress.
        self._control_in_flight = 0
        # What the link shares with its streams; ``_streams`` is its dict of open streams.
        self._shared = LinkState(self.conn)
        self._streams = self._shared.streams
        #: Services the peer currently offers.
        self.peer_services: set[str] = set()
        #: Those of ``peer_services`` the peer offers by relaying (it is a router).
        self.peer_relayed: set[str] = set()
        # UTF-8 bytes of the names in peer_services (held against max_peer_service_bytes).
        self._peer_service_bytes = 0
        # Names the peer added, withdrew or re-flagged since take_service_changes().
        self._service_changes: set[str] = set()
        #: Services we told the peer we offer.
        self.advertised: dict[str, bool] = {}
        #: True once the peer said it advertised every service it offers (a SERVICE
        #: with ``COMPLETE``): from then on ``peer_services`` is all it offers.
        self.peer_advertised_all = False
        #: The URL this link was dialed to, when it was (a stable name for the peer).
        self.joined_url: str | None = None
        self._writing = False
        self._handshake = trio.Event()
        self._closed = trio.Event()
        self._nursery: trio.Nursery | None = None
        self._error: ChanservError | None = None
        # Whether the link ended as planned (a GOAWAY OK, our own close): logged as INFO.
        self._clean_end = False
        self._closing = False
        # When the write in progress (or its current piece) began; None: none is.
        self._write_since: float | None = None
        # Streams opened on the link so far, by either side (the idle watch's clock).
        self._streams_started = 0
        self._pings = PingRecord()
        self.rtt: float | None = None
        self._last_heard = 0.0
        # Resumption: the transport run now (None: detached), since when and why the
        # link has been without one, and its record.
        self._attachment: Attachment | None = None
        self._detached_since: float | None = None
        self._detach_reason = ""
        self._detached_total = 0.0
        self._detach_lot = trio.lowlevel.ParkingLot()
        #: Times the link resumed over a new transport.
        self.resumptions = 0
        #: Streams the peer opened that were still open when the link ended other than
        #: by our own close (the peer hung up on them); a node charges them to the
        #: peer's address as resets.
        self.abandoned = 0
        #: On an accepting link whose first HELLO was a resuming one: the token and the
        #: peer's received position. The node hands the transport to the link named.
        self.resume_request: tuple[bytes, int] | None = None
        #: The credential that resuming HELLO carried (judged again by the node).
        self.resume_credential = b""
        #: Called with the link once its handshake completed (before ``run`` reports).
        self.on_ready: Callable[[Link], None] | None = None

    def __repr__(self) -> str:
        return f"<Link {self.local_addr} <-> {self.remote_addr}>"

    # ---------------------------------------------------------------- lifetime

    async def run(self, *, task_status: trio.TaskStatus[Link] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the link until it closes; reports itself through ``task_status`` once the
        handshake completed. Raises :class:`ConnectionLost` if the handshake fails."""
        started = False
        attachment = self._attachment = Attachment(self.transport, self.whole_messages)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._attached, attachment)
                with trio.move_on_after(self.options.handshake_timeout) as scope:
                    await self._handshake.wait()
                if scope.cancelled_caught:
                    self._fail(ConnectionLost("handshake timed out"))
                if self.resume_request is not None:
                    # The node hands this transport to the link the request names.
                    attachment.keep_open = True
                elif self._error is None:
                    started = True
                    logger.info("link up: %s (local %s)", self.remote_addr, self.local_addr)
                    attachment.ready.set()
                    attachment.settled.set()
                    if self.on_ready is not None:
                        self.on_ready(self)
                    task_status.started(self)
                    if self.options.idle_timeout is not None:
                        nursery.start_soon(self._close_when_idle)
                    await self._closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            self._fail(ConnectionLost("link closed"), clean=True)
            if started:
                level = logging.INFO if self._clean_end else logging.WARNING
                logger.log(level, "link down: %s: %s", self.remote_addr, _why(self._error))
            if not attachment.keep_open:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await trio.aclose_forcefully(self.transport)
        if self.resume_request is not None:
            return
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
            bytes_buffered=max(0, conn.buffered_bytes() - self._shared.unacked_total),
            bytes_queued=conn.outgoing_size,
            window_stalls=self._shared.window_stalls,
            rtt=self.rtt,
            pings_outstanding=self._pings.outstanding,
            bytes_held=conn.held_bytes
            + conn.control_queued
            + self._control_in_flight
            + conn.receive_buffer_size,
            memory_budget=self.options.budget(),
            resumptions=self.resumptions,
            detached_seconds=self.detached_seconds,
            resume_buffered=conn.resume_held,
        )

    @property
    def streams_started(self) -> int:
        """Streams opened on the link so far, by either side."""
        return self._streams_started

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
        shared = self._shared
        if not self.conn.local_goaway:
            self.conn.go_away(ErrorCode.OK, message)
            shared.kick_writer()
        self._closing = True
        with trio.move_on_after(grace):
            while self._streams and self._error is None:
                await shared.released_lot.park()
        if self._error is None and self._streams:
            logger.warning(
                "%d streams on the link to %s still open after %g s of grace: reset (SHUTDOWN)",
                len(self._streams),
                self.remote_addr,
                grace,
            )
        if self._error is None:
            error = ServerShuttingDown(message, ErrorCode.SHUTDOWN)
            status = Status(ErrorCode.SHUTDOWN, "", message)
            for stream in list(self._streams.values()):
                shared.reset(stream, status)
                stream.broken(error)
        await self.aclose(ErrorCode.OK, message)

    async def aclose(self, code: int = ErrorCode.OK, message: str = "link closed") -> None:
        """Say goodbye to the peer, flush what is queued and close the link."""
        if self._error is None:
            if not self.conn.local_goaway or code != ErrorCode.OK:
                self.conn.go_away(code, message)
            self._closing = True
            self._shared.kick_writer()
            await self._drain(1.0)
            self._fail(ConnectionLost(message), clean=code == ErrorCode.OK)
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

    def update_advertised(self, name: str, relayed: bool | None) -> None:
        """Tell the peer about one service: offered here (``relayed``: by relaying),
        or, with None, not offered; nothing is sent when it already knows."""
        if self._error is not None or self.advertised.get(name) == relayed:
            return
        if relayed is None:
            del self.advertised[name]
            self.advertise(name, False)
        else:
            self.advertised[name] = relayed
            self.advertise(name, True, relayed=relayed)

    def take_service_changes(self) -> set[str]:
        """The names whose offer by the peer changed (added, withdrawn, relayed or not)
        since the last call: what ``on_services`` listeners look at, so an update costs
        what changed, not every name."""
        changes, self._service_changes = self._service_changes, set()
        return changes

    def advertise(self, name: str, available: bool, *, relayed: bool = False) -> None:
        """Tell the peer a service is offered here, or withdrawn."""
        if self._error is None:
            self.conn.advertise(name, available, relayed=relayed)
            self._shared.kick_writer()

    def advertise_complete(self) -> None:
        """Tell the peer that every service we offer has been advertised (the
        end-of-advertisement marker; send it once, after the initial ones)."""
        if self._error is None:
            self.conn.advertise_complete()
            self._shared.kick_writer()

    def ping(self) -> None:
        """Send a PING; ``rtt`` is updated when its answer arrives. Only the latest
        PING is remembered: its answer answers the earlier ones too."""
        if self._error is None:
            conn = self.conn
            payload = os.urandom(8)
            conn.ping(payload)
            end = conn.bytes_sent + conn.outgoing_size
            self._pings.queued(payload, end, trio.current_time())
            self._shared.kick_writer()

    def _fail(self, error: ChanservError, *, clean: bool = False) -> None:
        if self._error is not None:
            return
        self._error = error
        # Planned: our own close, or a peer that said GOAWAY before it hung up.
        self._clean_end = clean or (
            self.conn.peer_goaway is not None and not isinstance(error, ProtocolError)
        )
        self._handshake.set()  # wake run() if it still waits for the handshake
        attachment = self._attachment
        if attachment is not None:
            attachment.scope.cancel()
            attachment.settled.set()
        if self._detached_since is not None:
            logger.warning("link %s ended while detached: %s", self.node_key, error)
        self._detach_lot.unpark_all()
        initiator = self.conn.initiator
        if not self._closing and initiator is not None:
            # The streams the peer opened and left open: it hung up on them.
            theirs = 0 if initiator else 1
            self.abandoned = sum(1 for stream_id in self._streams if stream_id % 2 == theirs)
            host_resets = self.options.host_resets
            if self.abandoned and host_resets is not None and initiator is False:
                host_resets.charge(self.remote_addr, self.abandoned)
        for stream in list(self._streams.values()):
            stream.broken(error)
        self._streams.clear()
        shared = self._shared
        shared.window_lot.unpark_all()
        shared.open_lot.unpark_all()
        shared.writer_parked = False
        shared.writer_lot.unpark_all()
        shared.writer_done = True
        shared.drained_lot.unpark_all()
        self._closed.set()
        on_services = self.options.on_services
        if on_services is not None and self.peer_services:
            self._service_changes |= self.peer_services
            self.peer_services = set()
            self.peer_relayed = set()
            self._peer_service_bytes = 0
            on_services(self)

    # -------------------------------------------------------------- transports

    async def _attached(self, attachment: Attachment) -> None:
        """Run the link over one transport: reader and writer, then, once its handshake
        is done, keepalive and the write watchdog; until the transport is given up."""
        try:
            with attachment.scope:
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(self._writer, attachment)
                    nursery.start_soon(self._reader, attachment)
                    await attachment.ready.wait()
                    if self.options.keepalive_interval:
                        nursery.start_soon(self._keepalive, attachment)
                    if self.options.write_timeout is not None:
                        nursery.start_soon(self._watch_writes, attachment)
        finally:
            # Given up for another transport: close it now. When the link ends, whoever
            # handed it over (run, or the node's dial or accept) closes it, as before.
            if not attachment.keep_open and self._error is None:
                with trio.CancelScope(shield=True), trio.move_on_after(1):
                    await trio.aclose_forcefully(attachment.transport)
            attachment.done.set()

    def _may_detach(self) -> bool:
        """Whether losing the transport now detaches the link rather than ending it:
        it resumes, is not over, and the peer has not said GOAWAY (after which a
        closed connection is the peer's goodbye)."""
        conn = self.conn
        return (
            self._error is None
            and conn.resumable
            and conn.peer_goaway is None
            and not conn.closed
            and self.resume_request is None
        )

    def _lose_transport(self, error: ConnectionLost, attachment: Attachment) -> None:
        """``attachment``'s transport broke with ``error``: detach, or end the link."""
        if self._attachment is not attachment or self._error is not None:
            return
        if self._may_detach():
            self._detach(error)
        else:
            self._fail(error)

    @property
    def detached(self) -> bool:
        """True while the link has lost its transport and waits to resume (a resuming
        handshake may be under way)."""
        return self._detached_since is not None

    @property
    def detached_seconds(self) -> float:
        """Seconds spent detached so far, the current detachment included."""
        total = self._detached_total
        if self._detached_since is not None:
            total += trio.current_time() - self._detached_since
        return total

    def _detach(self, error: ConnectionLost) -> None:
        attachment = self._attachment
        self._attachment = None
        if attachment is not None:
            attachment.scope.cancel()
            attachment.settled.set()
        self.conn.detach()
        self._pings = PingRecord()
        self._write_since = None
        self._writing = False
        if self._detached_since is None:
            now = trio.current_time()
            self._detached_since = now
            self._detach_reason = str(error)
            timeout = self.conn.resume_timeout
            logger.info(
                "link %s lost its transport (%s); resuming within %g s",
                self.node_key,
                error,
                timeout,
            )
            if self._nursery is not None:
                self._nursery.start_soon(self._expire_detached, now)
        self._detach_lot.unpark_all()

    async def _expire_detached(self, since: float) -> None:
        timeout = self.conn.resume_timeout
        assert timeout is not None
        await trio.sleep_until(since + timeout)
        if self._detached_since == since and self._error is None:
            self._fail(
                ConnectionLost(
                    f"resumption failed: not resumed within resume_timeout ({timeout:g} s) "
                    f"of losing the transport ({self._detach_reason})"
                )
            )

    def _resumed(self, attachment: Attachment, replayed: int) -> None:
        """The link carries on over ``attachment``'s transport."""
        since = self._detached_since
        self._detached_since = None
        took = 0.0 if since is None else trio.current_time() - since
        self._detached_total += took
        self.resumptions += 1
        attachment.ready.set()
        attachment.settled.set()
        logger.info(
            "link %s resumed after %.3f s detached (resumption %d, %d bytes replayed)",
            self.node_key,
            took,
            self.resumptions,
            replayed,
        )
        # The replay freed the buffer up to the peer's position: senders may go on.
        shared = self._shared
        shared.window_lot.unpark_all()
        for stream in self._streams.values():
            if stream.window_lot:
                stream.window_lot.unpark_all()
        shared.kick_writer()

    async def wait_detached(self) -> bool:
        """Wait until the link loses its transport (True) or ends (False)."""
        await trio.lowlevel.checkpoint()
        while self._error is None and self._detached_since is None:
            await self._detach_lot.park()
        return self._error is None

    async def resume_over(
        self,
        transport: trio.abc.Stream,
        *,
        local_addr: str = "",
        remote_addr: str = "",
        whole_messages: bool = False,
        task_status: trio.TaskStatus[Link] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """The dialing side: resume the detached link over a new ``transport``.

        Reports through ``task_status`` once the peer answered the resuming HELLO, then
        runs until that transport is given up too. Raises :class:`ConnectionLost` if
        it breaks or stays silent (``handshake_timeout``) before the answer (the
        caller may dial again), or if the peer refused: the link has then ended."""
        if self._error is not None:
            raise self._error
        if not self.conn.resumable or self._attachment is not None:
            raise RuntimeError("only a detached link that resumes can be resumed")
        attachment = self._attachment = Attachment(transport, whole_messages)
        self.transport = transport
        self.conn.begin_resume()
        self._shared.kick_writer()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._attached, attachment)
            with trio.move_on_after(self.options.handshake_timeout):
                await attachment.settled.wait()
            if attachment.ready.is_set():
                if remote_addr:
                    self.remote_addr, self.local_addr = remote_addr, local_addr
                task_status.started(self)
            else:
                if self._attachment is attachment:
                    self._detach(ConnectionLost("no answer to the resuming HELLO"))
                attachment.scope.cancel()
        # (Raised out here, not from inside the nursery, so it is not wrapped in a group.)
        if not attachment.ready.is_set():
            if self._error is not None:
                raise self._error
            raise ConnectionLost(
                f"resuming over {remote_addr or 'a new connection'} failed: "
                f"the transport broke or the peer did not answer in time"
            )

    def refuse_resume_from(self, position: int) -> str:
        """The accepting side: the peer asked to resume from ``position``, which is no
        longer held. The link ends; returns the reason (for the refusal)."""
        message = (
            f"resumption failed: the peer has received {position} bytes of this link, and "
            f"what follows is no longer held (the resume buffer holds "
            f"{self.conn.sent_position - self.conn.resume_held} to {self.conn.sent_position})"
        )
        self._fail(ConnectionLost(message))
        return message

    async def take_over(
        self,
        transport: trio.abc.Stream,
        position: int,
        unread: bytes,
        *,
        local_addr: str = "",
        remote_addr: str = "",
        whole_messages: bool = False,
    ) -> None:
        """The accepting side: a resuming HELLO for this link arrived on ``transport``,
        with the peer's received ``position`` (check :meth:`can_resume_from` first)
        and ``unread`` bytes after it. Answer, replay and run over it until it is
        given up. A link still attached is detached first: the peer would not resume
        a transport that works for it."""
        if self._error is not None:
            raise self._error
        old = self._attachment
        if old is not None:
            self._lose_transport(
                ConnectionLost("the peer resumed the link over a new connection"), old
            )
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await old.done.wait()
            if self._error is not None:
                raise self._error
        attachment = self._attachment = Attachment(transport, whole_messages)
        self.transport = transport
        if remote_addr:
            self.remote_addr, self.local_addr = remote_addr, local_addr
        replayed = self.conn.accept_resume(position)
        self._resumed(attachment, replayed)
        if unread:
            try:
                self._dispatch(self.conn.receive_data(unread))
            except RemoteProtocolError as exc:
                error = RemoteProtocolError(f"peer broke the protocol: {exc.message}", exc.code)
                self._fail(error)
                raise error from None
        await self._attached(attachment)

    def can_resume_from(self, position: int) -> bool:
        """Whether the link can resume for a peer that has received ``position`` bytes."""
        return self._error is None and self.conn.can_resume_from(position)

    # ----------------------------------------------------------------- streams

    async def open_stream(
        self,
        service: str,
        header: bytes,
        *,
        parent: int = 0,
        local_open: bool = True,
        remote_open: bool = True,
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
            await self._shared.open_lot.park()
        if self._error is not None:
            raise self._error
        if parent and parent not in self._streams:
            raise trio.ClosedResourceError("parent stream is closed")
        stream_id = conn.open_stream(
            service,
            header,
            parent=parent,
            local_open=local_open,
            remote_open=remote_open,
            route_key=route_key,
        )
        shared = self._shared
        state = StreamState(stream_id)
        stream = LinkStream(
            self,
            shared,
            state,
            service,
            header,
            parent,
            remote_open,
            local_open,
            route_key,
        )
        self._streams[stream_id] = state
        self._streams_started += 1
        shared.kick_writer()
        if not local_open and not remote_open:
            shared.release(state)
        if not parked and shared.spend():
            await _cancel_shielded_checkpoint()
        return stream

    # ------------------------------------------------------------------ writer

    async def _writer(self, attachment: Attachment) -> None:
        conn = self.conn
        transport = attachment.transport
        shared = self._shared
        write_timeout = self.options.write_timeout
        pings = self._pings
        try:
            while self._attachment is attachment:
                if not conn.outgoing_size:
                    if self._error is not None:
                        return
                    shared.writer_parked = True
                    await shared.writer_lot.park()
                    # Woken by the first frame queued in this scheduling round: let the
                    # tasks that run in the same round queue theirs too (a request's
                    # OPEN and END, then its source's DATA and END), so they go out in
                    # one write rather than one each.
                    await _cancel_shielded_checkpoint()
                    continue
                self._writing = True
                self._control_in_flight = conn.control_queued
                chunks = conn.take_outgoing()
                taken = conn.bytes_sent
                for data in _batches(chunks):
                    if write_timeout is None:
                        await transport.send_all(data)
                    elif len(data) <= _WRITE_SLICE:
                        # Timed by _watch_writes: a time stamp costs less than a scope.
                        self._write_since = trio.current_time()
                        await transport.send_all(data)
                    else:
                        view = memoryview(data)
                        for start in range(0, len(view), _WRITE_SLICE):
                            self._write_since = trio.current_time()
                            await transport.send_all(view[start : start + _WRITE_SLICE])
                self._write_since = None
                self._writing = False
                self._control_in_flight = 0
                if pings.unwritten_end and pings.unwritten_end <= taken:
                    pings.written(taken, trio.current_time(), conn.bytes_received)
                if shared.drained_lot:
                    shared.drained_lot.unpark_all()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._lose_transport(_lost("sending failed", exc), attachment)
        finally:
            self._writing = False
            if self._error is not None or not self.conn.resumable:
                shared.writer_done = True
                shared.drained_lot.unpark_all()

    # ------------------------------------------------------------------ reader

    async def _reader(self, attachment: Attachment) -> None:
        conn = self.conn
        transport = attachment.transport
        shared = self._shared
        receive_size = None if attachment.whole_messages else _RECEIVE_SIZE
        try:
            while self._error is None:
                data = await transport.receive_some(receive_size)
                if self._attachment is not attachment:
                    return  # given up while this read was in flight
                self._last_heard = trio.current_time()
                if not data and self._may_detach():
                    self._lose_transport(
                        ConnectionLost("the peer's end of the connection closed"), attachment
                    )
                    return
                try:
                    events = conn.receive_data(data)
                    if conn.admission_pending:
                        admitted = await self._admission(events)
                        if admitted is None:
                            return
                        events = admitted
                    self._dispatch(events)
                except RemoteProtocolError as exc:
                    if not conn.closed:
                        conn.go_away(exc.code, exc.message)
                    error: ConnectionLost
                    if exc.code == ErrorCode.RESUME_REFUSED:
                        error = ConnectionLost(exc.message)
                    else:
                        error = RemoteProtocolError(
                            f"peer broke the protocol: {exc.message}", exc.code
                        )
                    self._report(error)
                    # The connection is closed: its streams fail now, not once the
                    # GOAWAY is flushed (nothing can be sent on them any more).
                    for state in list(self._streams.values()):
                        state.broken(error)
                    await self._flush_and_fail(error)
                    return
                if self.resume_request is not None:
                    return  # what follows belongs to the link being resumed
                if conn.outgoing_size:
                    shared.kick_writer()
                    limit = self._outgoing_limit
                    if conn.control_queued + self._control_in_flight > limit:
                        # The peer is not reading what we owe it: wait for the writer.
                        while (
                            conn.control_queued + self._control_in_flight > limit
                            and not shared.writer_done
                        ):
                            await shared.drained_lot.park()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            self._lose_transport(_lost("receiving failed", exc), attachment)

    async def _admission(self, events: list[Event]) -> list[Event] | None:
        """Judge the peer's credential (its HELLO is the last event): admit it and
        return the events of what followed its HELLO, or refuse it with GOAWAY
        ``AUTHENTICATION_FAILED`` and fail the link (None)."""
        request = events[-1]
        assert isinstance(request, AdmissionRequested)
        if self.resume_only:
            self.conn.refuse("too many links", ErrorCode.ENHANCE_YOUR_CALM)
            await self._refused(
                ProtocolError(
                    f"refused a link from {self.remote_addr or 'peer'}: too many links "
                    f"(max_links), and its HELLO does not resume a link",
                    ErrorCode.ENHANCE_YOUR_CALM,
                )
            )
            return None
        authenticate = self.options.authenticate
        assert authenticate is not None
        verdict = await judge(authenticate, request.credential, self.peer)
        if verdict.identity is not None:
            self.identity = verdict.identity
            if verdict.identity.may_offer:
                self.accepts_offers = True
            return self.conn.admit()
        reason, cause = verdict.reason, verdict.cause
        self.conn.refuse(reason)
        error = AuthenticationFailed(
            f"refused a link from {self.remote_addr or 'peer'}: {reason}", reason
        )
        error.__cause__ = cause
        await self._refused(error)
        return None

    async def _refused(self, error: ChanservError) -> None:
        """The peer waiting for admission was refused (our GOAWAY is queued): send it,
        let the peer read it, and fail the link with ``error``."""
        await self._drain(1.0)
        # Closing with the peer's bytes unread would reset the connection, which can
        # destroy our GOAWAY before the peer reads it: wait (briefly) for it to hang up.
        with trio.move_on_after(1.0):
            drained = 0
            try:
                while drained < 64 << 10:
                    chunk = await self.transport.receive_some(4096)
                    if not chunk:
                        break
                    drained += len(chunk)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass
        self._fail(error)

    async def _flush_and_fail(self, error: ChanservError) -> None:
        await self._drain(1.0)
        self._fail(error)

    async def _drain(self, limit: float) -> None:
        """Wait (at most ``limit`` seconds) until the writer sent everything queued."""
        shared = self._shared
        if self._attachment is None:
            return  # detached: nothing can be written
        shared.kick_writer()
        with trio.move_on_after(limit):
            while (self.conn.outgoing_size or self._writing) and not shared.writer_done:
                await shared.drained_lot.park()

    def _report(self, error: BaseException) -> None:
        on_error = self.options.on_error
        if on_error is not None:
            on_error(error)

    def _dispatch(self, events: list[Event]) -> None:
        """Act on received events in order, never waiting (the reader's only work).

        Messages (the only tuple events) are handled first and inline, being most of
        them; then one ``match`` over the rest of the :data:`Event` union, which the
        type checker proves exhaustive.
        """
        streams = self._streams
        for event in events:
            if isinstance(event, tuple):
                # A whole message, the most common event by far: a MessageReceived or,
                # from the connection's fast path, a plain MessageTuple (the only
                # events that are tuples; see ``Connection.message_tuples``).
                stream_id, data, credit = event
                stream = streams.get(stream_id)
                if stream is None or stream.closed_locally:
                    self.conn.acknowledge(stream_id, credit, 1)
                    continue
                inbox = stream.inbox
                if inbox is None:
                    inbox = stream.inbox = deque()
                inbox.append((data, credit))
                lot = stream.lot
                if lot:
                    lot.unpark()
                continue
            match event:
                case WindowOpened():
                    self._on_window_opened(event)
                case StreamOpened():
                    self._on_stream_opened(event)
                case StreamEnded():
                    stream = streams.get(event.stream_id)
                    if stream is not None:
                        stream.remote_ended(event.status)
                        self._shared.release_if_closed(stream)
                case StreamReset():
                    self._on_stream_reset(event)
                case ServiceAdvertised():
                    self._on_service_advertised(event)
                case PingAcknowledged():
                    rtt = self._pings.answered(event.payload, trio.current_time())
                    if rtt is not None:
                        self.rtt = rtt
                case HandshakeCompleted():
                    self._handshake.set()
                case AdmissionRequested():
                    pass  # judged by the reader before it dispatches
                case GoAwayReceived():
                    self._shared.open_lot.unpark_all()
                    if self.options.on_services is not None:
                        self.options.on_services(self)
                case ConnectionTerminated():
                    self._on_terminated(event)
                case ResumeRequested():
                    self.resume_request = (event.token, event.position)
                    self.resume_credential = event.credential
                    self._handshake.set()
                case Resumed():
                    attachment = self._attachment
                    if attachment is not None:
                        self._resumed(attachment, event.replayed)
                case _:
                    assert_never(event)

    def _on_window_opened(self, event: WindowOpened) -> None:
        if event.stream_id == 0:
            self._shared.window_lot.unpark_all()
            for stream in self._streams.values():
                if stream.window_lot:
                    stream.window_lot.unpark_all()
        else:
            one = self._streams.get(event.stream_id)
            if one is not None and one.window_lot:
                one.window_lot.unpark_all()

    def _on_stream_reset(self, event: StreamReset) -> None:
        if not event.local and (event.stream_id % 2 == 0) == self.conn.initiator:
            self._count_peer_reset()
        stream = self._streams.get(event.stream_id)
        if stream is not None:
            self._shared.release(stream)
            stream.peer_reset(event.status, error_from_status(event.status))

    def _on_service_advertised(self, event: ServiceAdvertised) -> None:
        if event.complete:
            self.peer_advertised_all = True
            if self.options.on_services is not None:
                self.options.on_services(self)
            return
        if not self.accepts_offers:
            # An untrusted peer's offers are neither used nor relayed (nor held).
            self.offers_ignored += 1
            return
        name = event.name
        services = self.peer_services
        if event.available:
            if name not in services:
                if not self._count_peer_service(name, event.relayed):
                    return
                services.add(name)
            if event.relayed:
                self.peer_relayed.add(name)
            else:
                self.peer_relayed.discard(name)
        elif name in services:
            services.discard(name)
            self.peer_relayed.discard(name)
            size = len(name.encode())
            self._peer_service_bytes -= size
            self.conn.release(size + _NAME_COST)
        on_services = self.options.on_services
        if on_services is not None:  # (with no one to take them, changes are not kept)
            self._service_changes.add(name)
            on_services(self)

    def _count_peer_service(self, name: str, relayed: bool) -> bool:
        """Hold one more advertised name against the limits (True). Past them, a name
        the peer relays (a router passing on what its other peers offer, which it does
        not choose) is ignored and counted (False); any other closes the link."""
        options = self.options
        size = len(name.encode())
        over = (
            len(self.peer_services) >= options.max_peer_services
            or self._peer_service_bytes + size > options.max_peer_service_bytes
        )
        if relayed and (over or not self.conn.hold(size + _NAME_COST)):
            if not self.relayed_names_ignored:
                logger.warning(
                    "%s relays more service names than this node holds "
                    "(max_peer_services %d, max_peer_service_bytes %d, or the memory "
                    "budget): the names past them are ignored",
                    self.remote_addr,
                    options.max_peer_services,
                    options.max_peer_service_bytes,
                )
            self.relayed_names_ignored += 1
            return False
        if over:
            raise RemoteProtocolError(
                f"peer advertised more than {options.max_peer_services} service names or "
                f"{options.max_peer_service_bytes} bytes of names "
                f"(max_peer_services, max_peer_service_bytes)",
                ErrorCode.ENHANCE_YOUR_CALM,
            )
        if not relayed and not self.conn.hold(size + _NAME_COST):
            raise RemoteProtocolError(
                "peer advertised more service names than the link's memory budget holds",
                ErrorCode.ENHANCE_YOUR_CALM,
            )
        self._peer_service_bytes += size
        return True

    def _on_terminated(self, event: ConnectionTerminated) -> None:
        if event.code == ErrorCode.RESUME_REFUSED:
            message = event.message
            if not message.startswith("resumption failed"):
                message = f"resumption failed: {message}"
            self._fail(ConnectionLost(f"{message} (refused by the peer)"))
            return
        where = self.joined_url or self.remote_addr or "the node"
        error = error_from_goaway(event.code, event.message, where)
        self._fail(error, clean=event.code == ErrorCode.OK)

    def _count_peer_reset(self) -> None:
        """A token bucket against a peer that opens and resets streams to burn our CPU."""
        burst, rate = self.options.reset_burst, self.options.reset_rate
        now = trio.current_time()
        elapsed = now - self._reset_time
        self._reset_time = now
        self._reset_tokens = min(float(burst), self._reset_tokens + elapsed * rate)
        self._reset_tokens -= 1
        if self._reset_tokens < 0:
            raise RemoteProtocolError(
                f"peer reset more than {burst} of its streams (sustained limit {rate:g}/s)",
                ErrorCode.ENHANCE_YOUR_CALM,
            )
        host_resets = self.options.host_resets
        if host_resets is not None and not host_resets(self.remote_addr):
            raise RemoteProtocolError(
                "peer's address reset more streams, over all its links, than this node "
                "allows one address",
                ErrorCode.ENHANCE_YOUR_CALM,
            )

    def _on_stream_opened(self, event: StreamOpened) -> None:
        state = StreamState(event.stream_id)
        stream = LinkStream(
            self,
            self._shared,
            state,
            event.service,
            event.header,
            event.parent,
            event.remote_open,
            event.local_open,
            event.route_key,
        )
        self._streams[event.stream_id] = state
        self._streams_started += 1
        if event.parent:
            parent = self._streams.get(event.parent)
            if parent is None or parent.closed_locally:
                stream.reset(ErrorCode.CANCEL, "parent stream closed")
                return
            if parent.refuse_children:
                stream.reset(ErrorCode.REFUSED_STREAM, "this stream takes no child streams")
                return
            parent.add_child(stream)
            return
        handler_for = self.options.handler_for
        handler = None if handler_for is None else handler_for(event.service)
        if handler is None or self._nursery is None or self._closing:
            stream.reset(ErrorCode.SERVICE_NOT_FOUND, f"no service named {event.service!r} here")
            return
        self._nursery.start_soon(self._run_handler, handler, stream)

    async def _run_handler(self, handler: StreamHandler, stream: LinkStream) -> None:
        try:
            with stream.cancel_on_reset():
                await handler(stream)
        except Exception as exc:
            logger.error(
                "handler of %r raised (stream from %s)",
                stream.service,
                self.remote_addr,
                exc_info=exc,
            )
            self._report(exc)
            stream.reset(ErrorCode.INTERNAL_ERROR, f"{type(exc).__name__}: {exc}")
            return
        stream.end()
        if self.conn.is_open(stream.stream_id) and stream.remote_status is None:
            # The handler is done; the peer may still be sending, which nobody will read.
            stream.reset(ErrorCode.CANCEL, "handler finished")

    # --------------------------------------------------------------- keepalive

    async def _keepalive(self, attachment: Attachment) -> None:
        """PING every ``keepalive_interval``; the peer is lost when a PING we wrote
        stays unanswered for ``keepalive_timeout`` (``link._keepalive`` says how that
        is judged, and why a stall of our own loop does not count)."""
        interval = self.options.keepalive_interval
        assert interval
        timeout = self.options.keepalive_timeout
        stall = min(STALL, timeout / 2)
        conn = self.conn
        allowance = conn.local_settings.connection_window + (4 << 20)
        pings = self._pings
        next_ping = trio.current_time() + interval
        while self._error is None:
            deadline = pings.deadline(timeout, self._last_heard, conn.bytes_received, allowance)
            wake = next_ping if deadline is None else min(deadline, next_ping)
            await trio.sleep_until(wake)
            now = trio.current_time()
            if now - wake > stall:
                pings.stalled(now)
                next_ping = max(next_ping, now)
                continue
            deadline = pings.deadline(timeout, self._last_heard, conn.bytes_received, allowance)
            if deadline is not None and now >= deadline:
                self._lose_transport(
                    ConnectionLost(f"peer left a PING unanswered for {timeout:g} s (keepalive)"),
                    attachment,
                )
                return
            if now >= next_ping:
                conn.confirm_position()
                if not pings.outstanding:
                    self.ping()
                next_ping = now + interval

    async def _watch_writes(self, attachment: Attachment) -> None:
        """Declare the peer lost when one write (or one ``_WRITE_SLICE`` piece of a
        longer one) has not been taken for ``write_timeout`` seconds. A stall of our
        own loop restarts the clock, as for keepalive."""
        timeout = self.options.write_timeout
        assert timeout is not None
        stall = min(STALL, timeout / 2)
        restarted = 0.0
        while self._error is None:
            since = self._write_since
            if since is None:
                wake = trio.current_time() + timeout
            else:
                wake = max(since, restarted) + timeout
            await trio.sleep_until(wake)
            now = trio.current_time()
            if now - wake > stall:
                restarted = now
                continue
            since = self._write_since
            if since is not None and now - max(since, restarted) >= timeout:
                self._lose_transport(
                    ConnectionLost(
                        f"peer took less than {_WRITE_SLICE >> 20} MiB of our data "
                        f"in write_timeout ({timeout:g} s)"
                    ),
                    attachment,
                )
                return

    async def _close_when_idle(self) -> None:
        """Close the link with GOAWAY once no stream was open, and none opened by
        either side, for ``idle_timeout`` seconds (PINGs, WINDOW and SERVICE frames do
        not count: they keep nothing of the application's alive). Checked every quarter
        of the timeout while streams are open, so the link closes between one and one
        and a quarter timeouts after its last stream."""
        timeout = self.options.idle_timeout
        assert timeout is not None
        check_at = trio.current_time() + timeout
        quiet_since: float | None = check_at - timeout
        seen = self._streams_started
        while self._error is None:
            await trio.sleep_until(check_at)
            now = trio.current_time()
            if self._streams:
                quiet_since = None
                check_at = now + timeout / 4
            elif quiet_since is None or self._streams_started != seen:
                seen = self._streams_started
                quiet_since = now
                check_at = now + timeout
            else:
                await self.shutdown(
                    IDLE_CLOSE_GRACE, f"link idle for {timeout:g} s (idle_timeout)"
                )
                return


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


def _why(error: ChanservError | None) -> str:
    """A link's end in words, with the error code when the protocol was broken."""
    if isinstance(error, ProtocolError):
        return f"{error} ({ErrorCode.name_of(error.code) or error.code})"
    return str(error)


def _lost(what: str, exc: BaseException) -> ConnectionLost:
    error = ConnectionLost(f"{what}: {str(exc) or type(exc).__name__}")
    error.__cause__ = exc
    return error
