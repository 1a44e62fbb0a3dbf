"""LZ4 compression of DATA payloads, agreed per link in the handshake and marked per frame."""

from __future__ import annotations

import random
import struct
from collections.abc import AsyncIterator

import pytest
import trio

import chanserv_trio as cs
from chanserv_trio._errors import RemoteProtocolError
from chanserv_trio.node import _multiplexer
from chanserv_trio.wire import _compression as _wire_compression
from chanserv_trio.wire._codec import (
    HEADER,
    DataFlags,
    ErrorCode,
    FrameDecoder,
    FrameType,
)
from chanserv_trio.wire._connection import Connection, Settings
from chanserv_trio.wire._events import MessageReceived

pytest.importorskip("lz4.block")

COMPRESSIBLE = b"chanserv_trio " * 4000  # 56 KB that LZ4 shrinks a lot


def pair(client: bool, server: bool) -> tuple[Connection, Connection]:
    a = Connection(initiator=True, settings=Settings(compression=client))
    b = Connection(initiator=False, settings=Settings(compression=server))
    b.receive_data(b"".join(a.take_outgoing()))
    a.receive_data(b"".join(b.take_outgoing()))
    return a, b


def frames_of(conn: Connection) -> list[tuple[int, int, int, bytes]]:
    decoder = FrameDecoder(1 << 30)
    decoder.feed(b"".join(conn.take_outgoing()))
    return list(decoder.frames())


@pytest.mark.parametrize(("client", "server"), [(True, False), (False, True), (False, False)])
def test_compression_needs_both_ends(client: bool, server: bool) -> None:
    a, b = pair(client, server)
    assert not a.compressing and not b.compressing
    sid = a.open_stream("svc", b"")
    a.send_data(sid, COMPRESSIBLE)
    data = [f for f in frames_of(a) if f[0] == FrameType.DATA]
    assert len(data) == 1 and not data[0][1] & DataFlags.COMPRESSED
    assert data[0][3] == COMPRESSIBLE


def test_agreed_compression_shrinks_the_wire_and_restores_the_message() -> None:
    a, b = pair(True, True)
    assert a.compressing and b.compressing
    sid = a.open_stream("svc", b"")
    assert a.try_send_message(sid, COMPRESSIBLE[:2000])
    a.send_data(sid, COMPRESSIBLE)
    wire = b"".join(a.take_outgoing())
    assert len(wire) < len(COMPRESSIBLE) // 4
    events = b.receive_data(wire)
    messages = [e for e in events if isinstance(e, MessageReceived)]
    assert [m.data for m in messages] == [COMPRESSIBLE[:2000], COMPRESSIBLE]
    # Flow control counts the bytes the application sees, not the wire bytes.
    assert [m.credit for m in messages] == [2000, len(COMPRESSIBLE)]


def test_small_and_incompressible_payloads_go_plain() -> None:
    a, b = pair(True, True)
    sid = a.open_stream("svc", b"")
    b.receive_data(b"".join(a.take_outgoing()))
    incompressible = random.Random(1).randbytes(600)
    payloads = [b"tiny", incompressible, COMPRESSIBLE[:600]]
    for payload in payloads:
        a.send_data(sid, payload)
    wire = b"".join(a.take_outgoing())
    decoder = FrameDecoder(1 << 30)
    decoder.feed(wire)
    flags = [f[1] for f in decoder.frames()]
    assert flags == [0, 0, DataFlags.COMPRESSED]
    events = b.receive_data(wire)
    assert [e.data for e in events if isinstance(e, MessageReceived)] == payloads


def test_a_frame_that_starts_like_a_marker_is_never_misread() -> None:
    # Compression is marked by a flag, never guessed from the payload's first bytes.
    a, b = pair(True, True)
    sid = a.open_stream("svc", b"")
    tricky = [b"lz4!", b"lz4!" + COMPRESSIBLE[:100], b"lz4!" + bytes(1000)]
    for payload in tricky:
        a.send_data(sid, payload)
    events = b.receive_data(b"".join(a.take_outgoing()))
    assert [e.data for e in events if isinstance(e, MessageReceived)] == tricky


def _data_frame(sid: int, payload: bytes, flags: int) -> bytes:
    return HEADER.pack(len(payload), FrameType.DATA, flags, sid) + payload


def test_compressed_data_on_a_link_that_did_not_agree_is_a_protocol_error() -> None:
    a, b = pair(False, False)
    sid = a.open_stream("svc", b"")
    b.receive_data(b"".join(a.take_outgoing()))
    packed = _wire_compression.compress(COMPRESSIBLE[:4096])
    assert packed is not None
    with pytest.raises(RemoteProtocolError) as info:
        b.receive_data(_data_frame(sid, packed, DataFlags.COMPRESSED))
    assert info.value.code == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("payload", "code"),
    [
        (struct.pack(">I", 1 << 30) + b"\x00" * 16, ErrorCode.FRAME_SIZE_ERROR),  # a bomb
        (struct.pack(">I", 1000) + b"\xff" * 32, ErrorCode.PROTOCOL_ERROR),  # not LZ4
        (b"\x00\x01", ErrorCode.PROTOCOL_ERROR),  # too short to hold the length
    ],
)
def test_hostile_compressed_payloads_are_protocol_errors(payload: bytes, code: int) -> None:
    a, b = pair(True, True)
    sid = a.open_stream("svc", b"")
    b.receive_data(b"".join(a.take_outgoing()))
    with pytest.raises(RemoteProtocolError) as info:
        b.receive_data(_data_frame(sid, payload, DataFlags.COMPRESSED))
    assert info.value.code == code
    assert b.closed


def test_asking_for_compression_without_lz4_is_a_clear_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_multiplexer, "lz4_available", lambda: False)
    with pytest.raises(ValueError, match="lz4"):
        cs.Multiplexer(settings=cs.Settings(compression=True))


async def test_end_to_end_over_tcp_with_compression() -> None:
    frames = [COMPRESSIBLE, b"lz4!" + COMPRESSIBLE[:3000], b"", COMPRESSIBLE * 20]

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        async def produce() -> AsyncIterator[bytes]:
            for frame in frames:
                yield frame

        yield cs.Source(b"compressed", produce())

    settings = cs.Settings(compression=True)
    async with cs.Multiplexer(settings=settings) as server:
        address = await server.listen("tcp://127.0.0.1:0")
        await cs.Server(server).listen_and_serve("svc", source_fn)
        async with cs.Multiplexer(settings=settings) as client:
            link = await client.join(address)
            assert link.conn.compressing
            with trio.fail_after(10):
                async with cs.Client(client).lookup_and_post("svc") as sources:
                    source = await sources.receive()
                    assert [f async for f in source] == frames
            assert link.statistics().bytes_in < sum(map(len, frames)) // 4
