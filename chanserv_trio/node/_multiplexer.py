"""The multiplexer node: listens, joins, and routes streams to named services.

A :class:`Multiplexer` owns its links and their tasks. Services registered on it with
:meth:`Multiplexer.handle` are advertised to every linked peer; :meth:`open_stream`
finds a peer that offers a name and opens a stream to it.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import random
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from types import TracebackType
from typing import Any, Self

import attrs
import trio

from .._errors import (
    AuthenticationFailed,
    ChanservError,
    ConnectionLost,
    ProtocolError,
    ServiceNotFound,
)
from ..link._auth import Authenticator, PeerInfo, Verdict, judge, peer_certificate
from ..link._link import Link, LinkStream, StreamHandler
from ..link._options import (
    KEEPALIVE_INTERVAL,
    KEEPALIVE_TIMEOUT,
    MAX_PEER_SERVICE_BYTES,
    MAX_PEER_SERVICES,
    WRITE_TIMEOUT,
    LinkOptions,
)
from ..link._refusal import refuse_link
from ..transports._schemes import dial, parse_url, reads_whole_messages, serve
from ..wire._codec import ErrorCode
from ..wire._compression import lz4_available
from ..wire._connection import Settings
from ..wire._resume import ResumeOptions
from ._advertising import Advertising
from ._backoff import Backoff
from ._budgets import HostResetBudget
from ._loglimit import LogLimit
from ._registry import Registry, RegistryNode
from ._router import relay

__all__ = [
    "Multiplexer",
    "MultiplexerStatistics",
    "MultiplexerTotals",
    "message_limit",
    "pick_by_key",
]

#: Listening and shutting down (INFO); connections that failed their handshake, links
#: refused over ``max_links``, failed redials (WARNING). Links up and down are logged by
#: ``chanserv_trio.link``.
logger = logging.getLogger("chanserv_trio.node")


async def _call_when_closed(link: Link, callback: Callable[[], None]) -> None:
    await link.wait_closed()
    callback()


def message_limit(settings: Settings) -> int:
    """The most a peer with ``settings``'s limits can put in one write, which bounds a
    transport message: DATA bounded by the connection window we announce, plus OPEN and
    control frames. A transport that cuts every write into messages of its own size
    takes less per message (WebSocket: ``MAX_RECEIVED_MESSAGE``, 512 KiB); the
    protocol's own limits do the real policing.
    """
    return settings.max_message_size + settings.connection_window + (16 << 20)


def _score(key: str | bytes, node: str) -> int:
    raw = key.encode() if isinstance(key, str) else key
    digest = hashlib.blake2b(node.encode() + b"\0" + raw, digest_size=8).digest()
    return int.from_bytes(digest, "big")


def pick_by_key(links: list[Link], key: str | bytes) -> Link:
    """The link whose node scores highest for ``key`` (rendezvous hashing; a ``str``
    key counts as its UTF-8 bytes)."""
    return max(links, key=lambda link: (_score(key, link.node_key), link.node_key))


def pick_link(links: list[Link], key: bytes) -> Link:
    """The link a new stream goes on: by ``key`` when there is one (the same node for
    the same key, even while its link waits to resume: the stream waits with it);
    otherwise one at random, among those with a transport when any has one."""
    if key:
        return pick_by_key(links, key)
    attached = [link for link in links if not link.detached]
    return random.choice(attached or links)


#: Links one listener carries at once by default. Each costs a socket, two tasks and a
#: few KiB when idle; 10,000 is far beyond what one node usually serves, and keeps a
#: flood of connections from exhausting file descriptors and memory.
MAX_LINKS = 10_000


@attrs.define
class _ListenerBudget:
    """How many links one listener carries, against its cap."""

    url: str
    max_links: int | None
    links: int = 0
    #: Peers on this listener may offer services without an identity that may.
    accept_offers: bool = False
    #: The links this listener carries (those waiting to resume included).
    held: set[Link] = attrs.field(factory=set)
    #: Connections admitted over the cap, each for a link that waits to resume.
    provisional: int = 0

    def over_cap(self) -> str:
        """Why a connection over the cap is refused."""
        return f"{self.url} already carries {self.links} links (max_links)"

    def spare_for_resuming(self) -> bool:
        """At the cap, whether one more connection may be admitted because it may
        resume one of this listener's links (detached, or about to find out that it
        is): it is refused unless its HELLO resumes one."""
        resumable = sum(1 for link in self.held if link.conn.resumable)
        return self.provisional < resumable


class _Lifetime(enum.Enum):
    """Where a multiplexer is in its life; it only moves forward."""

    #: Built, not yet entered.
    NEW = enum.auto()
    #: Inside ``async with``: links and streams may start.
    RUNNING = enum.auto()
    #: Shutting down: nothing new starts (no link, no stream, no redial).
    CLOSING = enum.auto()
    #: The ``async with`` block was left.
    CLOSED = enum.auto()


@attrs.frozen
class MultiplexerStatistics:
    """A snapshot of a multiplexer's counters, summed over its links."""

    #: Links currently up.
    links: int
    #: Streams open on all links.
    open_streams: int
    bytes_in: int
    bytes_out: int
    messages_in: int
    messages_out: int
    #: Received bytes not yet consumed by the application.
    bytes_buffered: int
    #: Bytes queued for transports, not yet written.
    bytes_queued: int
    #: Times a sender waited for flow-control credit.
    window_stalls: int
    #: The largest last-measured round-trip time over the links (None: none measured).
    rtt: float | None
    #: Connections refused since the node started because their listener carried
    #: ``max_links`` links already.
    links_refused: int = 0
    #: Peer resets refused by the per-host budget since the node started (each closed
    #: its link with ENHANCE_YOUR_CALM).
    resets_refused: int = 0
    #: Links refused since the node started because ``authenticate`` refused (or
    #: failed on) the peer's credential.
    auth_refused: int = 0
    #: SERVICE frames ignored on the live links because their peer may not offer.
    offers_ignored: int = 0


