"""The ceiling's server: plain trio TCP, length-prefixed frames, no multiplexing.

Run as ``python -m benchmarks.server_ceiling --port 0``; prints the bound port.
"""

from __future__ import annotations

from functools import partial

import trio

from . import _framing as wire
from ._server_cli import announce, server_arguments
from ._workload import Shape, frames_for, header_for


async def serve_connection(stream: trio.SocketStream) -> None:
    """Answer requests on one connection until the client leaves."""
    reader = wire.FrameReader(stream)
    writer = wire.FrameWriter(stream)
    try:
        while True:
            try:
                _kind, body = await reader.receive()
            except EOFError:
                return
            shape = Shape.decode(body)
            for index in shape.indices():
                await writer.send(wire.SOURCE, header_for(index))
                async for frame in frames_for(shape):
                    await writer.send(wire.FRAME, frame)
                await writer.send(wire.END_SOURCE)
            await writer.send(wire.END_REQUEST)
            await writer.flush()
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        # A client abandoned the rest of a response (the slow consumer does).
        return
    finally:
        await stream.aclose()


async def main(port: int) -> None:
    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(
            partial(trio.serve_tcp, serve_connection, port, host="127.0.0.1")
        )
        announce(listeners[0].socket.getsockname()[1])


if __name__ == "__main__":
    trio.run(main, server_arguments().port)
