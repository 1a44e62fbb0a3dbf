"""What a :class:`~chanserv_trio.Server` and a :class:`~chanserv_trio.Client` count.

Both count the same things per service (requests by outcome, sources, frames and their
bytes, errors) in small mutable counters that the hot paths bump, and hand out frozen
snapshots (:class:`ServerStatistics`, :class:`ClientStatistics`) built on demand.
"""

from __future__ import annotations

from typing import Final, TypeVar

import attrs
import trio

from .._errors import (
    ChanservError,
    ConnectionLost,
    DeadlineExceeded,
    RemoteError,
    ServerShuttingDown,
    ServiceNotFound,
    StreamCancelled,
)

__all__ = [
    "OUTCOMES",
    "ClientStatistics",
    "ServerStatistics",
    "ServiceCounters",
    "ServiceStatistics",
    "outcome_of",
]

#: How a request can end, as counted in :attr:`ServiceStatistics.outcomes`:
#: ``ok`` (every source ended normally), ``remote_error`` (a source function or frames
#: iterable raised: :class:`~chanserv_trio.RemoteError` on the client),
#: ``cancelled`` (given up before its end: a client that left the block early or
#: closed one of the sources, a cancel scope, :class:`~chanserv_trio.StreamCancelled`),
#: ``deadline_exceeded``, ``not_found`` (:class:`~chanserv_trio.ServiceNotFound`, only
#: on a client), ``shutting_down`` (:class:`~chanserv_trio.ServerShuttingDown`),
#: ``connection_lost`` (the link died or broke the protocol) and ``error`` (anything
#: else: a malformed request, a header over the peer's limit, ...).
OUTCOMES: Final = (
    "ok",
    "remote_error",
    "cancelled",
    "deadline_exceeded",
    "not_found",
    "shutting_down",
    "connection_lost",
    "error",
)


def outcome_of(exc: BaseException) -> str:
    """The outcome (one of :data:`OUTCOMES`) a request that failed with ``exc`` counts as."""
    if isinstance(exc, RemoteError):
        return "remote_error"
    if isinstance(exc, StreamCancelled | trio.Cancelled):
        return "cancelled"
    if isinstance(exc, DeadlineExceeded | trio.TooSlowError):
        return "deadline_exceeded"
    if isinstance(exc, ServiceNotFound):
        return "not_found"
    if isinstance(exc, ServerShuttingDown):
        return "shutting_down"
    if isinstance(exc, ConnectionLost):
        return "connection_lost"
    if isinstance(exc, ChanservError):
        return "error"
    return "error"


@attrs.define(slots=True)
class ServiceCounters:
    """The live counters of one service (mutable; snapshots are :class:`ServiceStatistics`)."""

    requests: int = 0
    active: int = 0
    sources: int = 0
    frames: int = 0
    bytes: int = 0
    errors: int = 0
    outcomes: dict[str, int] = attrs.field(factory=dict)

    def finished(self, outcome: str) -> None:
        """One request ended with ``outcome``."""
        self.active -= 1
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def snapshot(self) -> ServiceStatistics:
        return ServiceStatistics(
            requests=self.requests,
            active=self.active,
            outcomes={name: self.outcomes.get(name, 0) for name in OUTCOMES},
            sources=self.sources,
            frames=self.frames,
            bytes=self.bytes,
            errors=self.errors,
        )


@attrs.frozen
class ServiceStatistics:
    """A snapshot of one service's counters, on a server or a client (cumulative since
    the server or client was made, except :attr:`active`)."""

    #: Requests started (received by a server, posted by a client).
    requests: int
    #: Requests still running.
    active: int
    #: Finished requests by outcome: every name of :data:`OUTCOMES` is a key (a fresh
    #: dict in each snapshot).
    outcomes: dict[str, int]
    #: Sources announced (by a server) or received (by a client).
    sources: int
    #: Frames sent (server) or received (client), and their payload bytes.
    frames: int
    bytes: int
    #: Errors reported to ``on_error`` (counted whether or not one is set).
    errors: int


def _sum(services: dict[str, ServiceStatistics], field: str) -> int:
    return sum(getattr(s, field) for s in services.values())


T = TypeVar("T", bound="_Totals")


@attrs.frozen
class _Totals:
    #: Requests started, still running, sources, frames and their bytes, and errors
    #: reported, over every service.
    requests: int
    active_requests: int
    sources: int
    frames: int
    bytes: int
    errors: int
    #: Finished requests by outcome (every name of :data:`OUTCOMES`), over every service.
    outcomes: dict[str, int]
    #: Service name -> its counters (services withdrawn stay, with what they counted).
    services: dict[str, ServiceStatistics]

    @classmethod
    def of(cls: type[T], services: dict[str, ServiceStatistics]) -> T:
        """The totals over ``services``."""
        return cls(
            requests=_sum(services, "requests"),
            active_requests=_sum(services, "active"),
            sources=_sum(services, "sources"),
            frames=_sum(services, "frames"),
            bytes=_sum(services, "bytes"),
            errors=_sum(services, "errors"),
            outcomes={name: sum(s.outcomes[name] for s in services.values()) for name in OUTCOMES},
            services=services,
        )


@attrs.frozen
class ServerStatistics(_Totals):
    """A snapshot of a :class:`~chanserv_trio.Server`'s counters: totals over its
    services (requests received, sources announced, frames and bytes sent, errors
    reported to ``on_error``), and each service's own in :attr:`services`."""


@attrs.frozen
class ClientStatistics(_Totals):
    """A snapshot of a :class:`~chanserv_trio.Client`'s counters: totals over the
    services it posted to (requests posted, sources and frames received with their
    bytes, errors reported to ``on_error``), and each service's own in
    :attr:`services`."""
