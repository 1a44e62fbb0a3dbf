"""Our server: chanserv_trio's public API, serving the benchmark workload.

Registers ``bench`` (the workload) and ``bench-stats`` (begin/end sampling the multiplexer's
buffered bytes, where ``statistics()`` tells them).
Run as ``python -m benchmarks.server_ours --port 0 [--scheme ws] [--resume-timeout S]
[--resume-buffer-size B]``; prints the bound port. With ``--resume-timeout`` its multiplexer
offers resumption.
"""

from __future__ import annotations

import json
import sys
from collections.abc import AsyncIterator
from urllib.parse import urlsplit

import trio

import chanserv_trio as cs

from . import _ours_service as ours_service
from ._server_cli import announce, server_arguments
from ._workload import SERVICE, Shape, frames_for, header_for


async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
    shape = Shape.decode(request)
    for index in shape.indices():
        yield cs.Source(header=header_for(index), frames=frames_for(shape))


async def no_frames() -> AsyncIterator[bytes]:
    return
    yield b""  # pragma: no cover - makes this an async generator


class StatsService:
    """Samples the multiplexer's peak buffered bytes between ``begin`` and ``end`` requests."""

    def __init__(self, multiplexer: cs.Multiplexer, nursery: trio.Nursery) -> None:
        self._sampler = ours_service.PeakSampler(multiplexer)
        self._nursery = nursery
        self._scope: trio.CancelScope | None = None

    async def _sample(self, scope: trio.CancelScope) -> None:
        with scope:
            await self._sampler.sample()

    async def source_fn(self, request: bytes) -> AsyncIterator[cs.Source]:
        if self._scope is not None:
            self._scope.cancel()
            self._scope = None
        if request == ours_service.BEGIN:
            self._scope = trio.CancelScope()
            self._nursery.start_soon(self._sample, self._scope)
            header = b"{}"
        else:
            header = json.dumps({"peak_buffered_bytes": self._sampler.peak}).encode()
        yield cs.Source(header=header, frames=no_frames())


def report(error: BaseException) -> None:
    print(f"server_ours: {type(error).__name__}: {error}", file=sys.stderr)


async def main(
    port: int,
    scheme: str,
    resume_timeout: float | None = None,
    resume_buffer_size: int | None = None,
) -> None:
    options = ours_service.multiplexer_options(resume_timeout, resume_buffer_size)
    async with cs.Multiplexer(**options) as multiplexer:
        address = await multiplexer.listen(
            f"{scheme}://127.0.0.1:{port}{ours_service.PATHS[scheme]}"
        )
        server = cs.Server(multiplexer, on_error=report)
        async with trio.open_nursery() as nursery:
            sampling = StatsService(multiplexer, nursery)
            await server.listen_and_serve(SERVICE, source_fn)
            await server.listen_and_serve(ours_service.STATS_SERVICE, sampling.source_fn)
            bound = urlsplit(str(address)).port
            assert bound is not None, f"no port in {address!r}"
            announce(bound, ours_service.about())
            await trio.sleep_forever()


if __name__ == "__main__":
    arguments = server_arguments()
    trio.run(
        main,
        arguments.port,
        arguments.scheme,
        arguments.resume_timeout,
        arguments.resume_buffer_size,
    )
