"""What a stream's end status means to the application: the exception it raises.

The link layer turns a non-OK END or RESET status (wire codes) into the matching
:mod:`chanserv_trio._errors` class; the errors module itself knows no wire codes.
"""

from __future__ import annotations

from .._errors import (
    AuthenticationFailed,
    ChanservError,
    ConnectionLost,
    DeadlineExceeded,
    PermissionDenied,
    ProtocolError,
    RemoteError,
    ServerShuttingDown,
    ServiceNotFound,
    StreamCancelled,
    StreamError,
)
from ..wire._codec import ErrorCode, Status

__all__ = ["error_from_goaway", "error_from_status"]


def error_from_status(status: Status, where: str = "") -> ChanservError:
    """The exception that a non-OK END or RESET status stands for."""
    code = status.code
    text = status.message or ErrorCode.name_of(code) or f"code {code}"
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
    if code == ErrorCode.PERMISSION_DENIED:
        return PermissionDenied(text, code, status.kind)
    return StreamError(text, code, status.kind)


def error_from_goaway(code: int, message: str, where: str = "the node") -> ChanservError:
    """The exception a GOAWAY with ``code`` (or the connection's end) gives the link
    and every stream still open on it; ``where`` names the peer."""
    if code == ErrorCode.AUTHENTICATION_FAILED:
        return AuthenticationFailed(f"{where} refused our credential: {message}", message)
    if code in (ErrorCode.OK, ErrorCode.CONNECTION_LOST):
        return ConnectionLost(f"connection closed by peer: {message}")
    return ProtocolError(f"peer closed the connection: {message}", code)
