"""Our client: chanserv_trio's public API, all sources of a request over one connection.

Run by the runner as ``python -m benchmarks.client_ours --port P --scenario S ...``.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import AsyncIterator

import attrs
import trio

import chanserv_trio as cs

from . import _ours_service as ours_service
from ._pacing import trio_harness
from ._scenarios import Buffered, Fetched, Throttle, client_arguments, drive, emit_json
from ._workload import SERVICE, Shape, index_of

DIAL_TIMEOUT = 5.0


@attrs.define
class Tally:
    frames: int = 0
    payload_bytes: int = 0


async def fetch_with(client: cs.Client, shape: Shape, throttle: Throttle | None) -> Fetched:
    """Post ``shape`` and consume every source concurrently, each in its own task."""
    done_at = [math.nan] * shape.sources
    tally = Tally()
    slow = throttle.index if throttle is not None else -1
    fast_left = shape.announced - (1 if throttle is not None else 0)
    fast_done = trio.Event()
    began = time.perf_counter()

    async def consume(source: cs.RemoteSource, index: int) -> None:
        nonlocal fast_left
        frames = payload_bytes = 0
        pace = throttle.frames_per_second if index == slow and throttle is not None else 0.0
        try:
            async for frame in source:
                frames += 1
                payload_bytes += len(frame)
                if pace:
                    delay = began + frames / pace - time.perf_counter()
                    if delay > 0:
                        await trio.sleep(delay)
        finally:
            tally.frames += frames
            tally.payload_bytes += payload_bytes
        done_at[index] = time.perf_counter() - began
        if index != slow:
            fast_left -= 1
            if fast_left == 0:
                fast_done.set()

    async with client.lookup_and_post(SERVICE, shape.encode()) as sources:
        async with trio.open_nursery() as nursery:

            async def accept() -> None:
                async for source in sources:
                    nursery.start_soon(consume, source, index_of(source.header))

            nursery.start_soon(accept)
            if throttle is not None:
                # The slow source is abandoned once the others are through; leaving the
                # request cancels it on the server.
                await fast_done.wait()
                elapsed = time.perf_counter() - began
                nursery.cancel_scope.cancel()
        if throttle is None:
            elapsed = time.perf_counter() - began
    return Fetched(tally.frames, tally.payload_bytes, elapsed, done_at)


class OursClient:
    def __init__(
        self,
        port: int,
        scheme: str = "tcp",
        resume_timeout: float | None = None,
        resume_buffer_size: int | None = None,
    ) -> None:
        self._url = f"{scheme}://127.0.0.1:{port}{ours_service.PATHS[scheme]}"
        #: With a value, the multiplexers ask for resumption (the server must offer it too).
        self._resume_timeout = resume_timeout
        # Passed only when set: a --baseline tree may predate the argument.
        self._options = ours_service.multiplexer_options(resume_timeout, resume_buffer_size)
        self._client: cs.Client | None = None
        self._nursery: trio.Nursery | None = None
        self._sampler: ours_service.PeakSampler | None = None
        self._sampling = trio.CancelScope()

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        async with (
            cs.Multiplexer(**self._options) as multiplexer,
            trio.open_nursery() as nursery,
        ):
            link = await multiplexer.join(self._url)
            asked = self._resume_timeout is not None
            resumable = getattr(link.conn, "resumable", False)
            if resumable != asked:
                raise RuntimeError(
                    f"resumption {'asked for' if asked else 'off'} here, but the link's is "
                    f"{'on' if resumable else 'off'} (does the server agree?)"
                )
            self._client = cs.Client(multiplexer, dial_timeout=DIAL_TIMEOUT)
            self._sampler = ours_service.PeakSampler(multiplexer)
            self._nursery = nursery
            try:
                yield
            finally:
                self._sampling.cancel()

    async def fetch(self, shape: Shape, throttle: Throttle | None = None) -> Fetched:
        assert self._client is not None
        return await fetch_with(self._client, shape, throttle)

    async def cold_fetch(self, shape: Shape) -> float:
        began = time.perf_counter()
        async with cs.Multiplexer(**self._options) as multiplexer:
            await multiplexer.join(self._url)
            await fetch_with(cs.Client(multiplexer, dial_timeout=DIAL_TIMEOUT), shape, None)
            return time.perf_counter() - began

    async def _ask_stats(self, body: bytes) -> bytes:
        assert self._client is not None
        headers = []
        async with self._client.lookup_and_post(ours_service.STATS_SERVICE, body) as sources:
            async for source in sources:
                headers.append(source.header)
                async for _frame in source:
                    pass
        return headers[0]

    async def _sample(self) -> None:
        assert self._sampler is not None
        with self._sampling:
            await self._sampler.sample()

    async def begin_sampling(self) -> None:
        assert self._nursery is not None
        await self._ask_stats(ours_service.BEGIN)
        self._sampling = trio.CancelScope()
        self._nursery.start_soon(self._sample)

    async def end_sampling(self) -> Buffered:
        assert self._sampler is not None
        self._sampling.cancel()
        peak = json.loads(await self._ask_stats(ours_service.END))["peak_buffered_bytes"]
        return Buffered(server=None if peak is None else int(peak), client=self._sampler.peak)


if __name__ == "__main__":
    arguments = client_arguments()
    emit_json({"event": "about", "about": ours_service.about()})
    trio.run(
        drive,
        OursClient(
            arguments.port,
            arguments.scheme,
            arguments.resume_timeout,
            arguments.resume_buffer_size,
        ),
        arguments.scenario,
        arguments.settings,
        trio_harness(arguments.paced),
    )
