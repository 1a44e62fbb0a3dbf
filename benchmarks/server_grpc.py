"""The gRPC peer's server: grpcio's asyncio API, raw bytes, server streaming.

Each call asks for one source (``Shape.only``); the response is its header, then its frames.
Run as ``python -m benchmarks.server_grpc --port 0``; prints the bound port.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import grpc

from . import _grpc_service as service
from ._server_cli import announce, server_arguments
from ._workload import Shape, frames_for, header_for


async def post(
    request: bytes, context: grpc.aio.ServicerContext[bytes, bytes]
) -> AsyncIterator[bytes]:
    shape = Shape.decode(request)
    for index in shape.indices():
        yield header_for(index)
        async for frame in frames_for(shape):
            yield frame


async def main(port: int) -> None:
    server = grpc.aio.server(options=service.OPTIONS)
    handler = grpc.method_handlers_generic_handler(
        service.SERVICE, {service.METHOD: grpc.unary_stream_rpc_method_handler(post)}
    )
    server.add_generic_rpc_handlers((handler,))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    announce(bound)
    await server.wait_for_termination()


if __name__ == "__main__":
    asyncio.run(main(server_arguments().port))