@attrs.frozen
class MultiplexerTotals:
    """A node's cumulative counters since it started, over every link it ever had,
    closed ones included: they only go up (unlike :class:`MultiplexerStatistics`,
    which sums the links up now), so they suit rates and monitoring counters."""

    #: Links that completed their handshake, and those of them that have closed since.
    links_opened: int
    links_closed: int
    #: Streams opened on them, by either side.
    streams_opened: int
    #: Bytes received from / sent to the transports.
    bytes_in: int
    bytes_out: int
    #: Whole messages received / sent.
    messages_in: int
    messages_out: int
    #: Times a sender waited for flow-control credit.
    window_stalls: int


class Multiplexer:
    """A node that links to peers over one connection each and multiplexes streams.

    Use it as an async context manager; it owns every task it starts::

        async with cs.Multiplexer() as mpx:
            address = await mpx.listen("tcp://127.0.0.1:0")

    ``settings`` are the wire limits and windows this node announces on each link.
    ``keepalive_interval`` (seconds, None for off) pings peers; a peer that leaves a
    PING unanswered for ``keepalive_timeout`` seconds after it was written is declared
    lost; ``write_timeout`` (seconds, None for off) declares lost a peer that stops
    taking our bytes. ``idle_timeout`` (seconds, None to keep idle links) closes, with
    GOAWAY, a link on which no stream was open or opened for that long.
    Leaving the ``async with`` block normally shuts down gracefully: peers are told to
    start nothing new, streams still open get ``shutdown_grace`` seconds to finish,
    then the rest are reset with :class:`~chanserv_trio.ServerShuttingDown`.
    ``reset_burst`` and ``reset_rate`` bound how fast a peer may open and reset its
    streams before its link is closed with ``ENHANCE_YOUR_CALM``; ``host_reset_burst``
    and ``host_reset_rate`` do the same over all the links from one host (an IP
    address; None for the rate: no such budget), so that reconnecting does not buy a
    fresh budget. ``max_links`` caps
    the links each listener carries at once (see :meth:`listen`; None: no cap).
    ``max_peer_services`` and ``max_peer_service_bytes`` bound the service names one
    peer may advertise (their number and their UTF-8 bytes); one more closes its link
    with ``ENHANCE_YOUR_CALM``, except a name the peer relays (a router passes on its
    other peers' names): past the limits those are ignored and the link stays up. The
    peers of a router hear every name its other peers serve: raise these on them when a
    router relays more.

    Trust: ``credential`` (bytes) is presented in the handshake on every link this
    node dials (:meth:`join`, registry joins, and :meth:`attach` unless
    ``initiator=False``); send it over ``tls://`` or ``wss://`` only. ``authenticate``
    judges the peer of every link this node did not dial, before anything of the
    peer's is processed: ``authenticate(credential, peer)`` (plain or async; ``peer``
    a :class:`~chanserv_trio.PeerInfo`) returns an :class:`~chanserv_trio.Identity`,
    or None (or raises :class:`~chanserv_trio.AuthenticationFailed` with a reason) to
    refuse it: the peer's ``join`` raises ``AuthenticationFailed``, and the refusal is
    reported to ``on_error`` and counted in ``statistics().auth_refused``. The
    services a peer offers are used (and relayed by a router) only from links this
    node dialed or attached, from peers whose identity has ``may_offer``, or on a
    listener opened with ``listen(url, accept_offers=True)``; other peers' offers are
    ignored.

    ``link_memory_budget`` (bytes) bounds what each link holds on its peer's behalf
    (unconsumed and unfinished messages, streams, names, queued replies); None:
    ``max_message_size`` + ``connection_window`` + 12 MiB (128 MiB with the default
    settings). See "Memory budget" in docs/errors.md for what happens at the edge.

    ``resume_timeout`` (seconds; None, the default: off) asks for resumption on every
    link (``docs/resumption.md``): when both ends set it, a link whose transport breaks
    keeps its streams open, the dialing side redials the same URL with
    ``redial_backoff`` and both replay what the other had not received, so every
    message arrives once and in order. A link not resumed within the smaller of the two
    ends' ``resume_timeout`` ends, and its streams with it, with
    :class:`~chanserv_trio.ConnectionLost`. Each link holds at most
    ``resume_buffer_size`` bytes of frames the peer has not confirmed; senders wait
    when it is full. The resume token is a secret: resume over ``tls://`` or ``wss://``.
    With ``authenticate`` on, a resuming connection's credential is judged again and
    the link resumes only for the :class:`~chanserv_trio.Identity` it was admitted with.
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        handshake_timeout: float = 10.0,
        keepalive_interval: float | None = KEEPALIVE_INTERVAL,
        keepalive_timeout: float = KEEPALIVE_TIMEOUT,
        write_timeout: float | None = WRITE_TIMEOUT,
        idle_timeout: float | None = None,
        shutdown_grace: float = 5.0,
        reset_burst: int = 1000,
        reset_rate: float = 100.0,
        host_reset_burst: int = 2000,
        host_reset_rate: float | None = 200.0,
        max_links: int | None = MAX_LINKS,
        max_peer_services: int = MAX_PEER_SERVICES,
        max_peer_service_bytes: int = MAX_PEER_SERVICE_BYTES,
        link_memory_budget: int | None = None,
        redial_backoff: tuple[float, float, float] = (0.5, 1.5, 60.0),
        resume_timeout: float | None = None,
        resume_buffer_size: int = 4 * 2**20,
        router: bool = False,
        registry: Registry | None = None,
        on_error: object = None,
        credential: bytes | None = None,
        authenticate: Authenticator | None = None,
    ) -> None:
        if credential is not None and not isinstance(credential, bytes):
            raise TypeError(f"credential must be bytes, not {type(credential).__name__}")
        if authenticate is not None and not callable(authenticate):
            raise TypeError("authenticate must be a function (credential, peer) -> Identity")
        try:
            self._redial = Backoff(*redial_backoff)
        except ValueError:
            raise ValueError(
                "redial_backoff is (first delay > 0, factor >= 1, max delay)"
            ) from None
        self.redial_backoff = redial_backoff
        self.router = router
        self.registry = registry
        #: A random id naming this node (registries key their entries by it).
        self.node_id = uuid.uuid4().hex
        self._local_version = 0
        self._local_lot = trio.lowlevel.ParkingLot()
        self._joined: dict[str, trio.CancelScope] = {}
        settings = settings or Settings()
        if settings.compression and not lz4_available():
            raise ValueError(
                "Settings(compression=True) needs the lz4 package: "
                "pip install 'chanserv-trio[lz4]'"
            )
        self.shutdown_grace = shutdown_grace
        if max_links is not None and max_links < 1:
            raise ValueError(f"max_links must be at least 1, not {max_links}")
        #: The most links each listener carries at once, unless ``listen`` says (None: no cap).
        self.max_links = max_links
        self._links_refused = 0
        # Warnings a peer causes once per connection (failed handshakes, refusals over
        # max_links): a flood of connections must not flood the log.
        self._connection_log = LogLimit(logger)
        self._auth_refused = 0
        self._lifetime = _Lifetime.NEW
        self._on_error = on_error if callable(on_error) else None
        # One reset budget per remote host over all its links, past and present.
        self._host_resets = (
            None if host_reset_rate is None else HostResetBudget(host_reset_burst, host_reset_rate)
        )
        #: Seconds a link whose transport broke waits to resume (None: no resumption).
        self.resume_timeout = resume_timeout
        self.resume_buffer_size = resume_buffer_size
        resume = (
            None
            if resume_timeout is None
            else ResumeOptions(timeout=resume_timeout, buffer_size=resume_buffer_size)
        )
        # Accepted links that may resume, by their resume token.
        self._resumable: dict[bytes, Link] = {}
        # Everything that is the same for every link of this node, built once.
        self._link_options = LinkOptions(
            resume=resume,
            settings=settings,
            handshake_timeout=handshake_timeout,
            keepalive_interval=keepalive_interval,
            keepalive_timeout=keepalive_timeout,
            write_timeout=write_timeout,
            idle_timeout=idle_timeout,
            reset_burst=reset_burst,
            reset_rate=reset_rate,
            host_resets=self._host_resets,
            max_peer_services=max_peer_services,
            max_peer_service_bytes=max_peer_service_bytes,
            memory_budget=link_memory_budget,
            handler_for=self._handler_for,
            on_services=self._services_changed,
            on_error=self._on_error,
            credential=credential,
            authenticate=authenticate,
        )
        self._services: dict[str, StreamHandler] = {}
        self._links: list[Link] = []
        # Links closed so far, and what they counted, in MultiplexerTotals' order
        # (streams_opened, bytes_in, bytes_out, messages_in, messages_out, window_stalls).
        self._links_closed = 0
        self._closed_totals = [0] * 6
        self._advertising = Advertising(self._services, lambda: self._links, router=router)
        self._services_lot = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: trio.Nursery | None = None
        self._cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._listening: list[str] = []
        # Dials under way (join, redial): until they end, a lookup cannot know all offers.
        self._dialing = 0

    # ---------------------------------------------------------------- lifetime

    async def __aenter__(self) -> Self:
        self._cm = trio.open_nursery()
        self._nursery = await self._cm.__aenter__()
        if self._lifetime is _Lifetime.NEW:
            self._lifetime = _Lifetime.RUNNING
        if self.registry is not None:
            node: RegistryNode = self  # all a registry sees of us (and mypy checks it is met)
            try:
                await self._nursery.start(self.registry.run, node)
            except BaseException:
                # Close the (cancelled) nursery cleanly, then let the error out as itself.
                self._lifetime = _Lifetime.CLOSED
                self._nursery.cancel_scope.cancel()
                await self._cm.__aexit__(None, None, None)
                self._nursery = None
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        await self.shutdown(self.shutdown_grace if exc_type is None else 0.0)
        assert self._nursery is not None
        self._nursery.cancel_scope.cancel()
        assert self._cm is not None
        try:
            result: bool | None = await self._cm.__aexit__(exc_type, exc, tb)
        except BaseExceptionGroup as group:
            # The nursery wraps the block's own exception in a group; when that is all
            # there is, let it out as itself so 'except cs.ConnectionLost' still works.
            if exc is not None and len(group.exceptions) == 1 and group.exceptions[0] is exc:
                return False
            raise
        finally:
            self._lifetime = _Lifetime.CLOSED
            self._nursery = None
        return result

    async def shutdown(self, grace: float = 5.0) -> None:
        """Close gracefully: accept no new links or streams, tell every peer so, give
        open streams ``grace`` seconds to finish, then reset the rest with
        ``SHUTDOWN`` and close the links. Safe to call more than once."""
        if self._lifetime is _Lifetime.RUNNING and self._links:
            logger.info("shutting down: %d links, %g s of grace", len(self._links), grace)
        if self._lifetime is not _Lifetime.CLOSED:
            self._lifetime = _Lifetime.CLOSING
        with trio.CancelScope(shield=True), trio.move_on_after(grace + 2.0):
            async with trio.open_nursery() as nursery:
                for link in list(self._links):
                    nursery.start_soon(link.shutdown, grace, "server is shutting down")

    def request_compression(self) -> None:
        """Ask for compression on links made from now on (``Settings.compression``)."""
        if not lz4_available():
            raise ValueError("compression needs the lz4 package: pip install 'chanserv-trio[lz4]'")
        options = self._link_options
        self._link_options = attrs.evolve(
            options, settings=attrs.evolve(options.settings, compression=True)
        )

    @property
    def settings(self) -> Settings:
        """The windows and limits this node announces on each new link."""
        return self._link_options.settings

    @property
    def closing(self) -> bool:
        """True once the node began to shut down (:meth:`shutdown`, or leaving the
        ``async with`` block): from then on it starts no new links, streams or redials,
        and :meth:`join` and :meth:`listen` raise ``RuntimeError``."""
        return self._lifetime in (_Lifetime.CLOSING, _Lifetime.CLOSED)

    def report_error(self, exc: BaseException) -> None:
        """Hand ``exc`` to this node's ``on_error`` (nothing happens without one): for
        what runs beside the node on its behalf, such as a registry."""
        if self._on_error is not None:
            self._on_error(exc)

    def _require_nursery(self) -> trio.Nursery:
        if self._lifetime is not _Lifetime.RUNNING:
            raise RuntimeError("use the Multiplexer inside 'async with' (and before it exits)")
        assert self._nursery is not None
        return self._nursery

    # ------------------------------------------------------------------- links

    @property
    def links(self) -> list[Link]:
        """The links currently up."""
        return [link for link in self._links if link.is_alive]

    @property
    def listening(self) -> list[str]:
        """Bound URLs this node listens on."""
        return list(self._listening)

    def _new_link(
        self,
        transport: trio.abc.Stream,
        *,
        initiator: bool | None,
        local: str,
        remote: str,
        scheme: str = "",
        accept_offers: bool = True,
        resume_only: bool = False,
    ) -> Link:
        certificate, der = peer_certificate(transport)
        return Link(
            transport,
            self._link_options,
            initiator=initiator,
            remote_addr=remote,
            local_addr=local,
            whole_messages=reads_whole_messages(transport),
            peer=PeerInfo(remote, scheme, certificate, der),
            accept_offers=accept_offers,
            resume_only=resume_only,
        )

    async def _run_link(
        self, link: Link, *, task_status: trio.TaskStatus[Link] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._links.append(link)
        link.set_advertised(self._advertising.initial(link))
        if not self.router:
            # What a router offers depends on its other links, which come and go: it
            # never says its advertisement is complete (protocol.md section 13).
            link.advertise_complete()
        try:
            await link.run(task_status=task_status)
        finally:
            self._links.remove(link)
            if link.conn.handshake_done:
                self._links_closed += 1
                totals = self._closed_totals
                for index, value in enumerate(_counted(link)):
                    totals[index] += value
            self._services_changed(link)

    async def listen(
        self,
        url: str,
        *,
        max_links: int | None = None,
        accept_offers: bool = False,
        **options: Any,
    ) -> str:
        """Accept links on ``url``: ``tcp://host:port``, ``tls://host:port``,
        ``ws://host:port/path``, ``wss://host:port/path`` or ``unix:///path`` (port 0
        picks a free one). Call it again to listen on more URLs; every one serves the
        same services.

        ``options``: ``ssl_context=`` (an ``ssl.SSLContext`` holding the server's
        certificate) for ``tls://`` and ``wss://``, where it is required.

        ``max_links`` caps the links this listener carries at once (None: the node's
        ``max_links``). A connection over the cap is accepted and closed at once with
        GOAWAY ``ENHANCE_YOUR_CALM`` "too many links" (the dialer's ``join`` raises
        :class:`~chanserv_trio.ProtocolError`), reported to ``on_error`` and counted in
        ``statistics().links_refused``.

        ``accept_offers``: the services peers advertise on this listener are used (and
        relayed, by a router) even when they have no identity that ``may_offer``. Off
        by default, so that a client cannot take over a service name: a hub that
        servers dial to offer their services needs it (or ``authenticate``).

        Returns the bound URL with the real port. Links are served until the
        multiplexer closes; a connection that fails its TLS, WebSocket or protocol
        handshake is reported to ``on_error`` and dropped without disturbing anything
        else. Raises ``ValueError`` for a bad URL and ``OSError`` if it cannot bind.
        """
        nursery = self._require_nursery()
        if max_links is not None and max_links < 1:
            raise ValueError(f"max_links must be at least 1, not {max_links}")
        budget = _ListenerBudget(
            url, self.max_links if max_links is None else max_links, accept_offers=accept_offers
        )
        bound: str = await nursery.start(
            partial(
                serve,
                url,
                partial(self._accept, budget),
                on_error=self._handshake_failed,
                max_message_size=message_limit(self.settings),
                handshake_timeout=self._link_options.handshake_timeout,
                **options,
            )
        )
        budget.url = bound
        logger.info("listening on %s", bound)
        self._listening.append(bound)
        self._local_changed()
        return bound

    async def _accept(
        self, budget: _ListenerBudget, transport: trio.abc.Stream, local: str, remote: str
    ) -> None:
        if self._lifetime is not _Lifetime.RUNNING:
            await trio.aclose_forcefully(transport)
            return
        resets = self._host_resets
        if resets is not None and not resets.admits(remote):
            self._refused_link(
                remote,
                "its address reset or abandoned more streams than this node allows one "
                "address (host_reset_burst, host_reset_rate); it may connect again once "
                "its budget refills",
            )
            await refuse_link(
                transport,
                self.settings,
                ErrorCode.ENHANCE_YOUR_CALM,
                "too many streams reset or abandoned from this address",
            )
            return
        if budget.max_links is not None and budget.links >= budget.max_links:
            if budget.spare_for_resuming():
                await self._accept_resuming(budget, transport, local, remote)
                return
            self._refused_link(remote, budget.over_cap())
            await refuse_link(
                transport, self.settings, ErrorCode.ENHANCE_YOUR_CALM, "too many links"
            )
            return
        budget.links += 1
        link = self._accepted_link(budget, transport, local, remote)
        link.on_ready = self._register_resumable
        budget.held.add(link)
        try:
            await self._run_link(link)
            if link.resume_request is not None:
                # The connection carries a link this listener already counts.
                budget.links -= 1
                try:
                    await self._resume_accepted(link, transport, local, remote)
                finally:
                    budget.links += 1
        except Exception as exc:
            if isinstance(exc, AuthenticationFailed):
                self._auth_refused += 1
            # One bad connection must never take the listener (and everyone else) down.
            self._handshake_failed(exc)
        finally:
            budget.links -= 1
            budget.held.discard(link)

    async def _accept_resuming(
        self, budget: _ListenerBudget, transport: trio.abc.Stream, local: str, remote: str
    ) -> None:
        """A connection over the listener's cap while one of its links waits to resume:
        it may carry that link's resuming HELLO. Anything else is refused with
        ``ENHANCE_YOUR_CALM`` once its HELLO is read, as over the cap."""
        link = self._accepted_link(budget, transport, local, remote, resume_only=True)
        budget.provisional += 1
        try:
            try:
                await self._run_link(link)
            finally:
                budget.provisional -= 1
            if link.resume_request is not None:
                await self._resume_accepted(link, transport, local, remote)
        except ProtocolError as exc:
            if exc.code != ErrorCode.ENHANCE_YOUR_CALM:
                self._handshake_failed(exc)
                return
            self._refused_link(remote, budget.over_cap())
        except Exception as exc:
            self._handshake_failed(exc)

    def _accepted_link(
        self,
        budget: _ListenerBudget,
        transport: trio.abc.Stream,
        local: str,
        remote: str,
        *,
        resume_only: bool = False,
    ) -> Link:
        return self._new_link(
            transport,
            initiator=False,
            local=local,
            remote=remote,
            scheme=parse_url(budget.url).scheme,
            accept_offers=budget.accept_offers,
            resume_only=resume_only,
        )

    def _refused_link(self, remote: str, why: str) -> None:
        """Count, log (rate-limited) and report a connection refused with
        ``ENHANCE_YOUR_CALM`` for ``why``."""
        self._links_refused += 1
        refusal = ProtocolError(
            f"refused a link from {remote}: {why}", ErrorCode.ENHANCE_YOUR_CALM
        )
        self._connection_log.warning("%s", refusal)
        self.report_error(refusal)

    def _handshake_failed(self, exc: BaseException) -> None:
        """A connection to one of our listeners failed its transport or link handshake."""
        self._connection_log.warning("handshake failed: %s", exc)
        if self._on_error is not None:
            self._on_error(exc)

    def _register_resumable(self, link: Link) -> None:
        token = link.conn.resume_token
        if token is None or not link.conn.resumable:
            return
        self._resumable[token] = link

        def forget() -> None:
            if self._resumable.get(token) is link:
                del self._resumable[token]

        assert self._nursery is not None
        self._nursery.start_soon(_call_when_closed, link, forget)

    async def _resume_accepted(
        self, fresh: Link, transport: trio.abc.Stream, local: str, remote: str
    ) -> None:
        """A connection's first HELLO asks to resume a link: hand the transport to it,
        or refuse with ``RESUME_REFUSED``."""
        assert fresh.resume_request is not None
        token, position = fresh.resume_request
        target = self._resumable.get(token)
        if target is None or not target.is_alive:
            message = (
                "resumption failed: this node holds no link with that resume token (it "
                "may have restarted, or the link expired after resume_timeout)"
            )
        elif (refusal := await self._judge_resumption(fresh, target)) is not None:
            message = refusal
        elif not target.is_alive:
            message = "resumption failed: the link ended while its credential was judged"
        elif not target.can_resume_from(position):
            message = target.refuse_resume_from(position)
        else:
            await target.take_over(
                transport,
                position,
                fresh.conn.take_unread(),
                local_addr=local,
                remote_addr=remote,
                whole_messages=reads_whole_messages(transport),
            )
            return
        self.report_error(ConnectionLost(f"refused a resumption from {remote}: {message}"))
        await refuse_link(transport, self.settings, ErrorCode.RESUME_REFUSED, message)

    async def _judge_resumption(self, fresh: Link, target: Link) -> str | None:
        """With ``authenticate`` on, a resuming connection's credential is judged like a
        new link's: the link resumes only for the identity it was admitted with. None
        if it may resume; otherwise why not."""
        authenticate = self._link_options.authenticate
        if authenticate is None:
            return None
        verdict: Verdict | None = None
        with trio.move_on_after(self._link_options.handshake_timeout):
            verdict = await judge(authenticate, fresh.resume_credential, fresh.peer)
        if verdict is None:
            return "resumption failed: authentication timed out"
        if verdict.identity is None:
            self._auth_refused += 1
            if verdict.cause is not None:
                self.report_error(verdict.cause)
            return f"resumption failed: {verdict.reason}"
        if verdict.identity != target.identity:
            return (
                "resumption failed: the resume token was presented with another identity "
                "than the link's"
            )
        return None

    async def join(self, url: str, *, redial: bool = True, **options: Any) -> Link:
        """Link to the node listening at ``url`` (any URL :meth:`listen` takes); returns
        once the handshake is done.

        With ``redial`` (the default), a link to ``url`` that drops later is dialed again
        with backoff (``redial_backoff``: first delay, factor, longest delay; each delay
        is drawn between half of its value and all of it, so the clients of a node that
        died do not all redial it at the same instant) until :meth:`leave` or the
        multiplexer closes; requests in flight on the dead link
        fail with :class:`ConnectionLost`, and its services return with it.

        ``options``: ``ssl_context=`` for ``tls://`` and ``wss://`` (default: the
        system's trusted authorities; the certificate must name the URL's host).

        The node's ``credential`` goes out in the handshake. A redialed link that
        is refused is reported to ``on_error`` and dialed again with backoff.

        Raises :class:`ConnectionLost` if it cannot connect, the TLS or WebSocket
        handshake fails, or the other end does not speak this protocol;
        :class:`~chanserv_trio.AuthenticationFailed` (with the other end's reason) if
        it refused our credential; ``ValueError`` for a bad URL.
        """
        nursery = self._require_nursery()
        link = await self._dial(url, options)
        if redial:
            previous = self._joined.pop(url, None)
            if previous is not None:
                previous.cancel()
            scope = trio.CancelScope()
            self._joined[url] = scope
            nursery.start_soon(self._keep_joined, url, options, link, scope)
        return link

    async def _dial(self, url: str, options: dict[str, Any]) -> Link:
        nursery = self._require_nursery()
        self._dialing += 1
        try:
            return await self._dial_once(url, options, nursery)
        finally:
            self._dialing -= 1
            self._services_lot.unpark_all()

    async def _dial_once(self, url: str, options: dict[str, Any], nursery: trio.Nursery) -> Link:

        async def run(
            transport: trio.abc.Stream, local: str, remote: str, task_status: trio.TaskStatus[Link]
        ) -> None:
            link = self._new_link(transport, initiator=True, local=local, remote=remote)
            link.joined_url = url
            await self._run_link(link, task_status=task_status)

        started: Link = await nursery.start(
            partial(
                dial,
                url,
                run,
                max_message_size=message_limit(self.settings),
                handshake_timeout=self._link_options.handshake_timeout,
                **options,
            )
        )
        if started.conn.resumable:
            nursery.start_soon(self._keep_resumed, started, url, options)
        return started

    async def _keep_resumed(self, link: Link, url: str, options: dict[str, Any]) -> None:
        """Each time ``link`` loses its transport, redial ``url`` (at once, then with
        the redial backoff) and resume it, until it resumed or ended."""
        nursery = self._require_nursery()

        async def run(
            transport: trio.abc.Stream, local: str, remote: str, task_status: trio.TaskStatus[Link]
        ) -> None:
            await link.resume_over(
                transport,
                local_addr=local,
                remote_addr=remote,
                whole_messages=reads_whole_messages(transport),
                task_status=task_status,
            )

        while await link.wait_detached():
            if self.closing:
                return  # the shutdown ends the link (or its resume_timeout does)
            delays = self._redial.delays()
            delay = 0.0
            while link.is_alive and link.detached and not self.closing:
                if delay:
                    with trio.move_on_after(delay):
                        await link.wait_closed()
                    if not link.is_alive or self.closing:
                        return
                try:
                    await nursery.start(
                        partial(
                            dial,
                            url,
                            run,
                            max_message_size=message_limit(self.settings),
                            handshake_timeout=self._link_options.handshake_timeout,
                            **options,
                        )
                    )
                except (ConnectionLost, OSError) as exc:
                    if link.is_alive:
                        self.report_error(exc)
                delay = next(delays)

    async def _keep_joined(
        self, url: str, options: dict[str, Any], link: Link, scope: trio.CancelScope
    ) -> None:
        with scope:
            while True:
                await link.wait_closed()
                if self.closing:
                    return
                logger.info("redialing %s (%s)", url, link.error)
                for delay in self._redial.delays():
                    await trio.sleep(delay)
                    if self.closing:
                        return  # checked right before dialing: nothing awaits in between
                    try:
                        link = await self._dial(url, options)
                        break
                    except (ConnectionLost, AuthenticationFailed, OSError) as exc:
                        logger.warning("redial of %s failed: %s", url, exc)
                        self.report_error(exc)

    def leave(self, url: str) -> None:
        """Stop redialing ``url`` and close the links joined to it."""
        scope = self._joined.pop(url, None)
        if scope is not None:
            scope.cancel()
            self._services_lot.unpark_all()
        for link in list(self._links):
            if link.joined_url == url and self._nursery is not None:
                self._nursery.start_soon(link.aclose)

    @property
    def joined(self) -> list[str]:
        """URLs this node keeps joined (redialing them when they drop)."""
        return list(self._joined)

    async def attach(
        self,
        transport: trio.abc.Stream,
        *,
        initiator: bool | None = None,
        accept_offers: bool = True,
    ) -> Link:
        """Run a link over a stream you already have; returns once the handshake is done.

        The two ends settle which of them opens odd stream ids in the handshake, so both
        may call ``attach(stream)`` as it is. ``initiator=True`` takes the role of the
        side that dials (``join``), ``False`` that of the side that accepts (``listen``);
        two ends that force the same role fail the handshake with ``ProtocolError``.

        With ``authenticate=`` on this node, the peer is authenticated unless
        ``initiator=True`` (the dialing end, which presents the node's ``credential``);
        only one end of a stream may authenticate the other, so with ``authenticate`` on
        both nodes pass ``initiator`` on each. ``accept_offers``: the peer's services are
        used (default: you chose the stream, so you know the peer); False leaves that to
        the identity's ``may_offer``."""
        nursery = self._require_nursery()
        link = self._new_link(
            transport,
            initiator=initiator,
            local="attached",
            remote="attached",
            accept_offers=accept_offers,
        )
        started: Link = await nursery.start(self._run_link, link)
        return started

    # ---------------------------------------------------------------- services

    def handle(self, name: str, handler: StreamHandler) -> None:
        """Serve ``name``: ``handler(stream)`` runs for each stream a peer opens to it."""
        if not name:
            raise ValueError("a service needs a name")
        if name in self._services:
            raise ValueError(f"service {name!r} is already registered")
        self._services[name] = handler
        self._advertising.local_changed(name)
        self._local_changed()

    def unhandle(self, name: str) -> None:
        """Stop serving ``name`` (streams already open carry on)."""
        if self._services.pop(name, None) is not None:
            self._advertising.local_changed(name)
            self._local_changed()

    @property
    def services(self) -> list[str]:
        """Names served by this node."""
        return list(self._services)

    def _handler_for(self, name: str) -> StreamHandler | None:
        handler = self._services.get(name)
        if handler is None and self.router and self.links_offering(name):
            return self._relay
        return handler

    async def _relay(self, inbound: LinkStream) -> None:
        candidates = [
            link
            for link in self.links_offering(inbound.service)
            if link is not inbound.link and inbound.service not in link.peer_relayed
        ]
        if not candidates:
            inbound.reset(
                ErrorCode.SERVICE_NOT_FOUND,
                f"no node behind this router offers {inbound.service!r}",
            )
            return
        key = inbound.route_key
        target = pick_link(candidates, key)
        try:
            outbound = await target.open_stream(
                inbound.service,
                inbound.header,
                route_key=key,
                local_open=inbound.remote_open,
                remote_open=inbound.local_open,
            )
        except (ChanservError, trio.ClosedResourceError) as exc:
            inbound.reset(ErrorCode.CONNECTION_LOST, f"relay to {target.node_key} failed: {exc}")
            return
        await relay(inbound, outbound)

    @property
    def local_version(self) -> int:
        """Goes up each time this node's services or listening URLs change."""
        return self._local_version

    async def wait_local_change(self, version: int) -> int:
        """Wait until :attr:`local_version` differs from ``version``; return it.
        (For registries that publish what this node serves and where.)"""
        while self._local_version == version:
            await self._local_lot.park()
        return self._local_version

    def _local_changed(self) -> None:
        self._local_version += 1
        self._local_lot.unpark_all()

    def _services_changed(self, link: Link) -> None:
        self._advertising.peer_changed(link, link.take_service_changes())
        self._services_lot.unpark_all()

    @property
    def offers_known(self) -> bool:
        """True when every service reachable from this node is known to be advertised
        to it: it has a registry, no dial or redial is under way, each URL it keeps
        joined has its link up, at least one link is up, and the peer of every link
        has said its advertisement is complete (the ``COMPLETE`` marker, which routers
        never send). A name no linked peer offers then has nobody to offer it, and
        ``open_stream(..., fast_not_found=True)`` fails at once."""
        if self.registry is not None or self._dialing:
            return False
        links = self._links
        if not links or not all(link.is_alive and link.peer_advertised_all for link in links):
            return False
        joined = {link.joined_url for link in links}
        return all(url in joined for url in self._joined)

    def links_offering(self, name: str) -> list[Link]:
        """Live links whose peer currently offers ``name``."""
        return [
            link
            for link in self._links
            if link.is_alive and not link.going_away and name in link.peer_services
        ]

    async def open_stream(
        self,
        service: str,
        header: bytes | Callable[[], bytes],
        *,
        dial_timeout: float = 10.0,
        local_open: bool = True,
        remote_open: bool = True,
        route_key: bytes | str | None = None,
        fast_not_found: bool = False,
    ) -> LinkStream:
        """Open a stream to a peer offering ``service``, waiting up to ``dial_timeout``
        seconds for one to appear. Raises :class:`ServiceNotFound`; with
        ``fast_not_found``, at once when no peer offers it while :attr:`offers_known`.

        ``header`` may be a function, called once a peer is found (so a deadline it
        carries counts the time spent waiting). Among several peers offering it, one
        is picked at random (one whose link has its transport, when a link waits to
        resume: ``resume_timeout``); with a non-empty ``route_key`` (bytes; a ``str`` counts as
        its UTF-8) the pick is by rendezvous hashing of the key over the peers' names
        (:attr:`Link.node_key`), so the same key reaches the same node from every
        client while the set of nodes is unchanged, and about 1/N of keys move when a
        node joins or leaves. The key travels in the OPEN frame, and a router picks its
        next hop by it the same way.
        """
        self._require_nursery()
        key = route_key.encode() if isinstance(route_key, str) else route_key or b""
        candidates = self.links_offering(service)
        if candidates:
            # The usual case: a link offers it and has room for a stream now, so
            # nothing below waits and no timeout scope is needed.
            link = pick_link(candidates, key)
            if link.conn.can_open_stream():
                stream = await _open_on(link, service, header, local_open, remote_open, key)
                if stream is not None:
                    return stream
                # That link died in between: look again, with the timeout.
        with trio.move_on_after(dial_timeout):
            while True:
                candidates = self.links_offering(service)
                if candidates:
                    link = pick_link(candidates, key)
                    stream = await _open_on(link, service, header, local_open, remote_open, key)
                    if stream is not None:
                        return stream
                    continue  # that link died in between: try another
                elif fast_not_found and self.offers_known:
                    raise ServiceNotFound(
                        f"no linked node offers {service!r} (each has advertised all it offers)"
                    )
                await self._services_lot.park()
        raise ServiceNotFound(f"no linked node offers {service!r} (waited {dial_timeout} s)")

    def totals(self) -> MultiplexerTotals:
        """Cumulative counters since the node started, closed links included."""
        totals = list(self._closed_totals)
        up = 0
        for link in self._links:
            if link.conn.handshake_done:
                up += 1
                for index, value in enumerate(_counted(link)):
                    totals[index] += value
        closed = self._links_closed
        return MultiplexerTotals(closed + up, closed, *totals)

    def statistics(self) -> MultiplexerStatistics:
        """Counters summed over the live links."""
        stats = [link.statistics() for link in self.links]
        return MultiplexerStatistics(
            links=len(stats),
            open_streams=sum(s.open_streams for s in stats),
            bytes_in=sum(s.bytes_in for s in stats),
            bytes_out=sum(s.bytes_out for s in stats),
            messages_in=sum(s.messages_in for s in stats),
            messages_out=sum(s.messages_out for s in stats),
            bytes_buffered=sum(s.bytes_buffered for s in stats),
            bytes_queued=sum(s.bytes_queued for s in stats),
            window_stalls=sum(s.window_stalls for s in stats),
            rtt=max((s.rtt for s in stats if s.rtt is not None), default=None),
            links_refused=self._links_refused,
            resets_refused=0 if self._host_resets is None else self._host_resets.refused,
            auth_refused=self._auth_refused,
            offers_ignored=sum(link.offers_ignored for link in self.links),
        )


async def _open_on(
    link: Link,
    service: str,
    header: bytes | Callable[[], bytes],
    local_open: bool,
    remote_open: bool,
    key: bytes,
) -> LinkStream | None:
    """A stream to ``service`` on ``link``; None if the link died meanwhile (the caller
    looks for another). A live link's :class:`ConnectionLost` is the caller's."""
    try:
        return await link.open_stream(
            service,
            header() if callable(header) else header,
            local_open=local_open,
            remote_open=remote_open,
            route_key=key,
        )
    except ConnectionLost:
        if link.is_alive:
            raise
        return None


def _counted(link: Link) -> tuple[int, ...]:
    """What a link adds to :class:`MultiplexerTotals` past its link counts."""
    stats = link.statistics()
    return (
        link.streams_started,
        stats.bytes_in,
        stats.bytes_out,
        stats.messages_in,
        stats.messages_out,
        stats.window_stalls,
    )
