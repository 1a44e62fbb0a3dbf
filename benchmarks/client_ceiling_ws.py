"""The WebSocket ceiling's client: trio-websocket, raw binary messages, no multiplexing;
a request's sources arrive one after another on one warm WebSocket.

Run by the runner as ``python -m benchmarks.client_ceiling_ws --port P --scenario S ...``.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import AsyncIterator

import trio
import trio_websocket

from . import _websocket_ceiling as wire
from ._pacing import trio_harness
from ._scenarios import Buffered, Fetched, Throttle, client_arguments, drive
from ._workload import Shape


def _open(url: str) -> contextlib.AbstractAsyncContextManager[trio_websocket.WebSocketConnection]:
    return trio_websocket.open_websocket_url(
        url,
        max_message_size=wire.MAX_MESSAGE,
        receive_buffer_size=wire.RECEIVE_BUFFER,
        message_queue_size=wire.MESSAGE_QUEUE,
    )


async def read_response(
    websocket: trio_websocket.WebSocketConnection, shape: Shape, began: float
) -> Fetched:
    """Post ``shape`` and read its response to the end."""
    await websocket.send_message(shape.encode())
    done_at = [math.nan] * shape.sources
    frames = payload_bytes = 0
    index = -1
    receive = websocket.get_message
    while True:
        message = await receive()
        if isinstance(message, bytes):
            frames += 1
            payload_bytes += len(message)
        elif message.startswith(wire.SOURCE):
            index = int(message[1:])
        elif message == wire.END_SOURCE:
            done_at[index] = time.perf_counter() - began
        elif message == wire.DONE:
            return Fetched(frames, payload_bytes, time.perf_counter() - began, done_at)


class WebSocketCeilingClient:
    def __init__(self, port: int) -> None:
        self._url = f"ws://127.0.0.1:{port}{wire.PATH}"
        self._websocket: trio_websocket.WebSocketConnection | None = None

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        async with _open(self._url) as websocket:
            self._websocket = websocket
            yield

    async def fetch(self, shape: Shape, throttle: Throttle | None = None) -> Fetched:
        assert self._websocket is not None
        if throttle is not None:
            raise NotImplementedError("the WebSocket ceiling runs flood and heavy only")
        return await read_response(self._websocket, shape, time.perf_counter())

    async def cold_fetch(self, shape: Shape) -> float:
        began = time.perf_counter()
        async with _open(self._url) as websocket:
            await read_response(websocket, shape, began)
            return time.perf_counter() - began

    async def begin_sampling(self) -> None:
        """The kernel and trio-websocket hold the buffers; there is nothing to sample."""

    async def end_sampling(self) -> Buffered:
        return Buffered()


if __name__ == "__main__":
    arguments = client_arguments()
    trio.run(
        drive,
        WebSocketCeilingClient(arguments.port),
        arguments.scenario,
        arguments.settings,
        trio_harness(arguments.paced),
    )
