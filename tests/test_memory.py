"""The memory budget of a link, limits by role, and the receive buffer (issue: hardening).

Each memory row of the issue's attack table is reproduced by a raw peer built from the
wire ``Connection`` against a node (a ``Multiplexer`` with a ``Server``); the bound is
asserted with the link's own statistics (``bytes_held`` never above ``memory_budget``),
never by timing, and a well-behaved client on the same node is served throughout.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial

import attrs
import pytest
import trio
import trio.testing
from helpers import link_pair, wait_until
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import chanserv_trio as cs
from chanserv_trio.chanserv._envelope import SOURCE_WINDOW_TAG, Request, encode_request
from chanserv_trio.link._link import LinkStream
from chanserv_trio.link._options import CONTROL_LIMIT, LinkOptions, default_memory_budget
from chanserv_trio.wire._codec import (
    HEADER,
    DataFlags,
    ErrorCode,
    FrameDecoder,
    FrameType,
    Status,
    encode_frame,
    encode_hello,
    encode_open,
)
from chanserv_trio.wire._compression import lz4_available
from chanserv_trio.wire._connection import STREAM_COST, Connection
from chanserv_trio.wire._events import (
    ConnectionTerminated,
    Event,
    MessageReceived,
    StreamOpened,
    StreamReset,
)

#: Small limits, so that the budget is reached in a few MiB.
SETTINGS = cs.Settings(connection_window=1 << 20, max_message_size=8 << 20)
BUDGET = 12 << 20


@attrs.define
class Attacker:
    """The far end of a node's link: a bare ``Connection`` that sends what the test
    says and, while ``reading``, reads what the node sends (consuming its messages)."""

    conn: Connection
    stream: trio.abc.Stream
    link: cs.Link | None = None
    events: list[Event] = attrs.Factory(list)

    async def flush(self) -> None:
        data = b"".join(self.conn.take_outgoing())
        if data:
            await self.stream.send_all(data)

    async def pump(self) -> None:
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
            while True:
                data = await self.stream.receive_some()
                if not data:
                    return
                with contextlib.suppress(cs.RemoteProtocolError):
                    events = self.conn.receive_data(data)
                    self.events.extend(events)
                    for event in events:  # it consumes what it is sent
                        if isinstance(event, MessageReceived):
                            self.conn.acknowledge(event.stream_id, event.credit, 1)
                    await self.flush()

    def resets(self, code: int) -> list[StreamReset]:
        return [e for e in self.events if isinstance(e, StreamReset) and e.status.code == code]

    @property
    def node_link(self) -> cs.Link:
        assert self.link is not None
        return self.link


async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
    async def frames() -> AsyncIterator[bytes]:
        yield request
        yield b"done"

    yield cs.Source(b"answer", frames())


async def sink(stream: LinkStream) -> None:
    """A handler that never reads."""
    await trio.sleep_forever()


@asynccontextmanager
async def node(
    *, settings: cs.Settings = SETTINGS, budget: int | None = BUDGET, **server: object
) -> AsyncIterator[cs.Multiplexer]:
    async with cs.Multiplexer(
        settings=settings, link_memory_budget=budget, shutdown_grace=0
    ) as mpx:
        served = cs.Server(mpx, **server)  # type: ignore[arg-type]
        await served.listen_and_serve("chanserv", source_fn)
        mpx.handle("sink", sink)
        yield mpx


@asynccontextmanager
async def attacker(
    mpx: cs.Multiplexer,
    settings: cs.Settings | None = None,
    pair: Callable[[], tuple[trio.abc.Stream, trio.abc.Stream]] = trio.testing.memory_stream_pair,
    *,
    reading: bool = True,
) -> AsyncIterator[Attacker]:
    ours, theirs = pair()
    peer = Attacker(Connection(initiator=True, settings=settings), theirs)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(peer.flush)  # its HELLO
        if reading:
            nursery.start_soon(peer.pump)
        with trio.fail_after(10):
            peer.link = await mpx.attach(ours, initiator=False)
        try:
            yield peer
        finally:
            nursery.cancel_scope.cancel()


async def assert_served(mpx: cs.Multiplexer) -> None:
    """A well-behaved client on another link of the node gets its answer."""
    ours, theirs = trio.testing.memory_stream_pair()
    with trio.fail_after(10):
        async with cs.Multiplexer() as client_mpx, trio.open_nursery() as nursery:
            nursery.start_soon(partial(mpx.attach, theirs, initiator=False))
            await client_mpx.attach(ours, initiator=True)
            client = cs.Client(client_mpx)
            async with client.lookup_and_post("chanserv", b"hello") as sources:
                frames = [frame async for source in sources async for frame in source]
            assert frames == [b"hello", b"done"]


def within_budget(link: cs.Link) -> int:
    stats = link.statistics()
    assert stats.memory_budget == BUDGET
    assert 0 <= stats.bytes_held <= stats.memory_budget
    return stats.bytes_held


# ------------------------------------------------------------------- the budget


async def test_the_default_budget_lets_a_50_mib_message_arrive_whole() -> None:
    message = bytes(range(256)) * (50 << 12)  # 50 MiB

    async def echo_size(stream: LinkStream) -> None:
        data = await stream.receive()
        await stream.send(len(data).to_bytes(8, "big") + data[-16:])

    async with link_pair(right_handlers={"size": echo_size}) as pair:
        assert pair.right.statistics().memory_budget == default_memory_budget(cs.Settings())
        assert default_memory_budget(cs.Settings()) == 128 << 20
        stream = await pair.left.open_stream("size", b"")
        await stream.send(message)
        with trio.fail_after(30):
            answer = await stream.receive()
    assert answer == len(message).to_bytes(8, "big") + message[-16:]


def test_a_budget_too_small_for_the_connection_window_is_refused() -> None:
    with pytest.raises(ValueError, match="connection window"):
        LinkOptions(memory_budget=1 << 20)
    with pytest.raises(ValueError, match="connection window"):
        cs.Multiplexer(link_memory_budget=8 << 20)


async def test_a_stream_nobody_reads_stalls_only_itself() -> None:
    async def echo(stream: LinkStream) -> None:
        async for message in stream:
            await stream.send(message)

    async with node() as mpx, attacker(mpx, SETTINGS) as peer:
        mpx.handle("echo", echo)
        stuck = peer.conn.open_stream("sink", b"")
        flowing = peer.conn.open_stream("echo", b"")
        chunk = bytes(64 << 10)

        def echoed_count() -> int:
            return sum(isinstance(e, MessageReceived) for e in peer.events)

        with trio.fail_after(30):
            while peer.conn.send_window(stuck) >= len(chunk):
                peer.conn.send_data(stuck, chunk)
            await peer.flush()
            for index in range(100):  # 100 times its window on the other stream
                await wait_until(lambda: peer.conn.send_window(flowing) >= 16384)
                peer.conn.send_data(flowing, index.to_bytes(4, "big") * 4096)
                await peer.flush()
                await wait_until(
                    partial(
                        lambda n: sum(isinstance(e, MessageReceived) for e in peer.events) > n,
                        index,
                    )
                )
                within_budget(peer.node_link)
        echoed = [e for e in peer.events if isinstance(e, MessageReceived)]
        assert len(echoed) == 100
        assert peer.conn.send_window(stuck) < len(chunk)  # its window is spent
        assert peer.node_link.is_alive
        await assert_served(mpx)


async def test_unread_messages_past_the_budget_meet_back_pressure_not_a_close() -> None:
    release = trio.Event()
    got: list[int] = []

    async def late_reader(stream: LinkStream) -> None:
        await release.wait()
        async for message in stream:
            got.append(len(message))

    async with node() as mpx, attacker(mpx, SETTINGS) as peer:
        mpx.handle("late", late_reader)
        streams = [peer.conn.open_stream("late", b"") for _ in range(16)]  # 16 windows
        chunk = bytes(256 << 10)
        sent = 0
        with trio.fail_after(20):
            for _ in range(200):
                progressed = False
                for sid in streams:
                    if peer.conn.send_window(sid) >= len(chunk):
                        peer.conn.send_data(sid, chunk)
                        sent += 1
                        progressed = True
                await peer.flush()
                await trio.testing.wait_all_tasks_blocked()
                within_budget(peer.node_link)
                if not progressed:
                    break
            # The budget is full of whole messages: the peer gets no more credit, the
            # link stays up (the application may still read them).
            assert peer.conn.connection_send_window() < len(chunk)
            held = within_budget(peer.node_link)
            assert held > BUDGET - (4 << 20) - (1 << 20) - 16 * STREAM_COST
            assert sent * len(chunk) < 16 << 20
            assert peer.node_link.is_alive
            await assert_served(mpx)
            release.set()
            await wait_until(lambda: len(got) == sent)
            await wait_until(lambda: peer.conn.connection_send_window() >= len(chunk))
        assert peer.node_link.is_alive


async def test_a_flood_of_empty_messages_is_closed_with_enhance_your_calm() -> None:
    async with node() as mpx, attacker(mpx, SETTINGS) as peer:
        sid = peer.conn.open_stream("sink", b"")
        with trio.fail_after(20):
            for _ in range(100):
                for _ in range(2000):
                    peer.conn.send_data(sid, b"")
                with contextlib.suppress(trio.BrokenResourceError):
                    await peer.flush()
                await trio.testing.wait_all_tasks_blocked()
                if not peer.node_link.is_alive:
                    break
                within_budget(peer.node_link)
            await peer.node_link.wait_closed()
        error = peer.node_link.error
        assert isinstance(error, cs.ProtocolError)
        assert error.code == ErrorCode.ENHANCE_YOUR_CALM
        await assert_served(mpx)


@pytest.mark.skipif(not lz4_available(), reason="needs lz4")
async def test_an_lz4_bomb_is_charged_before_it_is_decompressed() -> None:
    # Before: 1.1 MiB on the wire pinned +272 MiB. The peer sends 1 MiB of zeros per
    # compressed chunk, MORE set, on streams nobody reads, never finishing a message.
    lz4 = attrs.evolve(SETTINGS, compression=True)
    async with node(settings=lz4) as mpx, attacker(mpx, lz4) as peer:
        assert peer.conn.compressing
        streams = [peer.conn.open_stream("sink", b"") for _ in range(8)]
        assembled = dict.fromkeys(streams, 0)
        wire = 0
        with trio.fail_after(20):
            while peer.node_link.is_alive:
                progressed = False
                for sid in streams:
                    size = min(peer.conn.send_window(sid), 1 << 20)
                    if size and assembled[sid] + size < SETTINGS.max_message_size:
                        peer.conn.send_data(sid, bytes(size), more=True)
                        assembled[sid] += size
                        progressed = True
                wire += peer.conn.outgoing_size
                with contextlib.suppress(trio.BrokenResourceError):
                    await peer.flush()
                await trio.testing.wait_all_tasks_blocked()
                within_budget(peer.node_link)
                if not progressed:
                    break
            await peer.node_link.wait_closed()
        # Only unfinished messages filled the budget: nothing the application can do
        # frees it, so the link is closed, and typed.
        error = peer.node_link.error
        assert isinstance(error, cs.ProtocolError)
        assert error.code == ErrorCode.ENHANCE_YOUR_CALM
        assert "unfinished messages" in str(error)
        assert BUDGET - (6 << 20) < sum(assembled.values()) <= BUDGET
        assert wire < 1 << 20  # the bytes on the wire are a sliver of what they claim
        await assert_served(mpx)


def test_compressed_data_is_checked_against_the_windows_by_its_declared_size() -> None:
    if not lz4_available():
        pytest.skip("needs lz4")
    lz4 = cs.Settings(compression=True, connection_window=1 << 20)
    server = Connection(initiator=False, settings=lz4, memory_budget=BUDGET)
    client = Connection(initiator=True, settings=lz4)
    server.receive_data(b"".join(client.take_outgoing()))
    client.receive_data(b"".join(server.take_outgoing()))
    sid = client.open_stream("x", b"")
    server.receive_data(b"".join(client.take_outgoing()))
    # A frame that declares 1 MiB while the stream window is 1 MiB less a byte: the
    # window check fails before anything is decompressed.
    from chanserv_trio.wire._compression import compress

    payload = compress(bytes(1 << 20))
    assert payload is not None and len(payload) < 8192
    client.send_data(sid, b"x")
    server.receive_data(b"".join(client.take_outgoing()))
    frame = encode_frame(FrameType.DATA, DataFlags.MORE | DataFlags.COMPRESSED, sid, payload)
    with pytest.raises(cs.RemoteProtocolError) as caught:
        server.receive_data(frame)
    assert caught.value.code == ErrorCode.FLOW_CONTROL_ERROR


# --------------------------------------------------------------- limits by role


def request(window: int | None = None) -> bytes:
    tags = {} if window is None else {SOURCE_WINDOW_TAG: str(window)}
    return encode_request(Request(b"req", None, tags))


async def test_a_server_resets_a_request_whose_master_stream_carries_data() -> None:
    # Before: 3 requests, each with a 64 MiB message left unfinished on its master
    # stream, pinned +196 MiB (the Server never reads master streams, and the chunks
    # were credited while nothing was held).
    async with node() as mpx, attacker(mpx, SETTINGS) as peer:
        masters = [peer.conn.open_stream("chanserv", request()) for _ in range(3)]
        chunk = bytes(64 << 10)
        with trio.fail_after(10):
            for _ in range(64):  # 4 MiB per master, as far as the peer is let
                for sid in masters:
                    if peer.conn.send_window(sid) >= len(chunk):
                        peer.conn.send_data(sid, chunk, more=True)
                await peer.flush()
                await trio.testing.wait_all_tasks_blocked()
                assert within_budget(peer.node_link) < 1 << 20
            await wait_until(lambda: len(peer.resets(ErrorCode.FRAME_SIZE_ERROR)) == 3)
        assert {e.stream_id for e in peer.resets(ErrorCode.FRAME_SIZE_ERROR)} == set(masters)
        assert peer.node_link.is_alive
        await assert_served(mpx)


async def test_a_server_takes_credits_on_a_master_stream_but_nothing_larger() -> None:
    async with node() as mpx, attacker(mpx, SETTINGS) as peer:
        good = peer.conn.open_stream("chanserv", request(window=1))
        bad = peer.conn.open_stream("chanserv", request(window=1))
        peer.conn.send_data(good, (1).to_bytes(4, "big"))
        peer.conn.send_data(bad, bytes(5))
        await peer.flush()
        with trio.fail_after(10):
            await wait_until(lambda: bool(peer.resets(ErrorCode.FRAME_SIZE_ERROR)))
        assert [e.stream_id for e in peer.resets(ErrorCode.FRAME_SIZE_ERROR)] == [bad]
        assert peer.node_link.is_alive
        await assert_served(mpx)


async def test_a_client_takes_no_data_on_a_master_stream_and_no_streams_under_a_source() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    server = Attacker(Connection(initiator=False), theirs)
    server.conn.advertise("chanserv")
    async with cs.Multiplexer(shutdown_grace=0) as mpx, trio.open_nursery() as nursery:
        nursery.start_soon(server.flush)
        nursery.start_soon(server.pump)
        await mpx.attach(ours, initiator=True)
        client = cs.Client(mpx)
        with trio.fail_after(10), pytest.raises(cs.StreamError) as caught:
            async with client.lookup_and_post("chanserv", b"x") as sources:
                await wait_until(lambda: any(isinstance(e, StreamOpened) for e in server.events))
                [opened] = [e for e in server.events if isinstance(e, StreamOpened)]
                source = server.conn.open_stream("", b"src", parent=opened.stream_id)
                await server.flush()
                first = await sources.receive()
                server.conn.open_stream("", b"", parent=source)  # under a source
                server.conn.send_data(opened.stream_id, bytes(1000), more=True)
                await server.flush()
                await sources.receive()
        assert caught.value.code == ErrorCode.FRAME_SIZE_ERROR
        assert first.header == b"src"
        with trio.fail_after(10):
            await wait_until(lambda: bool(server.resets(ErrorCode.REFUSED_STREAM)))
        nursery.cancel_scope.cancel()


async def test_a_server_resets_child_streams_a_client_opens_under_a_request() -> None:
    # Before: 40 child streams the client opened under finished requests stayed open.
    async with node() as mpx, attacker(mpx, SETTINGS) as peer:
        masters = [peer.conn.open_stream("chanserv", request(window=4)) for _ in range(4)]
        await peer.flush()
        with trio.fail_after(10):
            # The requests are finished on the server (their sources announced, their
            # master streams ended), waiting for the client to end its half.
            await wait_until(
                lambda: all(
                    peer.conn.stream_state(m).name == "HALF_CLOSED_REMOTE" for m in masters
                )
            )
            for index in range(40):
                peer.conn.open_stream("", b"", parent=masters[index % 4])
            await peer.flush()
            await wait_until(lambda: len(peer.resets(ErrorCode.REFUSED_STREAM)) == 40)
            await trio.testing.wait_all_tasks_blocked()
        # What is left open on the node: the 4 masters and their 4 sources.
        assert peer.node_link.statistics().open_streams <= 8
        await assert_served(mpx)


async def test_a_request_over_max_request_size_is_refused_before_it_is_served() -> None:
    errors: list[BaseException] = []
    async with node(max_request_size=64, on_error=errors.append) as mpx:
        ours, theirs = trio.testing.memory_stream_pair()
        async with cs.Multiplexer() as client_mpx, trio.open_nursery() as nursery:
            nursery.start_soon(partial(mpx.attach, theirs, initiator=False))
            await client_mpx.attach(ours, initiator=True)
            client = cs.Client(client_mpx)
            with trio.fail_after(10), pytest.raises(cs.StreamError) as caught:
                async with client.lookup_and_post("chanserv", bytes(100)) as sources:
                    await sources.receive()
            assert caught.value.code == ErrorCode.FRAME_SIZE_ERROR
            assert "max_request_size" in str(caught.value)
            async with client.lookup_and_post("chanserv", b"small") as sources:
                frames = [frame async for source in sources async for frame in source]
            assert frames == [b"small", b"done"]
    assert any("max_request_size" in str(error) for error in errors)


# ---------------------------------------------------------- streams and replies


async def test_streams_a_peer_opens_and_never_reads_are_bounded_by_the_budget() -> None:
    # Before: 3,000 requests cost 13.4 KiB each, and the 16,384-stream limit allowed
    # ~214 MiB a link. Each stream the peer opens is charged STREAM_COST plus its OPEN
    # payload; once the budget is full, OPEN is refused. (With a source window the
    # server keeps each request until the client ends it, which this one never does.)
    async with node() as mpx, attacker(mpx, SETTINGS) as peer:
        with trio.fail_after(30):
            for _ in range(30):
                for _ in range(100):
                    peer.conn.open_stream("chanserv", request(window=1))
                await peer.flush()
                await trio.testing.wait_all_tasks_blocked()
                within_budget(peer.node_link)
        refused = [
            e for e in peer.resets(ErrorCode.REFUSED_STREAM) if "memory budget" in e.status.message
        ]
        assert refused
        stats = peer.node_link.statistics()
        assert stats.open_streams * STREAM_COST <= BUDGET
        assert stats.bytes_held >= stats.open_streams * STREAM_COST // 2
        await assert_served(mpx)


async def test_a_peer_flooding_pings_without_reading_makes_the_link_stop_reading() -> None:
    # Before: 21 MB of PING answers were queued (+86 MiB).
    async with (
        node() as mpx,
        attacker(mpx, SETTINGS, trio.testing.lockstep_stream_pair, reading=False) as peer,
    ):
        ping = encode_frame(FrameType.PING, 0, 0, bytes(8))
        sent = 0

        async def flood() -> None:
            nonlocal sent
            batch = ping * 4096  # 72 KiB of PINGs
            for _ in range(300):  # 21 MB, if the link read it all
                await peer.stream.send_all(batch)
                sent += len(batch)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(flood)
            with trio.fail_after(20):
                await trio.testing.wait_all_tasks_blocked()
                stats = peer.node_link.statistics()
                # It stopped reading: the peer's writes wait, and what the link holds
                # for it stays near CONTROL_LIMIT, far inside its budget.
                assert sent < 2 << 20
                assert stats.bytes_queued <= CONTROL_LIMIT + (256 << 10)
                within_budget(peer.node_link)
                await assert_served(mpx)
            nursery.cancel_scope.cancel()
        assert peer.node_link.is_alive


# ------------------------------------------------------------------- the decoder


def test_the_decoder_costs_a_small_constant_over_what_it_holds_however_split() -> None:
    decoder = FrameDecoder(max_payload=1 << 20)
    frame = encode_frame(FrameType.DATA, 0, 1, bytes(200_000))
    most = 0
    for index in range(len(frame) - 1):
        decoder.feed(frame[index : index + 1])
        assert list(decoder.frames()) == []
        most = max(most, decoder.allocated - 2 * decoder.buffered)
    # Before: 44 times its size (one bytes object per tiny segment).
    assert decoder.buffered == len(frame) - 1
    assert decoder.allocated <= 1.25 * decoder.buffered + 128
    assert most <= 256
    decoder.feed(frame[-1:])
    assert [payload for *_, payload in decoder.frames()] == [bytes(200_000)]
    assert decoder.buffered == 0 and decoder.allocated == 0


def test_the_decoder_keeps_only_the_start_of_a_frame_from_a_large_read() -> None:
    decoder = FrameDecoder(max_payload=1 << 20)
    frames = b"".join(encode_frame(FrameType.PING, 0, 0, bytes(8)) for _ in range(10_000))
    decoder.feed(frames + HEADER.pack(100, FrameType.DATA, 0, 1) + b"x")
    assert len(list(decoder.frames())) == 10_000
    assert decoder.buffered == 11
    assert decoder.allocated < 128  # not the 180 KB read it came in


async def test_a_frame_trickled_in_tiny_segments_costs_about_its_size() -> None:
    async with node() as mpx, attacker(mpx, SETTINGS) as peer:
        sid = peer.conn.open_stream("sink", b"")
        await peer.flush()
        frame = encode_frame(FrameType.DATA, 0, sid, bytes(60_000))
        with trio.fail_after(20):
            for index in range(0, 3000):
                await peer.stream.send_all(frame[index : index + 1])
                if index % 16 == 0:
                    await trio.testing.wait_all_tasks_blocked()
            await trio.testing.wait_all_tasks_blocked()
        conn = peer.node_link.conn
        assert conn.receive_buffer_size <= 2 * 3000 + 128
        within_budget(peer.node_link)
        await assert_served(mpx)


# ------------------------------------------------------------------- hypothesis

_HELLO = encode_frame(FrameType.HELLO, 0, 0, encode_hello(cs.Settings().to_wire(), nonce=1))


@st.composite
def frames(draw: st.DrawFn) -> bytes:
    kind = draw(st.integers(0, 11))
    flags = draw(st.integers(0, 255))
    sid = draw(st.integers(0, 12))
    if kind == FrameType.OPEN and draw(st.booleans()):
        payload = encode_open(
            draw(st.integers(0, 12)), draw(st.sampled_from(["", "x", "chanserv"])), b"h"
        )
    elif kind in (FrameType.WINDOW,) and draw(st.booleans()):
        payload = draw(st.integers(0, 2**32 - 1)).to_bytes(4, "big")
    elif kind == FrameType.PING and draw(st.booleans()):
        payload = bytes(8)
    elif kind == FrameType.DATA and draw(st.booleans()):
        payload = bytes(draw(st.integers(0, 70_000)))
    else:
        payload = draw(st.binary(max_size=64))
    if draw(st.integers(0, 20)) == 0:
        return HEADER.pack(draw(st.integers(0, 2**32 - 1)), kind, flags, sid) + payload
    return encode_frame(kind, flags, sid, payload)  # type: ignore[arg-type]


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    body=st.lists(frames(), max_size=40),
    hello=st.booleans(),
    cuts=st.lists(st.integers(1, 4096), max_size=8),
    consume=st.booleans(),
)
def test_arbitrary_frames_raise_only_protocol_errors_with_a_code(
    body: list[bytes], hello: bool, cuts: list[int], consume: bool
) -> None:
    budget = 24 << 20
    settings_ = cs.Settings(connection_window=1 << 20, initial_stream_window=65536)
    conn = Connection(initiator=False, settings=settings_, memory_budget=budget)
    data = (_HELLO if hello else b"") + b"".join(body)
    pieces = []
    for cut in cuts:
        pieces.append(data[:cut])
        data = data[cut:]
    pieces.append(data)
    for piece in pieces:
        if not piece:
            continue
        try:
            events = conn.receive_data(piece)
        except cs.RemoteProtocolError as exc:
            assert isinstance(exc.code, int) and exc.code != ErrorCode.OK
            assert conn.closed
            return
        for event in events:
            if consume and isinstance(event, MessageReceived):
                conn.acknowledge(event.stream_id, event.credit, 1)
            if isinstance(event, StreamOpened):
                assert event.stream_id % 2 == 1
            if isinstance(event, ConnectionTerminated):
                return
        assert 0 <= conn.held_bytes <= budget
        assert conn.receive_buffer_size <= 2 * (
            HEADER.size + settings_.max_open_payload + 131078
        ) + (256 << 10)
        conn.take_outgoing()
    if consume:
        # Once everything is consumed and every stream gone, nothing stays charged.
        for sid in list(conn.stream_ids()):
            conn.reset_stream(sid, Status(ErrorCode.CANCEL))
        assert conn.held_bytes == 0


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=st.lists(frames(), max_size=30), cuts=st.lists(st.integers(1, 512), max_size=4))
def test_a_link_fed_arbitrary_frames_ends_only_with_a_typed_error(
    body: list[bytes], cuts: list[int]
) -> None:
    async def echo(stream: LinkStream) -> None:
        async for message in stream:
            await stream.send(message)

    reported: list[BaseException] = []

    async def main() -> None:
        ours, theirs = trio.testing.memory_stream_pair()
        options = LinkOptions(
            settings=SETTINGS,
            memory_budget=BUDGET,
            handler_for={"x": echo, "chanserv": echo}.get,
            on_error=reported.append,
        )
        link = cs.Link(ours, options, initiator=False)
        data = _HELLO + b"".join(body)

        async def run() -> None:
            # A handshake that fails is raised by run() itself, typed; nothing else may.
            with contextlib.suppress(cs.ChanservError):
                await link.run()

        async with trio.open_nursery() as nursery:
            nursery.start_soon(run)
            with trio.fail_after(10):
                for cut in [*cuts, len(data)]:
                    piece, data = data[:cut], data[cut:]
                    if piece:
                        with contextlib.suppress(trio.BrokenResourceError):
                            await theirs.send_all(piece)
                    await trio.testing.wait_all_tasks_blocked()
                    held = link.statistics()
                    assert 0 <= held.bytes_held <= held.memory_budget
            nursery.cancel_scope.cancel()
        if link.error is not None:
            assert isinstance(link.error, cs.ConnectionLost)  # ProtocolError is one

    trio.run(main)
    for error in reported:
        assert isinstance(error, cs.ProtocolError) and error.code, error
