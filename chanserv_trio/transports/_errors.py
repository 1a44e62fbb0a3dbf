"""The one place where transport failures become chanserv_trio errors.

Opening a link can fail in the socket, in TLS or in the WebSocket upgrade, each with
its own exception types (``OSError``, ``trio.BrokenResourceError`` wrapping an
``ssl.SSLError``, trio-websocket's ``HandshakeError``...). Callers of ``join`` and the
``on_error`` hook of a listener see one type instead: :class:`ConnectionLost`, whose
message says what went wrong in words and whose ``__cause__`` is the original
exception.
"""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from contextlib import contextmanager

import trio
import trio_websocket

from .._errors import ConnectionLost

__all__ = [
    "TRANSPORT_ERRORS",
    "describe_close",
    "failures_as_connection_lost",
    "transport_failure",
]

#: Everything a transport raises when the other end or the network misbehaves.
TRANSPORT_ERRORS = (
    OSError,
    trio.BrokenResourceError,
    trio.TooSlowError,
    trio_websocket.HandshakeError,
    trio_websocket.ConnectionClosed,
)


def transport_failure(what: str, exc: BaseException) -> ConnectionLost:
    """A :class:`ConnectionLost` saying ``"{what}: {reason}"``, caused by ``exc``."""
    error = ConnectionLost(f"{what}: {_reason(exc)}")
    error.__cause__ = exc
    return error


@contextmanager
def failures_as_connection_lost(what: str) -> Iterator[None]:
    """Re-raise a transport failure inside the block as :func:`transport_failure`."""
    try:
        yield
    except TRANSPORT_ERRORS as exc:
        raise transport_failure(what, exc) from exc


def _root(exc: BaseException) -> BaseException:
    # trio wraps the interesting error (an SSLError, an OSError) in BrokenResourceError,
    # and open_tcp_stream the errors of each address it tried in one OSError.
    for _ in range(8):
        wrapper = trio.BrokenResourceError | trio_websocket.HandshakeError
        if isinstance(exc, wrapper) and not str(exc):
            inner = exc.__cause__ or exc.__context__
        elif isinstance(exc, OSError) and exc.errno is None:
            inner = exc.__cause__
        else:
            break
        while isinstance(inner, BaseExceptionGroup):
            inner = inner.exceptions[0]
        if inner is None:
            break
        exc = inner
    return exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, trio_websocket.ConnectionRejected):
        body = (exc.body or b"")[:200].decode("utf-8", "replace").strip()
        detail = f" ({body})" if body else ""
        return f"the server refused the WebSocket upgrade with HTTP {exc.status_code}{detail}"
    if isinstance(exc, trio_websocket.ConnectionClosed):
        return f"the WebSocket closed: {describe_close(exc.reason)}"
    if isinstance(exc, trio.TooSlowError | trio_websocket.ConnectionTimeout):
        return "timed out"
    root = _root(exc)
    if isinstance(root, ssl.SSLCertVerificationError):
        return f"the peer's certificate is not trusted ({root.verify_message or root})"
    if isinstance(root, ssl.SSLError):
        return f"TLS failed ({root.reason or root}); is the other end speaking TLS?"
    if isinstance(root, ConnectionRefusedError):
        return "connection refused (is anything listening there?)"
    if isinstance(root, FileNotFoundError):
        return "no such socket file (is anything listening there?)"
    text = str(root)
    if isinstance(root, trio.BrokenResourceError) and text:
        return text
    return f"{type(root).__name__}: {text}" if text else type(root).__name__


def describe_close(reason: trio_websocket.CloseReason | None) -> str:
    """A WebSocket close reason in words."""
    if reason is None:
        return "closed"
    text = f"code {reason.code} ({reason.name})"
    return f"{text}: {reason.reason}" if reason.reason else text
