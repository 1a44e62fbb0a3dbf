"""Transports: a URL names how to reach a node; every link runs over a ``trio.abc.Stream``.

========================  ====================================================
``tcp://host:port``       TCP
``tls://host:port``       TLS over TCP (``trio.SSLStream``), ``ssl_context=``
``ws://host:port/path``   WebSocket, binary messages
``wss://host:port/path``  WebSocket over TLS, ``ssl_context=``
``unix:///path``          Unix domain socket
========================  ====================================================

Each scheme is served by a :class:`~chanserv_trio.transports._base.Transport`
registered below, one line each; a new transport is one new file and one line here.

:func:`serve` listens and runs a handler per accepted connection; :func:`dial`
connects and runs a handler over the one connection. Both own the connection (and
any task its transport needs, such as a WebSocket's reader) for as long as the handler
runs, then close it. Every transport failure reaches the caller as
:class:`~chanserv_trio.ConnectionLost` (see ``transports._errors``); a malformed URL or
option is a ``ValueError``.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar

import trio

from .._errors import ConnectionLost
from ._base import (
    DEFAULT_MAX_MESSAGE_SIZE,
    Endpoint,
    Transport,
    TransportOptions,
    format_address,
    parse_url,
    register_transport,
    registered_schemes,
    transport_for,
)
from ._errors import failures_as_connection_lost
from ._socket import SocketTransport, UnixTransport
from ._websocket import WebSocketStream, WebSocketTransport

__all__ = [
    "ConnectionHandler",
    "Endpoint",
    "LinkRunner",
    "WebSocketStream",
    "dial",
    "format_address",
    "parse_url",
    "reads_whole_messages",
    "serve",
]

register_transport(SocketTransport())
register_transport(SocketTransport(tls=True))
register_transport(WebSocketTransport())
register_transport(WebSocketTransport(tls=True))
register_transport(UnixTransport())

T = TypeVar("T")

#: Runs a link over an accepted connection: ``handler(stream, local_addr, remote_addr)``.
ConnectionHandler: TypeAlias = Callable[[trio.abc.Stream, str, str], Awaitable[None]]
#: Runs a link over a dialled connection and reports it through the task status.
LinkRunner: TypeAlias = Callable[
    [trio.abc.Stream, str, str, "trio.TaskStatus[T]"], Awaitable[None]
]


def reads_whole_messages(stream: trio.abc.Stream) -> bool:
    """True when each ``receive_some`` of ``stream`` returns a whole message of its
    transport, so a link should read it with no size limit. Streams declare it with a
    ``whole_messages`` attribute, as every stream of a transport whose
    ``whole_messages`` is true does."""
    return getattr(stream, "whole_messages", False) is True


def _options(
    transport: Transport,
    endpoint: Endpoint,
    ssl_context: ssl.SSLContext | None,
    max_message_size: int,
    *,
    listening: bool,
) -> TransportOptions:
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext, not {type(ssl_context)!r}")
    if not transport.tls and ssl_context is not None:
        tls = [f"{scheme}://" for scheme in registered_schemes() if transport_for(scheme).tls]
        where = " and ".join([", ".join(tls[:-1]), tls[-1]] if len(tls) > 1 else tls)
        raise ValueError(f"ssl_context= applies to {where} URLs, not {endpoint.scheme}://")
    if transport.tls and listening and ssl_context is None:
        raise ValueError(
            f"listening on {endpoint.scheme}:// needs ssl_context= with the server's certificate"
        )
    return TransportOptions(ssl_context=ssl_context, max_message_size=max_message_size)


async def _run_over(
    open_stream: Callable[[trio.Nursery], Awaitable[trio.abc.Stream]],
    run: Callable[[trio.abc.Stream], Awaitable[None]],
) -> None:
    """Open a stream, ``run`` over it and close it, in a nursery for the tasks its
    transport needs. Errors leave as themselves, not in an exception group."""
    failure: Exception | None = None
    async with trio.open_nursery() as nursery:
        try:
            stream = await open_stream(nursery)
            try:
                await run(stream)
            finally:
                await stream.aclose()  # the transport bounds its own close
        except Exception as exc:
            failure = exc
        nursery.cancel_scope.cancel()
    if failure is not None:
        raise failure


async def serve(
    url: str,
    handler: ConnectionHandler,
    *,
    on_error: Callable[[BaseException], object] | None = None,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    handshake_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``url`` and run ``handler(stream, local, remote)`` for each connection
    in its own task; reports the bound URL (with the real port) once listening.

    The transport's side of the handshake (TLS, the WebSocket upgrade) happens here,
    within ``handshake_timeout``; a connection that fails it is reported to
    ``on_error`` as :class:`ConnectionLost` and closed, touching nothing else. Binding
    errors are raised as ``OSError``. ``max_message_size`` bounds a message read from
    a message-based transport (the caller derives it from its protocol limits).
    """
    endpoint = parse_url(url)
    transport = transport_for(endpoint.scheme)
    options = _options(transport, endpoint, ssl_context, max_message_size, listening=True)

    async def on_connection(raw: trio.abc.Stream) -> None:
        deadline = trio.current_time() + handshake_timeout
        accepted = False
        remote = transport.addresses(endpoint, raw, dialed=False)[1]

        async def accept(nursery: trio.Nursery) -> trio.abc.Stream:
            with failures_as_connection_lost(f"connection from {remote}"):
                with trio.fail_at(deadline):
                    return await transport.accept(raw, endpoint, options, nursery)

        async def run(stream: trio.abc.Stream) -> None:
            nonlocal accepted
            accepted = True
            local, remote = transport.addresses(endpoint, stream, dialed=False)
            await handler(stream, local, remote)

        try:
            await _run_over(accept, run)
        except ConnectionLost as exc:
            if accepted:
                raise
            if on_error is not None:
                on_error(exc)
            await trio.aclose_forcefully(raw)

    bound = await transport.listen(endpoint, options)
    try:
        task_status.started(bound.url)
        await trio.serve_listeners(on_connection, bound.listeners)
    finally:
        for listener in bound.listeners:
            await trio.aclose_forcefully(listener)


async def dial(
    url: str,
    handler: LinkRunner[T],
    *,
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE,
    handshake_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[T] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Connect to ``url`` and run ``handler(stream, local, remote, task_status)`` over
    the connection, holding the transport open until the handler returns.

    Connecting and the transport's handshake (TLS, the WebSocket upgrade) must finish
    within ``handshake_timeout``; any failure there raises :class:`ConnectionLost`
    with the transport's exception as its cause. For ``tls://`` and ``wss://`` the
    server's certificate is checked against ``ssl_context`` (default: the system's
    trusted authorities) and the host named in the URL. ``max_message_size`` is as
    for :func:`serve`.
    """
    endpoint = parse_url(url)
    transport = transport_for(endpoint.scheme)
    options = _options(transport, endpoint, ssl_context, max_message_size, listening=False)
    deadline = trio.current_time() + handshake_timeout

    async def connect(nursery: trio.Nursery) -> trio.abc.Stream:
        with failures_as_connection_lost(f"cannot connect to {url}"), trio.fail_at(deadline):
            return await transport.dial(endpoint, options, nursery)

    async def run(stream: trio.abc.Stream) -> None:
        local, remote = transport.addresses(endpoint, stream, dialed=True)
        await handler(stream, local, remote, task_status)

    await _run_over(connect, run)
