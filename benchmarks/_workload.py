"""What a benchmark request asks for, and the frames every peer's server produces for it.

All three peers serve the same workload: the client posts a :class:`Shape` (JSON bytes), the
server announces ``sources`` sources, each with header ``b"<index>"`` and ``frames`` frames of
``size`` bytes. When ``only`` is set, the server announces that one source alone: gRPC makes one
call per source and the ceiling uses one connection per source in the slow-consumer scenario.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterator

import attrs

#: Name under which servers that have named services register the benchmark workload.
SERVICE = "bench"


@attrs.frozen
class Shape:
    """One request's workload."""

    sources: int
    frames: int
    size: int
    only: int | None = None

    def encode(self) -> bytes:
        """The request body."""
        return json.dumps(attrs.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def decode(cls, body: bytes | str) -> Shape:
        """Parse a request body made by :meth:`encode`."""
        fields = json.loads(body)
        return cls(
            sources=int(fields["sources"]),
            frames=int(fields["frames"]),
            size=int(fields["size"]),
            only=None if fields.get("only") is None else int(fields["only"]),
        )

    def for_source(self, index: int) -> Shape:
        """The same shape, restricted to one source."""
        return attrs.evolve(self, only=index)

    def indices(self) -> Iterator[int]:
        """The indices of the sources the server announces for this request."""
        if self.only is not None:
            yield self.only
        else:
            yield from range(self.sources)

    @property
    def announced(self) -> int:
        """How many sources the server announces for this request."""
        return 1 if self.only is not None else self.sources


def header_for(index: int) -> bytes:
    """A source's header: its index, so clients can tell which source is which."""
    return b"%d" % index


def index_of(header: bytes) -> int:
    """The source index carried by a header made by :func:`header_for`."""
    return int(header)


_PAYLOADS: dict[int, bytes] = {}


def payload(size: int) -> bytes:
    """A frame payload of ``size`` bytes, shared so servers measure transport, not allocation."""
    try:
        return _PAYLOADS[size]
    except KeyError:
        data = _PAYLOADS[size] = (bytes(range(251)) * (size // 251 + 1))[:size]
        return data


async def frames_for(shape: Shape) -> AsyncIterator[bytes]:
    """One source's frames, as an async iterable the way a chanserv source function gives them.

    Every peer's server draws its frames from this generator, so the application side costs
    the same everywhere and the comparison is between transports.
    """
    data = payload(shape.size)
    for _ in range(shape.frames):
        yield data
