"""The multiplexer node: listens, joins, and routes streams to named services.

A :class:`Multiplexer` owns its links and their tasks. Services registered on it with
:meth:`Multiplexer.handle` are advertised to every linked peer; :meth:`open_stream`
finds a peer that offers a name and opens a stream to it.
"""

from __future__ import annotations

import hashlib
import random
import uuid
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from functools import partial
from types import TracebackType
from typing import Any, Self

import attrs
import trio

from ._driver import Link, LinkStream, StreamHandler
from ._errors import ChanservError, ConnectionLost, ServiceNotFound
from ._registry import Registry
from ._router import relay
from ._transport import dial, serve
from ._wire_codec import ErrorCode
from ._wire_compression import lz4_available
from ._wire_connection import Settings

__all__ = ["Multiplexer", "MultiplexerStatistics", "pick_by_key"]


def _score(key: str | bytes, node: str) -> int:
    raw = key.encode() if isinstance(key, str) else key
    digest = hashlib.blake2b(node.encode() + b"\0" + raw, digest_size=8).digest()
    return int.from_bytes(digest, "big")


def pick_by_key(links: list[Link], key: str | bytes) -> Link:
    """The link whose node scores highest for ``key`` (rendezvous hashing; a ``str``
    key counts as its UTF-8 bytes)."""
    return max(links, key=lambda link: (_score(key, link.node_key), link.node_key))


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


