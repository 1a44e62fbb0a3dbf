"""The transport interface, and the registry that finds a URL's transport by its scheme.

A :class:`Transport` is one way of carrying links, named by the URL schemes it serves
(``tcp``, ``ws``...). It parses its URLs into an :class:`Endpoint`, dials one (a ready
``trio.abc.Stream``), listens on one (``trio.abc.Listener`` objects) and readies a
connection its listeners accepted (the server side of TLS, a WebSocket upgrade). The
streams it makes honour trio's stream contract; whatever background tasks they need
run in a nursery the caller passes and end once the stream is closed.

Which transport serves a URL is looked up here by scheme: :func:`register_transport`
adds one, :func:`transport_for` finds it, and :func:`parse_url` parses any registered
URL. Nothing else in the package tests a scheme by name.
"""

from __future__ import annotations

import abc
import re
import ssl
from urllib.parse import urlsplit

import attrs
import trio

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "Bound",
    "Endpoint",
    "Transport",
    "TransportOptions",
    "format_address",
    "parse_host_url",
    "parse_url",
    "register_transport",
    "registered_schemes",
    "stream_addresses",
    "transport_for",
    "unregister_transport",
]

#: The largest message a message-based transport takes from a peer, unless told.
DEFAULT_MAX_MESSAGE_SIZE = 16 << 20


@attrs.frozen
class Endpoint:
    """A parsed link URL."""

    #: The URL scheme, lower case (one a registered transport serves).
    scheme: str
    host: str = ""
    port: int = 0
    #: The rest of the URL the transport needs: a WebSocket resource (path and
    #: query), a socket file's name.
    path: str = ""
    #: True when the link runs over TLS (and so takes ``ssl_context=``).
    tls: bool = False

    def url(self, port: int | None = None) -> str:
        """The endpoint as a URL, with ``port`` in place of its own if given."""
        if not self.host:
            return f"{self.scheme}://{self.path}"
        address = format_address(self.scheme, (self.host, self.port if port is None else port))
        return address + self.path


@attrs.frozen(kw_only=True)
class TransportOptions:
    """What the caller tells a transport beyond the URL."""

    #: TLS transports: the server's certificate when listening; the authorities to
    #: trust when dialing (None: the system's).
    ssl_context: ssl.SSLContext | None = None
    #: The largest message a message-based transport (WebSocket) takes from the peer;
    #: the caller derives it from its protocol's limits. A transport that cuts every
    #: write into messages of its own size may take less (WebSocket: 512 KiB).
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE


@attrs.frozen
class Bound:
    """Where a transport listens."""

    #: Listeners of raw connections; :meth:`Transport.accept` readies each one.
    listeners: list[trio.abc.Listener[trio.abc.Stream]]
    #: The bound URL, with the real port in place of port 0.
    url: str


