"""Names and helpers the ours peer's server and client share."""

from __future__ import annotations

from typing import Any

#: Service the server's peak buffered bytes are asked for on; bodies below.
STATS_SERVICE = "bench-stats"
BEGIN = b"begin"
END = b"end"

#: Fields of ``Multiplexer.statistics()`` that count bytes held in buffers, looked for in order.
_BUFFERED_FIELDS = (
    "buffered_bytes",
    "bytes_buffered",
    "send_buffered_bytes",
    "buffered_send_bytes",
    "queued_bytes",
)


def buffered_bytes(multiplexer: Any) -> int | None:
    """Bytes the multiplexer holds in buffers, if its ``statistics()`` tells; else None."""
    statistics = getattr(multiplexer, "statistics", None)
    if statistics is None:
        return None
    snapshot = statistics()
    for field in _BUFFERED_FIELDS:
        value = getattr(snapshot, field, None)
        if isinstance(value, int):
            return value
    # Otherwise add up whatever fields speak of buffered bytes.
    names = [name for name in dir(snapshot) if "buffer" in name and not name.startswith("_")]
    values = [getattr(snapshot, name) for name in names]
    counts = [value for value in values if isinstance(value, int) and not isinstance(value, bool)]
    return sum(counts) if counts else None
