"""The pyzmq peer's server: pyzmq's asyncio API, one ROUTER socket on ``tcp://127.0.0.1``.

Each request is answered in its own task, and each of its sources is produced in its own task
(sources may interleave; see ``_zmq_service``), from the same workload generator as every
other peer. ``ROUTER_MANDATORY`` makes a full queue wait instead of dropping messages.
Run as ``python -m benchmarks.server_zmq --port 0``; prints the bound port.
"""

from __future__ import annotations

import asyncio
import sys

import zmq
import zmq.asyncio

from . import _zmq_service as wire
from ._server_cli import announce, server_arguments
from ._workload import Shape, frames_for, header_for


async def answer(socket: zmq.asyncio.Socket, identity: bytes, request: bytes, body: bytes) -> None:
    """Send every source of one request, then the request's end."""
    shape = Shape.decode(body)
    (request_id,) = wire.REQUEST_ID.unpack(request)
    send = socket.send_multipart
    head = wire.HEAD.pack

    async def source(index: int) -> None:
        await send([identity, head(request_id, index, wire.SOURCE), header_for(index)])
        frame_head = head(request_id, index, wire.FRAME)
        async for frame in frames_for(shape):
            await send([identity, frame_head, frame], copy=False)
        await send([identity, head(request_id, index, wire.END_SOURCE)])

    try:
        await asyncio.gather(*(source(index) for index in shape.indices()))
        await send([identity, head(request_id, 0, wire.END_REQUEST)])
    except zmq.ZMQError as error:
        if error.errno != zmq.EHOSTUNREACH:
            raise
        # The client went away before the answer was through.


def report(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        error = task.exception()
        print(f"server_zmq: {type(error).__name__}: {error}", file=sys.stderr)


async def main(port: int) -> None:
    context = zmq.asyncio.Context()
    socket = context.socket(zmq.ROUTER)
    socket.setsockopt(zmq.ROUTER_MANDATORY, 1)
    socket.setsockopt(zmq.LINGER, 0)
    socket.bind(f"tcp://127.0.0.1:{port or '*'}")
    endpoint = socket.getsockopt_string(zmq.LAST_ENDPOINT)
    announce(
        int(endpoint.rsplit(":", 1)[1]), {"pyzmq": zmq.__version__, "libzmq": zmq.zmq_version()}
    )
    answering: set[asyncio.Task[None]] = set()
    try:
        while True:
            identity, request, body = await socket.recv_multipart()
            task = asyncio.create_task(answer(socket, identity, request, body))
            answering.add(task)
            task.add_done_callback(answering.discard)
            task.add_done_callback(report)
    finally:
        socket.close()
        context.term()


if __name__ == "__main__":
    asyncio.run(main(server_arguments().port))
