"""Names and helpers the ours peer's server and client share."""

from __future__ import annotations

from typing import Any

import trio

from ._trees import PACKAGE, imported_package

#: What follows host:port in the URL, per scheme.
PATHS = {"tcp": "", "ws": "/chanserv"}
#: Service the server's peak buffered bytes are asked for on; bodies below.
STATS_SERVICE = "bench-stats"
BEGIN = b"begin"
END = b"end"


def about() -> dict[str, str]:
    """Where this process's chanserv_trio came from (the runner checks it per peer)."""
    return {PACKAGE: imported_package()}


def multiplexer_options(
    resume_timeout: float | None, resume_buffer_size: int | None = None
) -> dict[str, Any]:
    """The ``Multiplexer`` arguments of a benchmark process: the resumption ones only when
    given (a ``--baseline`` tree may predate them)."""
    options: dict[str, Any] = {}
    if resume_timeout is not None:
        options["resume_timeout"] = resume_timeout
    if resume_buffer_size is not None:
        options["resume_buffer_size"] = resume_buffer_size
    return options


#: Fields of ``Multiplexer.statistics()`` that count bytes the library holds: received and not
#: yet consumed, and queued for the transport. Any that exist are added up.
_HELD_FIELDS = ("bytes_buffered", "bytes_queued")


def buffered_bytes(multiplexer: Any) -> int | None:
    """Bytes the multiplexer holds in buffers, if its ``statistics()`` tells; else None."""
    statistics = getattr(multiplexer, "statistics", None)
    if statistics is None:
        return None
    snapshot = statistics()
    values = [getattr(snapshot, field, None) for field in _HELD_FIELDS]
    counts = [value for value in values if isinstance(value, int)]
    return sum(counts) if counts else None


class PeakSampler:
    """Tracks the peak of :func:`buffered_bytes` while :meth:`sample` runs."""

    #: Seconds between two looks.
    EVERY = 0.001

    def __init__(self, multiplexer: Any) -> None:
        self._multiplexer = multiplexer
        self.peak: int | None = None

    async def sample(self) -> None:
        """Look every :attr:`EVERY` seconds until cancelled (or there is nothing to see)."""
        self.peak = None
        while True:
            value = buffered_bytes(self._multiplexer)
            if value is None:
                return
            self.peak = value if self.peak is None else max(self.peak, value)
            await trio.sleep(self.EVERY)
