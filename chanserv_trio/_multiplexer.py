"""The multiplexer node: listens, joins, and routes streams to named services.

A :class:`Multiplexer` owns its links and their tasks. Services registered on it with
:meth:`Multiplexer.handle` are advertised to every linked peer; :meth:`open_stream`
finds a peer that offers a name and opens a stream to it.
"""

from __future__ import annotations

import random
from contextlib import AbstractAsyncContextManager
from functools import partial
from types import TracebackType
from typing import Any, Self

import attrs
import trio

from ._driver import Link, LinkStream, StreamHandler
from ._errors import ConnectionLost, ServiceNotFound
from ._transport import dial, serve
from ._wire_connection import Settings

__all__ = ["Multiplexer", "MultiplexerStatistics"]


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
        on_error: object = None,
    ) -> None:
        self.settings = settings or Settings()
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
        self, transport: trio.abc.Stream, *, initiator: bool, local: str, remote: str
    ) -> Link:
        return Link(
            transport,
            initiator=initiator,
            settings=self.settings,
            remote_addr=remote,
            local_addr=local,
            handler_for=self._services.get,
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
        for name in self._services:
            link.advertise(name, True)
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

    async def join(self, url: str, **options: Any) -> Link:
        """Link to the node listening at ``url`` (any URL :meth:`listen` takes); returns
        once the handshake is done.

        ``options``: ``ssl_context=`` for ``tls://`` and ``wss://`` (default: the
        system's trusted authorities; the certificate must name the URL's host).

        Raises :class:`ConnectionLost` if it cannot connect, the TLS or WebSocket
        handshake fails, or the other end does not speak this protocol; ``ValueError``
        for a bad URL.
        """
        nursery = self._require_nursery()

        async def run(
            transport: trio.abc.Stream, local: str, remote: str, task_status: trio.TaskStatus[Link]
        ) -> None:
            link = self._new_link(transport, initiator=True, local=local, remote=remote)
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

    async def attach(self, transport: trio.abc.Stream, *, initiator: bool = True) -> Link:
        """Run a link over a stream you already have (one end must pass
        ``initiator=False``); returns once the handshake is done."""
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
        for link in self._links:
            link.advertise(name, True)

    def unhandle(self, name: str) -> None:
        """Stop serving ``name`` (streams already open carry on)."""
        if self._services.pop(name, None) is not None:
            for link in self._links:
                link.advertise(name, False)

    @property
    def services(self) -> list[str]:
        """Names served by this node."""
        return list(self._services)

    def _services_changed(self, link: Link) -> None:
        self._services_lot.unpark_all()

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
        header: bytes,
        *,
        dial_timeout: float = 10.0,
        no_send: bool = False,
        no_reply: bool = False,
    ) -> LinkStream:
        """Open a stream to a peer offering ``service``, waiting up to ``dial_timeout``
        seconds for one to appear. Raises :class:`ServiceNotFound`."""
        self._require_nursery()
        with trio.move_on_after(dial_timeout):
            while True:
                candidates = self.links_offering(service)
                if candidates:
                    link = random.choice(candidates)
                    try:
                        return await link.open_stream(
                            service, header, no_send=no_send, no_reply=no_reply
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