class Multiplexer:
    """A node that links to peers over one connection each and multiplexes streams.

    Use it as an async context manager; it owns every task it starts::

        async with cs.Multiplexer() as mpx:
            address = await mpx.listen("tcp://127.0.0.1:0")

    ``settings`` are the wire limits and windows this node announces on each link.
    ``keepalive_interval`` (seconds, None for off) pings idle peers; a peer silent for
    ``keepalive_interval + keepalive_timeout`` is declared lost; ``write_timeout``
    (seconds, None for off) declares lost a peer that stops taking our bytes.
    Leaving the ``async with`` block normally shuts down gracefully: peers are told to
    start nothing new, streams still open get ``shutdown_grace`` seconds to finish,
    then the rest are reset with :class:`~chanserv_trio.ServerShuttingDown`.
    ``reset_burst`` and ``reset_rate`` bound how fast a peer may open and reset its
    streams before its link is closed with ``ENHANCE_YOUR_CALM``.
    """

    def __init__(
        self,
        *,
        settings: Settings | None = None,
        handshake_timeout: float = 10.0,
        keepalive_interval: float | None = None,
        keepalive_timeout: float = 20.0,
        write_timeout: float | None = None,
        shutdown_grace: float = 5.0,
        reset_burst: int = 1000,
        reset_rate: float = 100.0,
        redial_backoff: tuple[float, float, float] = (0.5, 1.5, 60.0),
        router: bool = False,
        registry: Registry | None = None,
        on_error: object = None,
    ) -> None:
        initial, factor, ceiling = redial_backoff
        if not (0 < initial <= ceiling and factor >= 1):
            raise ValueError("redial_backoff is (first delay > 0, factor >= 1, max delay)")
        self.redial_backoff = redial_backoff
        self.router = router
        self.registry = registry
        #: A random id naming this node (registries key their entries by it).
        self.node_id = uuid.uuid4().hex
        self._local_version = 0
        self._local_lot = trio.lowlevel.ParkingLot()
        self._joined: dict[str, trio.CancelScope] = {}
        self.settings = settings or Settings()
        if self.settings.compression and not lz4_available():
            raise ValueError(
                "Settings(compression=True) needs the lz4 package: "
                "pip install 'chanserv-trio[lz4]'"
            )
        self.write_timeout = write_timeout
        self.shutdown_grace = shutdown_grace
        self.reset_burst = reset_burst
        self.reset_rate = reset_rate
        self._accepting = True
        self.handshake_timeout = handshake_timeout
        self.keepalive_interval = keepalive_interval
        self.keepalive_timeout = keepalive_timeout
        self._on_error = on_error if callable(on_error) else None
        self._services: dict[str, StreamHandler] = {}
        self._links: list[Link] = []
        self._services_lot = trio.lowlevel.ParkingLot()
        self._nursery: trio.Nursery | None = None
        self._nursery_manager: trio.Nursery | None = None
        self._cm: AbstractAsyncContextManager[trio.Nursery] | None = None
        self._closed = False
        self._listening: list[str] = []

    # ---------------------------------------------------------------- lifetime

    async def __aenter__(self) -> Self:
        self._cm = trio.open_nursery()
        self._nursery = await self._cm.__aenter__()
        if self.registry is not None:
            try:
                await self._nursery.start(self.registry.run, self)
            except BaseException:
                # Close the (cancelled) nursery cleanly, then let the error out as itself.
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
            self._nursery = None
        return result

    async def shutdown(self, grace: float = 5.0) -> None:
        """Close gracefully: accept no new links or streams, tell every peer so, give
        open streams ``grace`` seconds to finish, then reset the rest with
        ``SHUTDOWN`` and close the links. Safe to call more than once."""
        self._accepting = False
        self._closed = True
        with trio.CancelScope(shield=True), trio.move_on_after(grace + 2.0):
            async with trio.open_nursery() as nursery:
                for link in list(self._links):
                    nursery.start_soon(link.shutdown, grace, "server is shutting down")

    def request_compression(self) -> None:
        """Ask for compression on links made from now on (``Settings.compression``)."""
        if not lz4_available():
            raise ValueError("compression needs the lz4 package: pip install 'chanserv-trio[lz4]'")
        self.settings = attrs.evolve(self.settings, compression=True)

    def _require_nursery(self) -> trio.Nursery:
        if self._nursery is None or self._closed:
            raise RuntimeError("use the Multiplexer inside 'async with' (and before it exits)")
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
        self, transport: trio.abc.Stream, *, initiator: bool | None, local: str, remote: str
    ) -> Link:
        return Link(
            transport,
            initiator=initiator,
            settings=self.settings,
            remote_addr=remote,
            local_addr=local,
            handler_for=self._handler_for,
            on_services=self._services_changed,
            handshake_timeout=self.handshake_timeout,
            keepalive_interval=self.keepalive_interval,
            keepalive_timeout=self.keepalive_timeout,
            write_timeout=self.write_timeout,
            reset_burst=self.reset_burst,
            reset_rate=self.reset_rate,
            on_error=self._on_error,
        )

    async def _run_link(
        self, link: Link, *, task_status: trio.TaskStatus[Link] = trio.TASK_STATUS_IGNORED
    ) -> None:
        self._links.append(link)
        link.set_advertised(self._advertisable(link))
        try:
            await link.run(task_status=task_status)
        finally:
            self._links.remove(link)
            self._services_changed(link)

    async def listen(self, url: str, **options: Any) -> str:
        """Accept links on ``url``: ``tcp://host:port``, ``tls://host:port``,
        ``ws://host:port/path``, ``wss://host:port/path`` or ``unix:///path`` (port 0
        picks a free one). Call it again to listen on more URLs; every one serves the
        same services.

        ``options``: ``ssl_context=`` (an ``ssl.SSLContext`` holding the server's
        certificate) for ``tls://`` and ``wss://``, where it is required.

        Returns the bound URL with the real port. Links are served until the
        multiplexer closes; a connection that fails its TLS, WebSocket or protocol
        handshake is reported to ``on_error`` and dropped without disturbing anything
        else. Raises ``ValueError`` for a bad URL and ``OSError`` if it cannot bind.
        """
        nursery = self._require_nursery()
        bound: str = await nursery.start(
            partial(
                serve,
                url,
                self._accept,
                on_error=self._on_error,
                settings=self.settings,
                handshake_timeout=self.handshake_timeout,
                **options,
            )
        )
        self._listening.append(bound)
        self._local_changed()
        return bound

    async def _accept(self, transport: trio.abc.Stream, local: str, remote: str) -> None:
        if not self._accepting:
            await trio.aclose_forcefully(transport)
            return
        link = self._new_link(transport, initiator=False, local=local, remote=remote)
        try:
            await self._run_link(link)
        except Exception as exc:
            # One bad connection must never take the listener (and everyone else) down.
            if self._on_error is not None:
                self._on_error(exc)

    async def join(self, url: str, *, redial: bool = True, **options: Any) -> Link:
        """Link to the node listening at ``url`` (any URL :meth:`listen` takes); returns
        once the handshake is done.

        With ``redial`` (the default), a link to ``url`` that drops later is dialed again
        with backoff (``redial_backoff``: first delay, factor, longest delay) until
        :meth:`leave` or the multiplexer closes; requests in flight on the dead link
        fail with :class:`ConnectionLost`, and its services return with it.

        ``options``: ``ssl_context=`` for ``tls://`` and ``wss://`` (default: the
        system's trusted authorities; the certificate must name the URL's host).

        Raises :class:`ConnectionLost` if it cannot connect, the TLS or WebSocket
        handshake fails, or the other end does not speak this protocol; ``ValueError``
        for a bad URL.
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
                settings=self.settings,
                handshake_timeout=self.handshake_timeout,
                **options,
            )
        )
        return started

    async def _keep_joined(
        self, url: str, options: dict[str, Any], link: Link, scope: trio.CancelScope
    ) -> None:
        initial, factor, ceiling = self.redial_backoff
        with scope:
            while True:
                await link.wait_closed()
                delay = initial
                while True:
                    await trio.sleep(delay)
                    try:
                        link = await self._dial(url, options)
                        break
                    except (ConnectionLost, OSError) as exc:
                        if self._on_error is not None:
                            self._on_error(exc)
                        delay = min(delay * factor, ceiling)
                    except RuntimeError:
                        return  # the multiplexer is closing

    def leave(self, url: str) -> None:
        """Stop redialing ``url`` and close the links joined to it."""
        scope = self._joined.pop(url, None)
        if scope is not None:
            scope.cancel()
        for link in list(self._links):
            if link.joined_url == url and self._nursery is not None:
                self._nursery.start_soon(link.aclose)

    @property
    def joined(self) -> list[str]:
        """URLs this node keeps joined (redialing them when they drop)."""
        return list(self._joined)

    async def attach(self, transport: trio.abc.Stream, *, initiator: bool | None = None) -> Link:
        """Run a link over a stream you already have; returns once the handshake is done.

        The two ends settle which of them opens odd stream ids in the handshake, so both
        may call ``attach(stream)`` as it is. ``initiator=True`` takes the role of the
        side that dials (``join``), ``False`` that of the side that accepts (``listen``);
        two ends that force the same role fail the handshake with ``ProtocolError``."""
        nursery = self._require_nursery()
        link = self._new_link(transport, initiator=initiator, local="attached", remote="attached")
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
        self._readvertise()
        self._local_changed()

    def unhandle(self, name: str) -> None:
        """Stop serving ``name`` (streams already open carry on)."""
        if self._services.pop(name, None) is not None:
            self._readvertise()
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
        target = pick_by_key(candidates, key) if key else random.choice(candidates)
        try:
            outbound = await target.open_stream(
                inbound.service,
                inbound.header,
                route_key=key,
                no_send=not inbound.peer_sends,
                no_reply=not inbound.we_send,
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
        if self.router:
            self._readvertise()
        self._services_lot.unpark_all()

    def _advertisable(self, link: Link) -> dict[str, bool]:
        """What ``link``'s peer should hear we offer (name -> offered by relaying): our
        services, and for a router what the other peers serve themselves. Names a peer
        offers by relaying are never offered further, so routes are one hop and
        routers linked to each other cannot advertise in a loop."""
        names = dict.fromkeys(self._services, False)
        if self.router:
            for other in self._links:
                if other is not link and other.is_alive and not other.going_away:
                    for name in other.peer_services - other.peer_relayed:
                        names.setdefault(name, True)
        return names

    def _readvertise(self) -> None:
        for link in self._links:
            if link.is_alive:
                link.set_advertised(self._advertisable(link))

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
        no_send: bool = False,
        no_reply: bool = False,
        route_key: bytes | str | None = None,
    ) -> LinkStream:
        """Open a stream to a peer offering ``service``, waiting up to ``dial_timeout``
        seconds for one to appear. Raises :class:`ServiceNotFound`.

        ``header`` may be a function, called once a peer is found (so a deadline it
        carries counts the time spent waiting). Among several peers offering it, one
        is picked at random; with a non-empty ``route_key`` (bytes; a ``str`` counts as
        its UTF-8) the pick is by rendezvous hashing of the key over the peers' names
        (:attr:`Link.node_key`), so the same key reaches the same node from every
        client while the set of nodes is unchanged, and about 1/N of keys move when a
        node joins or leaves. The key travels in the OPEN frame, and a router picks its
        next hop by it the same way.
        """
        self._require_nursery()
        key = route_key.encode() if isinstance(route_key, str) else route_key or b""
        with trio.move_on_after(dial_timeout):
            while True:
                candidates = self.links_offering(service)
                if candidates:
                    link = pick_by_key(candidates, key) if key else random.choice(candidates)
                    try:
                        return await link.open_stream(
                            service,
                            header() if callable(header) else header,
                            no_send=no_send,
                            no_reply=no_reply,
                            route_key=key,
                        )
                    except ConnectionLost:
                        if link.is_alive:
                            raise
                        continue  # that link died in between: try another
                await self._services_lot.park()
        raise ServiceNotFound(f"no linked node offers {service!r} (waited {dial_timeout} s)")

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
        )
