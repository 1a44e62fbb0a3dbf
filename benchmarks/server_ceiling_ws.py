"""The WebSocket ceiling's server: trio-websocket, raw binary messages, no multiplexing.

Run as ``python -m benchmarks.server_ceiling_ws --port 0``; prints the bound port.
"""

from __future__ import annotations

from functools import partial

import trio
import trio_websocket

from . import _websocket_ceiling as wire
from ._server_cli import announce, server_arguments
from ._workload import Shape, frames_for


async def serve_connection(request: trio_websocket.WebSocketRequest) -> None:
    """Answer requests on one WebSocket until the client leaves."""
    websocket = await request.accept()
    try:
        while True:
            body = await websocket.get_message()
            shape = Shape.decode(body)
            for index in shape.indices():
                await websocket.send_message(f"{wire.SOURCE}{index}")
                async for frame in frames_for(shape):
                    await websocket.send_message(frame)
                await websocket.send_message(wire.END_SOURCE)
            await websocket.send_message(wire.DONE)
    except trio_websocket.ConnectionClosed:
        return


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        server = await nursery.start(
            partial(
                trio_websocket.serve_websocket,
                serve_connection,
                "127.0.0.1",
                port,
                None,
                max_message_size=wire.MAX_MESSAGE,
                receive_buffer_size=wire.RECEIVE_BUFFER,
                message_queue_size=wire.MESSAGE_QUEUE,
            )
        )
        announce(server.port)


if __name__ == "__main__":
    trio.run(main, server_arguments().port)
