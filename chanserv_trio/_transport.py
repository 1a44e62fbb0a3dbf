"""Transports: a URL names how to reach a node; every link runs over a ``trio.abc.Stream``.

========================  ====================================================
``tcp://host:port``       TCP
``tls://host:port``       TLS over TCP (``trio.SSLStream``), ``ssl_context=``
``ws://host:port/path``   WebSocket, one binary message per write
``wss://host:port/path``  WebSocket over TLS, ``ssl_context=``
``unix:///path``          Unix domain socket
========================  ====================================================

:func:`serve` listens and runs a handler per accepted connection; :func:`dial`
connects and runs a handler over the one connection. Both own the transport for as
long as the handler runs, which is what a WebSocket needs (its reader task and close
handshake). Every transport failure reaches the caller as
:class:`~chanserv_trio.ConnectionLost` (see ``_transport_errors``); a malformed URL or
option is a ``ValueError``.
"""

from __future__ import annotations

import ssl
from collections.abc import Awaitable, Callable
from typing import TypeAlias, TypeVar

import trio

from ._errors import ConnectionLost
from ._transport_errors import failures_as_connection_lost
from ._transport_socket import (
    SCHEMES,
    Endpoint,
    format_address,
    listening,
    open_byte_stream,
    parse_url,
    stream_addresses,
    tls_accept,
)
from ._transport_websocket import WebSocketStream, accept_websocket, dial_websocket
from ._wire_connection import Settings

__all__ = [
    "SCHEMES",
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

T = TypeVar("T")

#: Runs a link over an accepted connection: ``handler(stream, local_addr, remote_addr)``.
ConnectionHandler: TypeAlias = Callable[[trio.abc.Stream, str, str], Awaitable[None]]
#: Runs a link over a dialled connection and reports it through the task status.
LinkRunner: TypeAlias = Callable[
    [trio.abc.Stream, str, str, "trio.TaskStatus[T]"], Awaitable[None]
]


def _tls_option(
    endpoint: Endpoint, ssl_context: ssl.SSLContext | None, *, server_side: bool
) -> ssl.SSLContext | None:
    if ssl_context is not None and not isinstance(ssl_context, ssl.SSLContext):
        raise TypeError(f"ssl_context must be an ssl.SSLContext, not {type(ssl_context)!r}")
    if not endpoint.tls:
        if ssl_context is not None:
            raise ValueError(
                f"ssl_context= applies to tls:// and wss:// URLs, not {endpoint.scheme}://"
            )
        return None
    if server_side and ssl_context is None:
        raise ValueError(
            f"listening on {endpoint.scheme}:// needs ssl_context= with the server's certificate"
        )
    return ssl_context


def reads_whole_messages(stream: trio.abc.Stream) -> bool:
    """Whether each ``receive_some`` of ``stream`` returns one whole message (WebSocket),
    so its reader should ask for no particular size."""
    return isinstance(stream, WebSocketStream)


async def serve(
    url: str,
    handler: ConnectionHandler,
    *,
    on_error: Callable[[BaseException], object] | None = None,
    settings: Settings | None = None,
    handshake_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``url`` and run ``handler(stream, local, remote)`` for each connection
    in its own task; reports the bound URL (with the real port) once listening.

    The TLS handshake and the WebSocket upgrade happen here, within
    ``handshake_timeout``; a connection that fails them is reported to ``on_error`` as
    :class:`ConnectionLost` and closed, touching nothing else. Binding errors are
    raised as ``OSError``.
    """
    endpoint = parse_url(url)
    context = _tls_option(endpoint, ssl_context, server_side=True)
    link_settings = settings or Settings()

    def report(error: BaseException) -> None:
        if on_error is not None:
            on_error(error)

    async def on_connection(raw: trio.SocketStream) -> None:
        deadline = trio.current_time() + handshake_timeout
        local, remote = stream_addresses(endpoint.scheme, raw)
        stream: trio.abc.Stream = raw
        if context is not None:
            try:
                with failures_as_connection_lost(f"TLS handshake with {remote}"):
                    with trio.fail_at(deadline):
                        stream = await tls_accept(
                            raw, context, https_compatible=endpoint.websocket
                        )
            except ConnectionLost as exc:
                report(exc)
                await trio.aclose_forcefully(raw)
                return
        if endpoint.websocket:
            await accept_websocket(
                stream,
                endpoint,
                handler,
                local=local + endpoint.path,
                remote=remote,
                settings=link_settings,
                deadline=deadline,
                report=report,
            )
        else:
            await handler(stream, local, remote)

    async with listening(endpoint) as (listeners, bound):
        task_status.started(bound)
        await trio.serve_listeners(on_connection, listeners)


async def dial(
    url: str,
    handler: LinkRunner[T],
    *,
    settings: Settings | None = None,
    handshake_timeout: float = 10.0,
    ssl_context: ssl.SSLContext | None = None,
    task_status: trio.TaskStatus[T] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Connect to ``url`` and run ``handler(stream, local, remote, task_status)`` over
    the connection, holding the transport open until the handler returns.

    Connecting, the TLS handshake and the WebSocket upgrade must finish within
    ``handshake_timeout``; any failure there raises :class:`ConnectionLost` with the
    transport's exception as its cause. For ``tls://`` and ``wss://`` the server's
    certificate is checked against ``ssl_context`` (default: the system's trusted
    authorities) and the host named in the URL.
    """
    endpoint = parse_url(url)
    context = _tls_option(endpoint, ssl_context, server_side=False)
    deadline = trio.current_time() + handshake_timeout
    with failures_as_connection_lost(f"cannot connect to {url}"), trio.fail_at(deadline):
        stream = await open_byte_stream(endpoint, context)
    local, remote = stream_addresses(endpoint.scheme, stream)
    if endpoint.websocket:
        await dial_websocket(
            stream,
            endpoint,
            handler,
            local=local,
            remote=endpoint.url(),
            settings=settings or Settings(),
            deadline=deadline,
            task_status=task_status,
        )
    else:
        await handler(stream, local, remote, task_status)
