"""chanserv_trio: stream a stream of streams over one connection, with Trio.

A client posts a request to a named service; the server answers with a stream of
sources, each with a header and its own stream of frames, all multiplexed with flow
control and cancellation over a single link.
"""

from __future__ import annotations

import logging

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
from .chanserv._metrics import StatisticsCollector, serve_metrics
from .chanserv._server import AllowFunction, FrameLike, Server, Source, SourceFunction
from .chanserv._statistics import ClientStatistics, ServerStatistics, ServiceStatistics
from .chanserv._stats import fetch_stats, open_stats, serve_stats
from .chanserv._stats import snapshot as stats_snapshot
from .link._auth import Authenticator, Identity, PeerInfo
from .link._link import Link, LinkStatistics, LinkStream
from .node._multiplexer import Multiplexer, MultiplexerStatistics, MultiplexerTotals
from .node._registry import Registry
from .node._registry_etcd import EtcdRegistry, RegistryError
from .wire._codec import ErrorCode, Status
from .wire._connection import Settings

#: The package's version, in this one place (pyproject.toml reads it from here).
__version__ = "0.1.0"

# The library logs under "chanserv_trio.*" and prints nothing unless the application
# configures logging (without this, Python's last-resort handler would print warnings).
logging.getLogger("chanserv_trio").addHandler(logging.NullHandler())

__all__ = [
    "AllowFunction",
    "AuthenticationFailed",
    "Authenticator",
    "ChanservError",
    "Client",
    "ClientStatistics",
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
    "MultiplexerTotals",
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
    "ServerStatistics",
    "ServiceNotFound",
    "ServiceStatistics",
    "Settings",
    "Source",
    "SourceChannel",
    "SourceFunction",
    "SourceMeta",
    "StatisticsCollector",
    "Status",
    "StreamCancelled",
    "StreamError",
    "current_request",
    "fetch_stats",
    "open_stats",
    "serve_metrics",
    "serve_stats",
    "stats_snapshot",
]