class Transport(abc.ABC):
    """One way of carrying links. Subclasses set :attr:`schemes` and implement
    :meth:`parse_url`, :meth:`dial` and :meth:`listen` (and :meth:`accept` when an
    accepted connection needs a handshake)."""

    #: The URL schemes this transport serves (lower case, without ``://``).
    schemes: tuple[str, ...] = ()
    #: True when the transport runs over TLS: ``ssl_context=`` applies, and listening
    #: needs one.
    tls: bool = False
    #: True when each ``receive_some`` of its streams returns one whole message of
    #: the transport (so a link reads with no size limit); its streams declare the
    #: same with a ``whole_messages`` attribute.
    whole_messages: bool = False

    @abc.abstractmethod
    def parse_url(self, url: str) -> Endpoint:
        """Parse one of this transport's URLs; ``ValueError`` says what is wrong."""

    @abc.abstractmethod
    async def dial(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> trio.abc.Stream:
        """Connect to ``endpoint``; the stream returned is ready for a link (any TLS
        handshake or upgrade done). Tasks the stream needs run in ``nursery`` until it
        is closed. Failures are transport exceptions (``OSError``,
        ``trio.BrokenResourceError``...) or :class:`~chanserv_trio.ConnectionLost`."""

    @abc.abstractmethod
    async def listen(self, endpoint: Endpoint, options: TransportOptions) -> Bound:
        """Bind ``endpoint``; binding errors are ``OSError``. Closing the listeners
        releases everything the binding took (a socket file, say)."""

    async def accept(
        self,
        stream: trio.abc.Stream,
        endpoint: Endpoint,
        options: TransportOptions,
        nursery: trio.Nursery,
    ) -> trio.abc.Stream:
        """Ready a connection one of this transport's listeners accepted (the server
        side of a handshake); the default takes it as it is. Failures are as for
        :meth:`dial`; the caller closes ``stream`` after one."""
        await trio.lowlevel.checkpoint()
        return stream

    def addresses(
        self, endpoint: Endpoint, stream: trio.abc.Stream, *, dialed: bool
    ) -> tuple[str, str]:
        """``(local, remote)`` addresses of a connection, as URLs; the default reads
        them from the socket under ``stream``."""
        return stream_addresses(endpoint.scheme, stream)


# ------------------------------------------------------------------ the registry

_transports: dict[str, Transport] = {}
# RFC 3986, section 3.1, in the lower case urlsplit gives.
_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*")


def register_transport(transport: Transport) -> None:
    """Serve the URLs of ``transport``'s schemes with it from now on."""
    if not transport.schemes:
        raise ValueError(f"{transport!r} names no URL scheme")
    for scheme in transport.schemes:
        if not _SCHEME.fullmatch(scheme):
            raise ValueError(
                f"bad URL scheme {scheme!r}: a lower-case letter, then letters, digits, + - ."
            )
        if scheme in _transports:
            raise ValueError(f"{scheme}:// is already served by {_transports[scheme]!r}")
    for scheme in transport.schemes:
        _transports[scheme] = transport


def unregister_transport(transport: Transport) -> None:
    """Stop serving ``transport``'s schemes (links already up carry on)."""
    for scheme in transport.schemes:
        if _transports.get(scheme) is transport:
            del _transports[scheme]


def registered_schemes() -> list[str]:
    """The schemes served, in the order their transports were registered."""
    return list(_transports)


def transport_for(scheme: str) -> Transport:
    """The transport serving ``scheme``; ``ValueError`` when none does."""
    transport = _transports.get(scheme.lower())
    if transport is None:
        raise ValueError(f"unsupported URL scheme {scheme!r} (use {_choices()})")
    return transport


def parse_url(url: str) -> Endpoint:
    """Parse a link URL of any registered transport; ``ValueError`` says what is wrong."""
    parts = urlsplit(url)
    transport = _transports.get(parts.scheme.lower())
    if transport is None:
        raise ValueError(f"unsupported URL scheme {parts.scheme!r} in {url!r} (use {_choices()})")
    if parts.fragment:
        raise ValueError(f"{url!r}: a link URL has no #fragment")
    return transport.parse_url(url)


def _choices() -> str:
    return ", ".join(f"{scheme}://" for scheme in _transports)


# ------------------------------------------------- helpers for socket-based URLs


def parse_host_url(
    url: str, *, tls: bool = False, default_port: int | None = None, resource: bool = False
) -> Endpoint:
    """Parse ``scheme://host:port`` (with ``resource``, followed by a path and query,
    ``/`` when absent); ``default_port`` stands in for a missing port."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if parts.username is not None or parts.password is not None:
        raise ValueError(f"{url!r}: credentials in the URL are not supported")
    try:
        port = parts.port
    except ValueError:
        raise ValueError(f"bad port in {url!r}") from None
    if port is None:
        port = default_port
    host = parts.hostname
    if not host or port is None:
        raise ValueError(f"{url!r} needs a host and a port, like {scheme}://127.0.0.1:7000")
    if resource:
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        return Endpoint(scheme, host, port, path, tls=tls)
    if parts.path not in ("", "/") or parts.query:
        raise ValueError(f"{url!r}: {scheme}:// URLs have no path")
    return Endpoint(scheme, host, port, tls=tls)


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
    # Wrapping streams (trio.SSLStream, a WebSocket stream) name what they wrap
    # ``transport_stream``.
    for _ in range(8):
        if isinstance(stream, trio.SocketStream):
            return stream.socket
        inner = getattr(stream, "transport_stream", None)
        if not isinstance(inner, trio.abc.Stream):
            return None
        stream = inner
    return None


def stream_addresses(scheme: str, stream: trio.abc.Stream) -> tuple[str, str]:
    """``(local, remote)`` addresses of the socket under ``stream``, as URLs
    (``scheme://?`` where there is none)."""
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
