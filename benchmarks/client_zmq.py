"""The pyzmq peer's client: pyzmq's asyncio API, one DEALER socket on ``tcp://127.0.0.1``.

A request goes out as one message; the client then reads the socket in one task until the
request's end, telling the sources apart by the source id each message carries (see
``_zmq_service``) and counting every frame and its length. The cold figure is a new DEALER
socket on the process's context (its I/O thread is already running), its connection and its
first request.

Run by the runner as ``python -m benchmarks.client_zmq --port P --scenario S ...``.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator

import zmq
import zmq.asyncio

from . import _zmq_service as wire
from ._pacing import asyncio_harness
from ._scenarios import Buffered, Fetched, Throttle, client_arguments, drive, emit_json
from ._workload import Shape, index_of


class ZmqClient:
    def __init__(self, port: int) -> None:
        self._endpoint = f"tcp://127.0.0.1:{port}"
        self._context: zmq.asyncio.Context | None = None
        self._socket: zmq.asyncio.Socket | None = None
        self._last_request = 0

    def _open(self) -> zmq.asyncio.Socket:
        assert self._context is not None
        socket = self._context.socket(zmq.DEALER)
        socket.setsockopt(zmq.LINGER, 0)
        socket.connect(self._endpoint)
        return socket

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        self._context = zmq.asyncio.Context()
        try:
            self._socket = self._open()
            try:
                yield
            finally:
                self._socket.close()
        finally:
            self._context.term()

    async def fetch(self, shape: Shape, throttle: Throttle | None = None) -> Fetched:
        assert self._socket is not None
        if throttle is not None:
            raise NotImplementedError(wire.NO_SLOW)
        return await self._fetch(self._socket, shape)

    async def _fetch(self, socket: zmq.asyncio.Socket, shape: Shape) -> Fetched:
        self._last_request = request_id = (self._last_request + 1) % 2**32
        done_at = [math.nan] * shape.sources
        opened = ended = frames = payload_bytes = 0
        receive = socket.recv_multipart
        unpack = wire.HEAD.unpack
        began = time.perf_counter()
        await socket.send_multipart([wire.REQUEST_ID.pack(request_id), shape.encode()])
        while True:
            parts = await receive()
            answered, index, kind = unpack(parts[0])
            if answered != request_id:
                raise AssertionError(f"a message of request {answered} during {request_id}")
            if kind == wire.FRAME:
                frames += 1
                payload_bytes += len(parts[1])
            elif kind == wire.SOURCE:
                if index_of(parts[1]) != index:
                    raise AssertionError(f"source {index} has header {parts[1]!r}")
                opened += 1
            elif kind == wire.END_SOURCE:
                done_at[index] = time.perf_counter() - began
                ended += 1
            elif kind == wire.END_REQUEST:
                break
        elapsed = time.perf_counter() - began
        if opened != shape.announced or ended != shape.announced:
            raise AssertionError(
                f"{shape.announced} sources asked for, {opened} opened, {ended} ended"
            )
        return Fetched(frames, payload_bytes, elapsed, done_at)

    async def cold_fetch(self, shape: Shape) -> float:
        began = time.perf_counter()
        socket = self._open()
        try:
            await self._fetch(socket, shape)
            return time.perf_counter() - began
        finally:
            socket.close()

    async def begin_sampling(self) -> None:
        """Not reached: the slow scenario is not run against zmq."""

    async def end_sampling(self) -> Buffered:
        return Buffered()


if __name__ == "__main__":
    arguments = client_arguments()
    if arguments.scenario == "slow":
        raise SystemExit(f"client_zmq: slow is not run: {wire.NO_SLOW}")
    emit_json({"event": "about", "about": {"pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()}})
    asyncio.run(
        drive(
            ZmqClient(arguments.port),
            arguments.scenario,
            arguments.settings,
            asyncio_harness(arguments.paced),
        )
    )
