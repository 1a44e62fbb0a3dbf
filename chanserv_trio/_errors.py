"""The exceptions chanserv_trio raises; all derive from :class:`ChanservError`.

Which one you get tells you what happened and what to do:

- :class:`RemoteError`: the server's source function or frame producer raised.
- :class:`ConnectionLost`: the link died (peer vanished, closed, broke the protocol).
- :class:`ServiceNotFound`: nobody offered the service within ``dial_timeout``.
- :class:`DeadlineExceeded`: a deadline or timeout ended the stream.
- :class:`ServerShuttingDown`: the server is closing and cut the stream off.
- :class:`StreamCancelled`: the other side cancelled the stream.
- :class:`ProtocolError`: the peer sent something the protocol forbids.
- :class:`MessageTooLarge`: you tried to send more than the peer accepts.
"""

from __future__ import annotations

from ._wire_codec import ErrorCode, Status

__all__ = [
    "ChanservError",
    "ConnectionLost",
    "DeadlineExceeded",
    "MessageTooLarge",
    "ProtocolError",
    "RemoteError",
    "ServerShuttingDown",
    "ServiceNotFound",
    "StreamCancelled",
    "StreamError",
    "error_from_status",
]


class ChanservError(Exception):
    """Base of every error chanserv_trio raises on purpose."""


class ConnectionLost(ChanservError):
    """The link carrying the stream died; nothing more will arrive on it."""


class ProtocolError(ConnectionLost):
    """The peer broke the wire protocol; ``code`` is the error code sent or received."""

    def __init__(self, message: str, code: int = ErrorCode.PROTOCOL_ERROR) -> None:
        super().__init__(message)
        self.code = code


class ServiceNotFound(ChanservError):
    """No linked node offered the named service in time (or the node no longer has it)."""


class MessageTooLarge(ChanservError, ValueError):
    """A message or header is larger than the receiving side accepts."""


class StreamError(ChanservError):
    """A stream ended with an error status from the other side."""

    def __init__(self, message: str, code: int, kind: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.kind = kind
        self.message = message


class RemoteError(StreamError):
    """The remote source function or frames iterable raised.

    ``kind`` is the remote exception's type name, ``message`` its text.
    """

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message, ErrorCode.APPLICATION_ERROR, kind)
        self.args = (f"{kind}: {message}" if message else kind,)


class DeadlineExceeded(StreamError):
    """A deadline or one of the configured timeouts ended the stream."""


class ServerShuttingDown(StreamError):
    """The server is shutting down and ended the stream before it finished."""


class StreamCancelled(StreamError):
    """The other side cancelled the stream (it stopped wanting it)."""


def error_from_status(status: Status, where: str = "") -> ChanservError:
    """The exception that a non-OK END or RESET status stands for."""
    code = status.code
    known = ErrorCode.coerce(code)
    text = status.message or (known.name if isinstance(known, ErrorCode) else f"code {code}")
    if where:
        text = f"{where}: {text}"
    if code == ErrorCode.APPLICATION_ERROR:
        return RemoteError(status.kind or "Exception", status.message)
    if code == ErrorCode.TIMEOUT:
        return DeadlineExceeded(text, code, status.kind)
    if code == ErrorCode.SHUTDOWN:
        return ServerShuttingDown(text, code, status.kind)
    if code == ErrorCode.CANCEL:
        return StreamCancelled(text, code, status.kind)
    if code == ErrorCode.SERVICE_NOT_FOUND:
        return ServiceNotFound(text)
    if code == ErrorCode.CONNECTION_LOST:
        return ConnectionLost(text)
    if code == ErrorCode.REFUSED_STREAM:
        return StreamError(text, code, status.kind)
    return StreamError(text, code, status.kind)
