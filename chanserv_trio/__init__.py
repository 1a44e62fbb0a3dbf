"""chanserv_trio: stream a stream of streams over one connection, with Trio.

A client posts a request to a named service; the server answers with a stream of
sources, each with a header and its own stream of frames, all multiplexed with flow
control and cancellation over a single link.
"""

from __future__ import annotations

from ._errors import (
    AuthenticationFailed,
    ChanservError,
    ConnectionLost,
    DeadlineExceeded,
    LocalProtocolError,
    MessageTooLarge,
    PermissionDenied,
    ProtocolError,
    RemoteError,
    RemoteProtocolError,
    ServerShuttingDown,
    ServiceNotFound,
    StreamCancelled,
    StreamError,
)
from .chanserv._client import Client, RemoteSource, SourceChannel, SourceMeta
from .chanserv._context import RequestContext, current_request
from .chanserv._server import AllowFunction, FrameLike, Server, Source, SourceFunction
from .link._auth import Authenticator, Identity, PeerInfo
from .link._link import Link, LinkStatistics, LinkStream
from .node._multiplexer import Multiplexer, MultiplexerStatistics
from .node._registry import Registry
from .node._registry_etcd import EtcdRegistry, RegistryError
from .wire._codec import ErrorCode, Status
from .wire._connection import Settings

__version__ = "0.1.0"

__all__ = [
    "AllowFunction",
    "AuthenticationFailed",
    "Authenticator",
    "ChanservError",
    "Client",
    "ConnectionLost",
    "DeadlineExceeded",
    "ErrorCode",
    "EtcdRegistry",
    "FrameLike",
    "Identity",
    "Link",
    "LinkStatistics",
    "LinkStream",
    "LocalProtocolError",
    "MessageTooLarge",
    "Multiplexer",
    "MultiplexerStatistics",
    "PeerInfo",
    "PermissionDenied",
    "ProtocolError",
    "Registry",
    "RegistryError",
    "RemoteError",
    "RemoteProtocolError",
    "RemoteSource",
    "RequestContext",
    "Server",
    "ServerShuttingDown",
    "ServiceNotFound",
    "Settings",
    "Source",
    "SourceChannel",
    "SourceFunction",
    "SourceMeta",
    "Status",
    "StreamCancelled",
    "StreamError",
    "current_request",
]
