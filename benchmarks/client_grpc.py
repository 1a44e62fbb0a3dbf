"""The gRPC peer's client: grpcio's asyncio API, raw bytes, one call per source on one channel.

The client knows from the shape it posts how many sources there are, so it makes one
unary-stream call per source, at most ``MAX_CONCURRENT_CALLS`` at once.

Run by the runner as ``python -m benchmarks.client_grpc --port P --scenario S ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator

import grpc

from . import _grpc_service as service
from ._pacing import asyncio_harness
from ._scenarios import Buffered, Fetched, Throttle, client_arguments, drive
from ._workload import Shape, index_of

TARGET = "127.0.0.1:{port}"


class GrpcClient:
    def __init__(self, port: int) -> None:
        self._target = TARGET.format(port=port)
        self._channel: grpc.aio.Channel | None = None

    @staticmethod
    async def _open(target: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(target, options=service.OPTIONS)
        await channel.channel_ready()
        return channel

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        self._channel = await self._open(self._target)
        try:
            yield
        finally:
            await self._channel.close()

    async def fetch(self, shape: Shape, throttle: Throttle | None = None) -> Fetched:
        assert self._channel is not None
        return await self._fetch(self._channel, shape, throttle)

    async def _fetch(
        self, channel: grpc.aio.Channel, shape: Shape, throttle: Throttle | None
    ) -> Fetched:
        call_for: grpc.aio.UnaryStreamMultiCallable[bytes, bytes] = channel.unary_stream(
            service.PATH
        )
        done_at = [math.nan] * shape.sources
        frames = payload_bytes = 0
        slow = throttle.index if throttle is not None else -1
        gate = asyncio.Semaphore(service.MAX_CONCURRENT_CALLS)
        began = time.perf_counter()

        async def one(index: int) -> None:
            nonlocal frames, payload_bytes
            async with gate:
                call = call_for(shape.for_source(index).encode())
                count = size = 0
                pace = throttle.frames_per_second if index == slow and throttle else 0.0
                try:
                    header = True
                    async for message in call:
                        if header:
                            assert index_of(message) == index
                            header = False
                            continue
                        count += 1
                        size += len(message)
                        if pace:
                            delay = began + count / pace - time.perf_counter()
                            if delay > 0:
                                await asyncio.sleep(delay)
                    done_at[index] = time.perf_counter() - began
                finally:
                    call.cancel()
                    frames += count
                    payload_bytes += size

        slow_task = asyncio.create_task(one(slow)) if throttle is not None else None
        await asyncio.gather(*(one(index) for index in range(shape.sources) if index != slow))
        elapsed = time.perf_counter() - began
        if slow_task is not None:
            slow_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await slow_task
        return Fetched(frames, payload_bytes, elapsed, done_at)

    async def cold_fetch(self, shape: Shape) -> float:
        began = time.perf_counter()
        channel = grpc.aio.insecure_channel(self._target, options=service.OPTIONS)
        try:
            await self._fetch(channel, shape, None)
            return time.perf_counter() - began
        finally:
            await channel.close()

    async def begin_sampling(self) -> None:
        """grpcio does not say how much it buffers; there is nothing to sample."""

    async def end_sampling(self) -> Buffered:
        return Buffered()


if __name__ == "__main__":
    arguments = client_arguments()
    asyncio.run(
        drive(
            GrpcClient(arguments.port),
            arguments.scenario,
            arguments.settings,
            asyncio_harness(arguments.paced),
        )
    )
