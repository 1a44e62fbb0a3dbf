"""Resumption end to end (docs/resumption.md): links cut, reset and stalled again and
again by a proxy carry every message once, in order; a resumption that cannot happen
ends every stream with ``ConnectionLost`` saying why, promptly.

Every message carries its sequence number and a CRC-32 of the rest, checked on arrival.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
from faultproxy import CuttingProxy, Fault

import chanserv_trio as cs
from chanserv_trio.link._link import Link

_REQUEST = struct.Struct(">II")  # messages, bytes each
_SEQ = struct.Struct(">I")

#: Short enough that a stalled transport is found in well under a second.
FAST = {"keepalive_interval": 0.2, "keepalive_timeout": 0.6, "redial_backoff": (0.05, 2, 0.2)}


def message(seq: int, size: int) -> bytes:
    body = _SEQ.pack(seq) + bytes([seq % 251]) * max(0, size - 8)
    return body + _SEQ.pack(zlib.crc32(body))


def check(data: bytes, expected_seq: int) -> None:
    body, crc = data[:-4], data[-4:]
    assert _SEQ.pack(zlib.crc32(body)) == crc, f"message {expected_seq} damaged"
    (seq,) = _SEQ.unpack_from(body)
    assert seq == expected_seq, f"expected message {expected_seq}, got {seq}"


async def flood(stream: cs.LinkStream) -> None:
    count, size = _REQUEST.unpack(await stream.receive())
    for seq in range(count):
        await stream.send(message(seq, size))
    stream.end()


async def echo(stream: cs.LinkStream) -> None:
    async for data in stream:
        await stream.send(data)
    stream.end()


async def fetch(mpx: cs.Multiplexer, count: int, size: int, service: str = "flood") -> int:
    """Ask for ``count`` messages of ``size`` bytes; check each; return how many came."""
    stream = await mpx.open_stream(service, b"")
    await stream.send(_REQUEST.pack(count, size))
    seq = 0
    async for data in stream:
        check(data, seq)
        seq += 1
    return seq


@asynccontextmanager
async def resuming_pair(
    *,
    kind: Fault = Fault.CUT,
    cut_every: int | None = None,
    cuts: int = 1 << 30,
    scheme: str = "tcp",
    server_options: dict[str, Any] | None = None,
    client_options: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[cs.Multiplexer, cs.Multiplexer, CuttingProxy]]:
    """A server serving ``flood`` and ``echo`` and a client joined to it through a
    :class:`CuttingProxy`, both resuming."""
    options: dict[str, Any] = {"resume_timeout": 10.0, **FAST}
    with tempfile.TemporaryDirectory() as folder:
        async with cs.Multiplexer(**{**options, **(server_options or {})}) as server:
            server.handle("flood", flood)
            server.handle("echo", echo)
            if scheme == "unix":
                path = os.path.join(folder, "server.sock")
                await server.listen(f"unix://{path}")
                proxy = CuttingProxy(
                    path,
                    kind=kind,
                    cut_every=cut_every,
                    cuts=cuts,
                    listen_path=os.path.join(folder, "proxy.sock"),
                )
            else:
                url = await server.listen(
                    "ws://127.0.0.1:0/" if scheme == "ws" else "tcp://127.0.0.1:0"
                )
                port = int(url.split(":")[2].split("/")[0])
                proxy = CuttingProxy(
                    ("127.0.0.1", port), kind=kind, cut_every=cut_every, cuts=cuts
                )
            async with trio.open_nursery() as nursery:
                proxy_url = await nursery.start(proxy.run)
                if scheme == "ws":
                    proxy_url = proxy_url.replace("tcp://", "ws://") + "/"
                async with cs.Multiplexer(**{**options, **(client_options or {})}) as client:
                    await client.join(proxy_url)
                    yield server, client, proxy
                nursery.cancel_scope.cancel()


def the_link(mpx: cs.Multiplexer) -> Link:
    (link,) = mpx.links
    return link


# ----------------------------------------------------------- cuts, resumed


@pytest.mark.parametrize("kind", [Fault.CUT, Fault.RESET])
async def test_a_flood_survives_many_cuts(kind: Fault) -> None:
    async with resuming_pair(kind=kind, cut_every=100_000, cuts=6) as (server, client, proxy):
        with trio.fail_after(20):
            assert await fetch(client, 4000, 200) == 4000
        assert proxy.breaks == 6
        stats = the_link(client).statistics()
        assert stats.resumptions == 6
        assert the_link(server).statistics().resumptions == 6


async def test_heavy_messages_survive_cuts_inside_frames() -> None:
    async with resuming_pair(cut_every=700_000, cuts=5) as (_, client, proxy):
        with trio.fail_after(20):
            assert await fetch(client, 12, 600_000) == 12
        assert proxy.breaks == 5


async def test_a_stalled_transport_is_given_up_and_resumed() -> None:
    async with resuming_pair(kind=Fault.STALL, cut_every=100_000, cuts=2) as (_, client, proxy):
        with trio.fail_after(20):
            assert await fetch(client, 1500, 200) == 1500
        assert proxy.breaks == 2
        assert the_link(client).statistics().resumptions == 2
