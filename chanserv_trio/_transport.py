"""Transports: turning a URL into a listening socket or a connected ``trio.abc.Stream``.

Every link runs over a ``trio.abc.Stream``; this module is the one place that knows
URL schemes and maps transport failures to chanserv_trio's own errors.
"""

from __future__ import annotations

import socket
from collections.abc import Awaitable, Callable
from functools import partial
from urllib.parse import urlsplit

import attrs
import trio

from ._errors import ConnectionLost

__all__ = ["Endpoint", "connect", "format_address", "parse_url", "serve"]

SCHEMES = ("tcp",)


@attrs.frozen
class Endpoint:
    """A parsed URL."""

    scheme: str
    host: str
    port: int
    path: str = ""


def parse_url(url: str) -> Endpoint:
    """Parse ``tcp://host:port``; raises ``ValueError`` with what is wrong."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r} (use tcp://)")
    host = parts.hostname
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if not host or port is None:
        raise ValueError(f"{url!r} needs a host and a port, like tcp://127.0.0.1:7000")
    return Endpoint(scheme, host, port, parts.path)


def format_address(scheme: str, sockaddr: tuple[object, ...] | str) -> str:
    """A socket address as a URL."""
    if isinstance(sockaddr, str):
        return f"{scheme}://{sockaddr}"
    host, port = str(sockaddr[0]), sockaddr[1]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _peer_address(stream: trio.SocketStream) -> str:
    try:
        return format_address("tcp", stream.socket.getpeername())
    except OSError:
        return "tcp://?"


def _local_address(stream: trio.SocketStream) -> str:
    try:
        return format_address("tcp", stream.socket.getsockname())
    except OSError:
        return "tcp://?"


def _tune(stream: trio.SocketStream) -> None:
    # Nagle would hold back small frames that the writer already coalesced.
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, True)


async def connect(url: str) -> tuple[trio.abc.Stream, str, str]:
    """Connect to ``url``; returns ``(stream, local_addr, remote_addr)``.

    Raises :class:`ConnectionLost` (with the ``OSError`` chained) when it cannot.
    """
    endpoint = parse_url(url)
    try:
        stream = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    except OSError as exc:
        raise ConnectionLost(f"cannot connect to {url}: {exc}") from exc
    _tune(stream)
    return stream, _local_address(stream), _peer_address(stream)


ConnectionHandler = Callable[[trio.abc.Stream, str, str], Awaitable[None]]


async def serve(
    url: str,
    handler: ConnectionHandler,
    *,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Listen on ``url`` and run ``handler(stream, local_addr, remote_addr)`` for each
    connection in its own task; reports the bound URL (real port) once listening."""
    endpoint = parse_url(url)

    async def on_connection(stream: trio.SocketStream) -> None:
        _tune(stream)
        await handler(stream, _local_address(stream), _peer_address(stream))

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, on_connection, endpoint.port, host=endpoint.host)
        )
        sockname = listeners[0].socket.getsockname()
        task_status.started(format_address("tcp", sockname))
