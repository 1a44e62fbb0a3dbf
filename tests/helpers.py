"""Building blocks shared by the driver and chanserv tests (not fixtures: plain helpers)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from functools import partial
from typing import Protocol

import attrs
import trio
import trio.testing

import chanserv_trio as cs
from chanserv_trio.link._link import StreamHandler
from chanserv_trio.link._options import LinkOptions


@attrs.define
class LinkPair:
    """Two linked :class:`cs.Link` over an in-memory stream pair.

    ``left`` dialed (odd stream ids), ``right`` accepted (even ids); each serves the
    handlers it was given. The transports are exposed so a test can break them.
    """

    left: cs.Link
    right: cs.Link
    left_transport: trio.StapledStream[
        trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream
    ]
    right_transport: trio.StapledStream[
        trio.testing.MemorySendStream, trio.testing.MemoryReceiveStream
    ]
    nursery: trio.Nursery


@asynccontextmanager
async def link_pair(
    *,
    left_handlers: Mapping[str, StreamHandler] | None = None,
    right_handlers: Mapping[str, StreamHandler] | None = None,
    left_settings: cs.Settings | None = None,
    right_settings: cs.Settings | None = None,
    on_error: Callable[[BaseException], object] | None = None,
) -> AsyncIterator[LinkPair]:
    """Run two links over ``trio.testing.memory_stream_pair`` until the block ends."""
    left_transport, right_transport = trio.testing.memory_stream_pair()
    left_map = dict(left_handlers or {})
    right_map = dict(right_handlers or {})
    left = cs.Link(
        left_transport,
        LinkOptions(
            settings=left_settings or cs.Settings(), handler_for=left_map.get, on_error=on_error
        ),
        initiator=True,
        remote_addr="memory://right",
        local_addr="memory://left",
    )
    right = cs.Link(
        right_transport,
        LinkOptions(
            settings=right_settings or cs.Settings(), handler_for=right_map.get, on_error=on_error
        ),
        initiator=False,
        remote_addr="memory://left",
        local_addr="memory://right",
    )
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(right.run)
            await nursery.start(left.run)
            with trio.fail_after(5):
                await wait_until(lambda: right.conn.handshake_done)
            try:
                yield LinkPair(left, right, left_transport, right_transport, nursery)
            finally:
                nursery.cancel_scope.cancel()


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate`` every millisecond; wrap the call in ``trio.fail_after``."""
    while not predicate():  # noqa: ASYNC110 - the conditions are other objects' state
        await trio.sleep(0.001)


class _Receiver(Protocol):
    async def receive(self) -> bytes: ...


async def drain(channel: _Receiver) -> list[bytes]:
    """Every message of a stream or channel until its normal end (``EndOfChannel``)."""
    messages: list[bytes] = []
    while True:
        try:
            messages.append(await channel.receive())
        except trio.EndOfChannel:
            return messages


@asynccontextmanager
async def chanserv_nodes(
    *,
    server_settings: cs.Settings | None = None,
    client_settings: cs.Settings | None = None,
    shutdown_grace: float = 1.0,
    memory: bool = False,
) -> AsyncIterator[tuple[cs.Multiplexer, cs.Multiplexer]]:
    """A server node and a client node linked over TCP loopback.

    ``memory=True`` links them over ``trio.testing.memory_stream_pair`` instead, for
    tests on the ``autojump_clock``: bytes in flight on a real socket are invisible
    to the clock, which could then jump past a deadline while data is on its way.
    """
    async with cs.Multiplexer(
        settings=server_settings, shutdown_grace=shutdown_grace
    ) as server_mpx:
        address = "" if memory else await server_mpx.listen("tcp://127.0.0.1:0")
        async with cs.Multiplexer(
            settings=client_settings, shutdown_grace=shutdown_grace
        ) as client_mpx:
            if memory:
                client_end, server_end = trio.testing.memory_stream_pair()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(server_mpx.attach, server_end, initiator=False))
                    await client_mpx.attach(client_end)
            else:
                await client_mpx.join(address)
            yield server_mpx, client_mpx


async def wait_quiet(*nodes: cs.Multiplexer) -> None:
    """Wait until no node has an open stream; wrap the call in ``trio.fail_after``."""
    await wait_until(lambda: all(node.statistics().open_streams == 0 for node in nodes))
