"""The ceiling's client: plain trio TCP, length-prefixed frames, no multiplexing.

A request's sources arrive one after another on one warm connection. The slow-consumer
scenario cannot be served that way (one slow reader would stall everything behind it), so
there the client keeps one warm connection per source and reads them concurrently, which is
what an application without multiplexing would do.

Run by the runner as ``python -m benchmarks.client_ceiling --port P --scenario S ...``.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import attrs
import trio

from . import _framing as wire
from ._pacing import trio_harness
from ._scenarios import Buffered, Fetched, Throttle, client_arguments, drive
from ._workload import Shape, index_of

HOST = "127.0.0.1"


@attrs.define
class Connection:
    stream: trio.SocketStream
    reader: wire.FrameReader
    writer: wire.FrameWriter

    @classmethod
    async def open(cls, port: int) -> Connection:
        stream = await trio.open_tcp_stream(HOST, port)
        return cls(stream, wire.FrameReader(stream), wire.FrameWriter(stream))

    async def post(self, shape: Shape) -> None:
        await self.writer.send(wire.REQUEST, shape.encode())
        await self.writer.flush()


@attrs.define
class Tally:
    frames: int = 0
    payload_bytes: int = 0


async def read_response(
    connection: Connection,
    began: float,
    done_at: list[float],
    tally: Tally,
    throttle: Throttle | None = None,
) -> None:
    """Read one response to its ``END_REQUEST``, noting when each source ended."""
    receive = connection.reader.receive
    frames = payload_bytes = 0
    index = -1
    pace = throttle.frames_per_second if throttle is not None else 0.0
    try:
        while True:
            kind, body = await receive()
            if kind == wire.FRAME:
                frames += 1
                payload_bytes += len(body)
                if pace:
                    delay = began + frames / pace - time.perf_counter()
                    if delay > 0:
                        await trio.sleep(delay)
            elif kind == wire.SOURCE:
                index = index_of(body)
            elif kind == wire.END_SOURCE:
                done_at[index] = time.perf_counter() - began
            elif kind == wire.END_REQUEST:
                return
    finally:
        tally.frames += frames
        tally.payload_bytes += payload_bytes


class CeilingClient:
    def __init__(self, port: int, scenario: str) -> None:
        self._port = port
        self._per_source = scenario == "slow"
        self._warm: Connection | None = None
        self._pool: dict[int, Connection] = {}

    @asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        self._warm = await Connection.open(self._port)
        try:
            yield
        finally:
            for connection in [self._warm, *self._pool.values()]:
                await connection.stream.aclose()
            self._pool.clear()

    async def fetch(self, shape: Shape, throttle: Throttle | None = None) -> Fetched:
        if self._per_source:
            return await self._fetch_per_source(shape, throttle)
        assert self._warm is not None and throttle is None
        done_at = [math.nan] * shape.sources
        tally = Tally()
        began = time.perf_counter()
        await self._warm.post(shape)
        await read_response(self._warm, began, done_at, tally)
        return Fetched(tally.frames, tally.payload_bytes, time.perf_counter() - began, done_at)

    async def _fetch_per_source(self, shape: Shape, throttle: Throttle | None) -> Fetched:
        for index in range(shape.sources):
            if index not in self._pool:
                self._pool[index] = await Connection.open(self._port)
        done_at = [math.nan] * shape.sources
        tally = Tally()
        slow = throttle.index if throttle is not None else -1
        began = time.perf_counter()

        async def one(index: int) -> None:
            connection = self._pool[index]
            await connection.post(shape.for_source(index))
            await read_response(
                connection, began, done_at, tally, throttle if index == slow else None
            )

        async with trio.open_nursery() as outer:
            slow_scope = trio.CancelScope()
            if throttle is not None:

                async def slow_reader() -> None:
                    with slow_scope:
                        await one(slow)

                outer.start_soon(slow_reader)
            async with trio.open_nursery() as nursery:
                for index in range(shape.sources):
                    if index != slow:
                        nursery.start_soon(one, index)
            elapsed = time.perf_counter() - began
            slow_scope.cancel()
        if throttle is not None and math.isnan(done_at[slow]):
            # Abandoned mid-response: that connection's stream position is unknown.
            await self._pool.pop(slow).stream.aclose()
        return Fetched(tally.frames, tally.payload_bytes, elapsed, done_at)

    async def cold_fetch(self, shape: Shape) -> float:
        began = time.perf_counter()
        connection = await Connection.open(self._port)
        try:
            await connection.post(shape)
            await read_response(connection, began, [math.nan] * shape.sources, Tally())
            return time.perf_counter() - began
        finally:
            await connection.stream.aclose()

    async def begin_sampling(self) -> None:
        """The kernel holds the ceiling's buffers; there is nothing to sample."""

    async def end_sampling(self) -> Buffered:
        return Buffered()


if __name__ == "__main__":
    arguments = client_arguments()
    trio.run(
        drive,
        CeilingClient(arguments.port, arguments.scenario),
        arguments.scenario,
        arguments.settings,
        trio_harness(arguments.paced),
    )
