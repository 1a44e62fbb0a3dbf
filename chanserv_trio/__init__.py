"""chanserv_trio: stream a stream of streams over one connection, with Trio.

A client posts a request to a named service; the server answers with a stream of
sources, each with a header and its own stream of frames, all multiplexed with flow
control and cancellation over a single link.
"""

from __future__ import annotations

from ._chanserv_client import Client, RemoteSource, SourceChannel, SourceMeta
from ._chanserv_server import FrameLike, Server, Source, SourceFunction
from ._driver import Link, LinkStatistics, LinkStream
from ._errors import (
    ChanservError,
    ConnectionLost,
    DeadlineExceeded,
    LocalProtocolError,
    MessageTooLarge,
    ProtocolError,
    RemoteError,
    RemoteProtocolError,
    ServerShuttingDown,
    ServiceNotFound,
    StreamCancelled,
    StreamError,
)
from ._multiplexer import Multiplexer, MultiplexerStatistics
from ._registry import Registry
from ._registry_etcd import EtcdRegistry, RegistryError
from ._wire_codec import ErrorCode, Status
from ._wire_connection import Settings

__version__ = "0.1.0"

__all__ = [
    "ChanservError",
    "Client",
    "ConnectionLost",
    "DeadlineExceeded",
    "ErrorCode",
    "EtcdRegistry",
    "FrameLike",
    "Link",
    "LinkStatistics",
    "LinkStream",
    "LocalProtocolError",
    "MessageTooLarge",
    "Multiplexer",
    "MultiplexerStatistics",
    "ProtocolError",
    "Registry",
    "RegistryError",
    "RemoteError",
    "RemoteProtocolError",
    "RemoteSource",
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
]
