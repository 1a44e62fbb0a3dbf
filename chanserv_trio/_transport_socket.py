"""Link URLs and the socket byte streams under every transport: TCP, TLS and Unix.

``tcp://host:port`` is a plain TCP connection, ``tls://host:port`` the same wrapped in
``trio.SSLStream``, ``unix:///path`` a Unix domain socket. ``ws://`` and ``wss://`` run
a WebSocket over the TCP or TLS stream made here (see ``_transport_websocket``).
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import attrs
import trio

__all__ = [
    "SCHEMES",
    "Endpoint",
    "format_address",
    "listening",
    "open_byte_stream",
    "parse_url",
    "stream_addresses",
    "tls_accept",
]

SCHEMES = ("tcp", "tls", "ws", "wss", "unix")
_DEFAULT_PORTS = {"ws": 80, "wss": 443}


@attrs.frozen
class Endpoint:
    """A parsed link URL."""

    #: One of :data:`SCHEMES`.
    scheme: str
    host: str = ""
    port: int = 0
    #: The WebSocket resource (path and query), or the Unix socket's file name.
    path: str = ""

    @property
    def tls(self) -> bool:
        """True when the link runs over TLS."""
        return self.scheme in ("tls", "wss")

    @property
    def websocket(self) -> bool:
        """True when the link runs over a WebSocket."""
        return self.scheme in ("ws", "wss")

    def url(self, port: int | None = None) -> str:
        """The endpoint as a URL, with ``port`` in place of its own if given."""
        if self.scheme == "unix":
            return f"unix://{self.path}"
        base = format_address(self.scheme, (self.host, self.port if port is None else port))
        return base + self.path if self.websocket else base


def parse_url(url: str) -> Endpoint:
    """Parse a link URL; raises ``ValueError`` saying what is wrong with it."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        choices = ", ".join(f"{name}://" for name in SCHEMES)
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r} (use {choices})")
    if parts.fragment:
        raise ValueError(f"{url!r}: a link URL has no #fragment")
    if scheme == "unix":
        if parts.netloc or not parts.path or parts.query:
            raise ValueError(f"{url!r}: expected an absolute path, like unix:///run/chanserv.sock")
        return Endpoint("unix", path=parts.path)
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r}: credentials in the URL are not supported")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if port is None:
        port = _DEFAULT_PORTS.get(scheme)
    host = parts.hostname
    if not host or port is None:
        raise ValueError(f"{url!r} needs a host and a port, like {scheme}://127.0.0.1:7000")
    if scheme in ("ws", "wss"):
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        return Endpoint(scheme, host, port, path)
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"{url!r}: {scheme}:// URLs have no path")
    return Endpoint(scheme, host, port)


def format_address(scheme: str, sockaddr: tuple[object, ...] | str | bytes) -> str:
    """A socket address as a URL (a Unix peer without a name is ``unix://?``)."""
    if isinstance(sockaddr, bytes):
        sockaddr = sockaddr.decode("utf-8", "replace")
    if isinstance(sockaddr, str):
        return f"{scheme}://{sockaddr or '?'}"
    host, port = str(sockaddr[0]), sockaddr[1]
    if ":" in host:
        host = f"[{host}]"
    return f"{scheme}://{host}:{port}"


def _socket_of(stream: trio.abc.Stream) -> trio.socket.SocketType | None:
    if isinstance(stream, trio.SSLStream):
        stream = stream.transport_stream
    return stream.socket if isinstance(stream, trio.SocketStream) else None


def stream_addresses(scheme: str, stream: trio.abc.Stream) -> tuple[str, str]:
    """``(local, remote)`` addresses of a connected socket stream, as URLs."""
    sock = _socket_of(stream)
    if sock is None:
        return f"{scheme}://?", f"{scheme}://?"
    addresses = []
    for name in (sock.getsockname, sock.getpeername):
        try:
            addresses.append(format_address(scheme, name()))
        except OSError:
            addresses.append(f"{scheme}://?")
    return addresses[0], addresses[1]


async def open_byte_stream(
    endpoint: Endpoint, ssl_context: ssl.SSLContext | None
) -> trio.abc.Stream:
    """Connect to ``endpoint``; over TLS the handshake is complete when this returns,
    so an untrusted certificate fails here rather than on the first read."""
    if endpoint.scheme == "unix":
        return await trio.open_unix_socket(endpoint.path)
    tcp = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    if not endpoint.tls:
        return tcp
    tls = trio.SSLStream(
        tcp,
        ssl_context or ssl.create_default_context(),
        server_hostname=endpoint.host,
        https_compatible=endpoint.websocket,
    )
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return tls


async def tls_accept(
    tcp: trio.SocketStream, ssl_context: ssl.SSLContext, *, https_compatible: bool
) -> trio.SSLStream[trio.SocketStream]:
    """The server side of a TLS handshake over an accepted connection."""
    tls = trio.SSLStream(tcp, ssl_context, server_side=True, https_compatible=https_compatible)
    await tls.do_handshake()
    return tls


@asynccontextmanager
async def listening(endpoint: Endpoint) -> AsyncIterator[tuple[list[trio.SocketListener], str]]:
    """Bind ``endpoint``; yields the listeners and the bound URL (with the real port).

    Binding errors (address in use, permission) are raised as they are, ``OSError``.
    A Unix socket file is removed again on exit, and a stale one left behind by a
    process that is gone is replaced.
    """
    if endpoint.scheme == "unix":
        listener, inode = await _open_unix_listener(endpoint.path)
        try:
            yield [listener], endpoint.url()
        finally:
            # Synchronous on purpose: this often runs in a cancelled scope.
            _remove_socket_file(endpoint.path, inode)
            listener.socket.close()
        return
    listeners = await trio.open_tcp_listeners(endpoint.port, host=endpoint.host)
    try:
        yield listeners, endpoint.url(port=listeners[0].socket.getsockname()[1])
    finally:
        for listener in listeners:
            listener.socket.close()


async def _open_unix_listener(path: str) -> tuple[trio.SocketListener, int]:
    await _remove_stale_socket(path)
    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        await sock.bind(path)
        sock.listen(socket.SOMAXCONN)
        inode = os.stat(path).st_ino
    except BaseException:
        sock.close()
        raise
    return trio.SocketListener(sock), inode


async def _remove_stale_socket(path: str) -> None:
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(errno.EEXIST, "exists and is not a socket", path)
    try:
        stream = await trio.open_unix_socket(path)
    except ConnectionRefusedError:
        os.unlink(path)  # nobody listens: left behind by a process that is gone
        return
    await stream.aclose()
    raise OSError(errno.EADDRINUSE, "another process listens on this socket", path)


def _remove_socket_file(path: str, inode: int) -> None:
    # Only our own file: another node may have replaced it since.
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except FileNotFoundError:
        pass
