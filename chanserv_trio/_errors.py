"""The exceptions chanserv_trio raises; all derive from :class:`ChanservError`.

Which one you get tells you what happened and what to do:

- :class:`RemoteError`: the server's source function or frame producer raised.
- :class:`ConnectionLost`: the link died (peer vanished, closed, broke the protocol).
- :class:`ServiceNotFound`: nobody offered the service within ``dial_timeout``.
- :class:`DeadlineExceeded`: a deadline or timeout ended the stream.
- :class:`ServerShuttingDown`: the server is closing and cut the stream off.
- :class:`StreamCancelled`: the other side cancelled the stream.
- :class:`ProtocolError`: a rule of the wire protocol was broken;
  :class:`RemoteProtocolError` when the peer broke it, :class:`LocalProtocolError`
  when our own side tried to (a bug or misuse).
- :class:`MessageTooLarge`: you tried to send more than the peer accepts.
- :class:`AuthenticationFailed`: the node we dialed refused our credential (or, on
  the accepting side, a peer's credential was refused).
- :class:`PermissionDenied`: the service refused the request for our identity.

This module is a leaf: it imports nothing of the package, so every layer may use it.
"""

from __future__ import annotations

__all__ = [
    "AuthenticationFailed",
    "ChanservError",
    "ConnectionLost",
    "DeadlineExceeded",
    "LocalProtocolError",
    "MessageTooLarge",
    "PermissionDenied",
    "ProtocolError",
    "RemoteError",
    "RemoteProtocolError",
    "ServerShuttingDown",
    "ServiceNotFound",
    "StreamCancelled",
    "StreamError",
]

#: ErrorCode.PROTOCOL_ERROR, written as a literal so that this module imports nothing.
_PROTOCOL_ERROR = 1
#: ErrorCode.APPLICATION_ERROR, likewise.
_APPLICATION_ERROR = 8


class ChanservError(Exception):
    """Base of every error chanserv_trio raises on purpose."""


class ConnectionLost(ChanservError):
    """The link carrying the stream died; nothing more will arrive on it."""


class ProtocolError(ConnectionLost):
    """A rule of the wire protocol was broken; ``code`` is the error code sent or received.

    The root of :class:`RemoteProtocolError` (the peer broke it) and
    :class:`LocalProtocolError` (our own side tried to). Raised as itself when the
    peer ended the connection with an error code.
    """

    def __init__(self, message: str, code: int = _PROTOCOL_ERROR) -> None:
        super().__init__(message)
        #: The wire error code (an ``ErrorCode`` member when it is a known one).
        self.code = code
        #: The text without the code.
        self.message = message


class LocalProtocolError(ProtocolError):
    """Our own side tried something the protocol does not allow (a bug or misuse)."""


class RemoteProtocolError(ProtocolError):
    """The peer broke the wire protocol; ``code`` is what goes into GOAWAY.

    ``str()`` names the code: ``"FLOW_CONTROL_ERROR: DATA exceeds the window"``.
    """

    def __init__(self, message: str, code: int = _PROTOCOL_ERROR) -> None:
        super().__init__(message, code)
        name = getattr(code, "name", None) or f"code {int(code)}"
        self.args = (f"{name}: {message}",)


class AuthenticationFailed(ChanservError):
    """The node we dialed refused our credential (a GOAWAY ``AUTHENTICATION_FAILED``
    instead of its HELLO); the message carries the reason it gave.

    The accepting side reports the refusal to its ``on_error`` as this class too.
    Not a :class:`ConnectionLost`: retrying with the same credential will not help.
    """

    def __init__(self, message: str, reason: str = "") -> None:
        super().__init__(message)
        #: The reason the accepting side gave (its GOAWAY message).
        self.reason = reason


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
        super().__init__(message, _APPLICATION_ERROR, kind)
        self.args = (f"{kind}: {message}" if message else kind,)


class DeadlineExceeded(StreamError):
    """A deadline or one of the configured timeouts ended the stream."""


class ServerShuttingDown(StreamError):
    """The server is shutting down and ended the stream before it finished."""


class StreamCancelled(StreamError):
    """The other side cancelled the stream (it stopped wanting it)."""


class PermissionDenied(StreamError):
    """The service refused the request: its ``allow(identity)`` said no (status
    ``PERMISSION_DENIED`` on the request)."""
