"""The socket transports: ``tcp://host:port``, ``tls://host:port`` and ``unix:///path``.

``tcp://`` is a plain TCP connection, ``tls://`` the same wrapped in ``trio.SSLStream``
(the handshake done before the link starts), ``unix://`` a Unix domain socket. The
WebSocket transports run over the TCP and TLS streams made here.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import stat
from urllib.parse import urlsplit

import trio

from ._base import (
    Bound,
    Endpoint,
    Transport,
    TransportOptions,
    parse_host_url,
    stream_addresses,
)
from ._errors import failures_as_connection_lost

__all__ = [
    "SocketTransport",
    "UnixListener",
    "UnixTransport",
    "listen_tcp",
    "open_tcp",
    "tls_accept",
]


class SocketTransport(Transport):
    """``tcp://host:port``, or with ``tls`` ``tls://host:port``."""

    def __init__(self, *, tls: bool = False) -> None:
        self.tls = tls
        self.schemes = ("tls",) if tls else ("tcp",)

    def __repr__(self) -> str:
        return f"SocketTransport(tls={self.tls})"

    def parse_url(self, url: str) -> Endpoint:
        return parse_host_url(url, tls=self.tls)

    async def dial(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> trio.abc.Stream:
        return await open_tcp(endpoint, options.ssl_context if self.tls else None)

    async def listen(self, endpoint: Endpoint, options: TransportOptions) -> Bound:
        return await listen_tcp(endpoint)

    async def accept(
        self,
        stream: trio.abc.Stream,
        endpoint: Endpoint,
        options: TransportOptions,
        nursery: trio.Nursery,
    ) -> trio.abc.Stream:
        if not self.tls:
            return await super().accept(stream, endpoint, options, nursery)
        assert options.ssl_context is not None  # checked before listening
        remote = stream_addresses(endpoint.scheme, stream)[1]
        with failures_as_connection_lost(f"TLS handshake with {remote}"):
            return await tls_accept(stream, options.ssl_context, https_compatible=False)


async def open_tcp(
    endpoint: Endpoint, ssl_context: ssl.SSLContext | None, *, https_compatible: bool = False
) -> trio.abc.Stream:
    """Connect to ``endpoint`` over TCP, and over TLS when ``endpoint.tls``; the TLS
    handshake is complete when this returns, so an untrusted certificate fails here
    rather than on the first read."""
    tcp = await trio.open_tcp_stream(endpoint.host, endpoint.port)
    if not endpoint.tls:
        return tcp
    tls = trio.SSLStream(
        tcp,
        ssl_context or ssl.create_default_context(),
        server_hostname=endpoint.host,
        https_compatible=https_compatible,
    )
    try:
        await tls.do_handshake()
    except BaseException:
        await trio.aclose_forcefully(tcp)
        raise
    return tls


async def tls_accept(
    tcp: trio.abc.Stream, ssl_context: ssl.SSLContext, *, https_compatible: bool
) -> trio.SSLStream[trio.abc.Stream]:
    """The server side of a TLS handshake over an accepted connection."""
    tls = trio.SSLStream(tcp, ssl_context, server_side=True, https_compatible=https_compatible)
    await tls.do_handshake()
    return tls


async def listen_tcp(endpoint: Endpoint) -> Bound:
    """TCP listeners on ``endpoint``'s host and port (port 0: a free one)."""
    listeners = await trio.open_tcp_listeners(endpoint.port, host=endpoint.host)
    return Bound(list(listeners), endpoint.url(port=listeners[0].socket.getsockname()[1]))


class UnixTransport(Transport):
    """``unix:///path``: a Unix domain socket. Listening replaces a stale socket file
    left by a process that is gone and removes its own file again when closed."""

    schemes = ("unix",)

    def __repr__(self) -> str:
        return "UnixTransport()"

    def parse_url(self, url: str) -> Endpoint:
        parts = urlsplit(url)
        if parts.netloc or not parts.path or parts.query:
            raise ValueError(f"{url!r}: expected an absolute path, like unix:///run/chanserv.sock")
        return Endpoint(parts.scheme.lower(), path=parts.path)

    async def dial(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> trio.abc.Stream:
        return await trio.open_unix_socket(endpoint.path)

    async def listen(self, endpoint: Endpoint, options: TransportOptions) -> Bound:
        listener, inode = await _open_unix_listener(endpoint.path)
        return Bound([UnixListener(listener, endpoint.path, inode)], endpoint.url())


class UnixListener(trio.abc.Listener[trio.SocketStream]):
    """A Unix socket listener that removes its socket file when closed."""

    def __init__(self, listener: trio.SocketListener, path: str, inode: int) -> None:
        self.listener = listener
        self.path = path
        self._inode = inode

    async def accept(self) -> trio.SocketStream:
        return await self.listener.accept()

    async def aclose(self) -> None:
        # Synchronous on purpose: this often runs in a cancelled scope.
        _remove_socket_file(self.path, self._inode)
        await self.listener.aclose()


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
