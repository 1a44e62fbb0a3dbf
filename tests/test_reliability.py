"""Liveness, graceful shutdown, limits and hostile peers (issue: reliability)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import pytest
import trio
import trio.testing
from helpers import wait_until

import chanserv_trio as cs
from chanserv_trio.link._options import LinkOptions
from chanserv_trio.wire._codec import ErrorCode, FrameType, Status, encode_frame
from chanserv_trio.wire._connection import Connection


class Valve(trio.abc.Stream):
    """A stream that can be cut like a cable: when ``frozen`` bytes sent vanish and
    nothing arrives; when only ``deaf`` it stops taking bytes off the wire."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner
        self.frozen = False
        self.deaf = False

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.frozen:
            await trio.lowlevel.checkpoint()
            return
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        while True:
            if self.frozen or self.deaf:
                await trio.sleep_forever()
            data = await self.inner.receive_some(max_bytes)
            if not (self.frozen or self.deaf):
                return data

    async def aclose(self) -> None:
        await self.inner.aclose()


@asynccontextmanager
async def linked_pair(
    **options: object,
) -> AsyncIterator[tuple[cs.Multiplexer, cs.Multiplexer, Valve, Valve]]:
    """Two multiplexers attached over an in-memory stream pair, each end freezable."""
    left, right = trio.testing.memory_stream_pair()
    left_valve, right_valve = Valve(left), Valve(right)
    async with cs.Multiplexer(**options) as server, cs.Multiplexer(**options) as client:  # type: ignore[arg-type]
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(server.attach, right_valve, initiator=False))
            await client.attach(left_valve, initiator=True)
        yield server, client, left_valve, right_valve


async def slow_source_fn(request: bytes) -> AsyncIterator[cs.Source]:
    async def frames() -> AsyncIterator[bytes]:
        for index in range(5):
            await trio.sleep(1)
            yield b"%d" % index

    yield cs.Source(header=b"slow", frames=frames())


async def test_keepalive_detects_a_silent_peer_and_measures_rtt(autojump_clock: object) -> None:
    async with linked_pair(keepalive_interval=1.0, keepalive_timeout=2.0) as pair:
        server, client, left, right = pair
        await cs.Server(server).listen_and_serve("svc", slow_source_fn)
        await trio.sleep(1.5)  # one keepalive round trip
        stats = client.statistics()
        assert stats.rtt is not None and stats.rtt >= 0
        started = trio.current_time()
        with trio.fail_after(10):
            async with cs.Client(client).lookup_and_post("svc", b"") as sources:
                source = await sources.receive()
                left.frozen = right.frozen = True
                with pytest.raises(cs.ConnectionLost):
                    async for _ in source:
                        pass
        # Detected within interval + timeout (plus the interval it takes to notice).
        assert trio.current_time() - started <= 1.0 + 2.0 + 1.0 + 0.5
        assert client.links == []


async def test_graceful_shutdown_lets_in_flight_requests_finish(autojump_clock: object) -> None:
    frames: list[bytes] = []
    async with linked_pair() as (server, client, _, _):
        await cs.Server(server).listen_and_serve("svc", slow_source_fn)
        with trio.fail_after(30):
            async with cs.Client(client).lookup_and_post("svc", b"") as sources:
                source = await sources.receive()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(server.shutdown, 10.0)
                    async for frame in source:
                        frames.append(frame)
                    # A new request is refused: the only link is going away.
                    with pytest.raises(cs.ServiceNotFound):
                        async with cs.Client(client, dial_timeout=1).lookup_and_post("svc"):
                            pass
    assert frames == [b"0", b"1", b"2", b"3", b"4"]


async def test_shutdown_after_grace_cancels_with_a_clear_error(autojump_clock: object) -> None:
    cancelled = trio.Event()

    async def endless(request: bytes) -> AsyncIterator[cs.Source]:
        async def frames() -> AsyncIterator[bytes]:
            try:
                while True:
                    await trio.sleep(0.5)
                    yield b"tick"
            except trio.Cancelled:
                cancelled.set()
                raise

        yield cs.Source(header=b"endless", frames=frames())

    async with linked_pair() as (server, client, _, _):
        await cs.Server(server).listen_and_serve("svc", endless)
        with trio.fail_after(30):
            async with cs.Client(client).lookup_and_post("svc", b"") as sources:
                source = await sources.receive()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(server.shutdown, 2.0)
                    with pytest.raises(cs.ServerShuttingDown, match="shutting down"):
                        async for _ in source:
                            pass
                await cancelled.wait()


async def test_leaving_the_block_while_a_redial_is_pending_ends_cleanly() -> None:
    errors: list[BaseException] = []
    holding = trio.Event()

    async def hold(stream: cs.LinkStream) -> None:
        # Keeps the client closing (not yet closed) for many redial periods.
        holding.set()
        await wait_until(lambda: client.closing)
        await trio.sleep(0.1)

    with trio.fail_after(10):
        async with cs.Multiplexer() as peer:
            async with cs.Multiplexer(
                redial_backoff=(0.01, 1.0, 0.01), on_error=errors.append
            ) as client:
                client.handle("hold", hold)
                left, right = trio.testing.memory_stream_pair()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(client.attach, right, initiator=False))
                    await peer.attach(left)
                async with cs.Multiplexer() as node:
                    url = await node.listen("tcp://127.0.0.1:0")
                    await client.join(url)
                # The node is gone: the client redials it every 10 ms, and fails.
                await wait_until(lambda: len(errors) >= 2)
                await peer.open_stream("hold", b"", dial_timeout=5)
                await holding.wait()
                before = len(errors)
            assert not client.links
    # No redial ran while closing (at most one was already under way), nothing broke.
    assert len(errors) - before <= 1
    assert all(isinstance(error, cs.ConnectionLost) for error in errors)


async def handshake_raw(stream: trio.abc.Stream) -> Connection:
    """Speak the protocol by hand (sans-IO) as an initiator; returns after HELLO."""
    conn = Connection(initiator=True)
    await stream.send_all(b"".join(conn.take_outgoing()))
    while not conn.handshake_done:
        conn.receive_data(await stream.receive_some())
    return conn


async def test_rapid_reset_closes_only_the_abusive_link() -> None:
    errors: list[BaseException] = []

    async def instant(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"x", frames=_frames(b"ok"))

    async with cs.Multiplexer(reset_burst=50, reset_rate=10.0, on_error=errors.append) as server:
        address = await server.listen("tcp://127.0.0.1:0")
        await cs.Server(server).listen_and_serve("svc", instant)
        host, port = address.removeprefix("tcp://").rsplit(":", 1)
        with trio.fail_after(10):
            abuser = await trio.open_tcp_stream(host, int(port))
            conn = await handshake_raw(abuser)
            for _ in range(200):
                sid = conn.open_stream("svc", _request(), local_open=False)
                conn.reset_stream(sid, Status(ErrorCode.CANCEL))
            await abuser.send_all(b"".join(conn.take_outgoing()))
            # The server answers with GOAWAY(ENHANCE_YOUR_CALM) and closes.
            received = b""
            while chunk := await abuser.receive_some():
                received += chunk
            await abuser.aclose()
            assert any(
                isinstance(e, cs.ProtocolError) and e.code == ErrorCode.ENHANCE_YOUR_CALM
                for e in errors
            )
            # Everyone else is still served.
            async with cs.Multiplexer() as good:
                await good.join(address)
                async with cs.Client(good).lookup_and_post("svc") as sources:
                    source = await sources.receive()
                    assert [f async for f in source] == [b"ok"]


async def _frames(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


def _request() -> bytes:
    from chanserv_trio.chanserv._envelope import Request, encode_request

    return encode_request(Request(b""))


@pytest.mark.parametrize(
    "garbage",
    [
        b"GET / HTTP/1.1\r\nHost: x\r\n\r\n",
        b"\xff" * 64,
        encode_frame(FrameType.DATA, 0, 1, b"before hello"),
    ],
)
async def test_garbage_on_the_port_is_refused_and_the_next_client_served(garbage: bytes) -> None:
    errors: list[BaseException] = []
    async with cs.Multiplexer(on_error=errors.append) as server:
        address = await server.listen("tcp://127.0.0.1:0")
        await cs.Server(server).listen_and_serve(
            "svc", lambda request: _sources(cs.Source(b"h", _frames(b"f")))
        )
        host, port = address.removeprefix("tcp://").rsplit(":", 1)
        with trio.fail_after(10):
            bad = await trio.open_tcp_stream(host, int(port))
            await bad.send_all(garbage)
            while await bad.receive_some():
                pass
            await bad.aclose()
            async with cs.Multiplexer() as good:
                await good.join(address)
                async with cs.Client(good).lookup_and_post("svc") as sources:
                    source = await sources.receive()
                    assert [f async for f in source] == [b"f"]
    assert any(isinstance(e, cs.ChanservError) for e in errors)


async def _sources(*items: cs.Source) -> AsyncIterator[cs.Source]:
    for item in items:
        yield item


async def test_half_open_connection_times_out_in_handshake(autojump_clock: object) -> None:
    errors: list[BaseException] = []
    left, right = trio.testing.memory_stream_pair()
    async with cs.Multiplexer(handshake_timeout=3.0, on_error=errors.append) as server:
        with trio.fail_after(10), pytest.raises(cs.ConnectionLost, match="handshake"):
            await server.attach(right, initiator=False)
    await left.aclose()


async def test_write_timeout_drops_a_peer_that_stops_reading(autojump_clock: object) -> None:
    left, right = trio.testing.lockstep_stream_pair()
    client_end = Valve(left)
    async with cs.Multiplexer(write_timeout=2.0) as server, cs.Multiplexer() as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(server.attach, right, initiator=False))
            await client.attach(client_end, initiator=True)

        async def big(request: bytes) -> AsyncIterator[cs.Source]:
            yield cs.Source(b"big", _frames(*[b"x" * 65536] * 64))

        await cs.Server(server).listen_and_serve("svc", big)
        with trio.fail_after(20):
            async with cs.Client(client).lookup_and_post("svc") as sources:
                await sources.receive()
                client_end.deaf = True  # the client stops taking bytes off the wire
                for _ in range(100):
                    if not server.links:
                        break
                    await trio.sleep(0.5)
        assert server.links == []


async def test_buffered_bytes_stay_within_the_window_when_nobody_reads() -> None:
    settings = cs.Settings(initial_stream_window=64 * 1024, max_frame_payload=16 * 1024)
    produced = 0

    async def flood(request: bytes) -> AsyncIterator[cs.Source]:
        async def frames() -> AsyncIterator[bytes]:
            nonlocal produced
            while True:
                produced += 1
                yield b"y" * 1000

        for index in range(4):
            yield cs.Source(b"%d" % index, frames())

    async with linked_pair(settings=settings) as (server, client, _, _):
        await cs.Server(server).listen_and_serve("svc", flood)
        with trio.fail_after(10):
            async with cs.Client(client).lookup_and_post("svc") as sources:
                got = [await sources.receive() for _ in range(4)]
                # Over memory streams everything waits, once the producers are stalled.
                await trio.testing.wait_all_tasks_blocked()
                peak = client.statistics().bytes_buffered
                assert peak <= 4 * settings.initial_stream_window
                assert server.statistics().window_stalls > 0
                # Reading one source lets it go on: it was only stalled, not broken.
                frame = await got[0].receive()
                assert frame == b"y" * 1000
        assert produced < 4 * (settings.initial_stream_window // 1000 + 10)


async def test_many_messages_larger_than_the_window_all_arrive(autojump_clock: object) -> None:
    # Chunks of an incomplete message are credited back; if that credit never reached the
    # sender, its window would shrink with every large message until the stream stalled.
    settings = cs.Settings(initial_stream_window=16 * 1024, max_frame_payload=4096)
    payloads = [bytes([index]) * (100 * 1024) for index in range(20)]

    async def big(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(b"big", _frames(*payloads))

    async with linked_pair(settings=settings) as (server, client, _, _):
        await cs.Server(server).listen_and_serve("svc", big)
        with trio.fail_after(10):
            async with cs.Client(client).lookup_and_post("svc") as sources:
                source = await sources.receive()
                assert [frame async for frame in source] == payloads


async def test_an_empty_message_that_empties_the_inbox_still_returns_held_credit(
    autojump_clock: object,
) -> None:
    # Credit of a small message is held back for batching; an empty message carries no
    # credit of its own, but reading it empties the inbox, and the held credit must go
    # back then, or the next message larger than the window never completes.
    settings = cs.Settings(initial_stream_window=64 * 1024, max_frame_payload=16 * 1024)
    frames = [b"x" * 10, b"", b"y" * (200 * 1024)]

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(b"s", _frames(*frames))

    async with linked_pair(settings=settings) as (server, client, _, _):
        await cs.Server(server).listen_and_serve("svc", source_fn)
        with trio.fail_after(10):
            async with cs.Client(client).lookup_and_post("svc") as sources:
                source = await sources.receive()
                assert [frame async for frame in source] == frames


async def test_bytes_queued_for_a_stalled_transport_stay_bounded(autojump_clock: object) -> None:
    # Windows alone would let every stream queue its whole window for a transport that
    # takes nothing; senders wait once about 1 MiB waits for the writer.
    left, right = trio.testing.lockstep_stream_pair()
    client_end = Valve(left)
    async with cs.Multiplexer() as server, cs.Multiplexer() as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(server.attach, right, initiator=False))
            await client.attach(client_end, initiator=True)

        async def wide(request: bytes) -> AsyncIterator[cs.Source]:
            for index in range(20):
                yield cs.Source(b"%d" % index, _frames(*[b"w" * 65536] * 40))

        await cs.Server(server).listen_and_serve("svc", wide)
        with trio.fail_after(20):
            async with cs.Client(client).lookup_and_post("svc") as sources:
                first = await sources.receive()
                client_end.deaf = True  # the client stops taking bytes off the wire
                for _ in range(50):
                    await trio.sleep(0.1)
                    queued = server.statistics().bytes_queued
                    assert queued <= (1 << 20) + 65536 + 1024
                assert server.statistics().window_stalls > 0
                assert first.header == b"0"


class _NotReading(trio.abc.Stream):
    """A peer that sends but never reads: every write we make waits forever."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner = inner

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.sleep_forever()

    async def wait_send_all_might_not_block(self) -> None:
        await trio.sleep_forever()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        return await self.inner.receive_some(max_bytes)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.mark.parametrize(("outgoing_limit", "reads_on"), [(None, True), (4096, False)])
async def test_a_link_stops_reading_while_it_owes_the_peer_more_than_its_outgoing_limit(
    autojump_clock: object, outgoing_limit: int | None, reads_on: bool
) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link = cs.Link(_NotReading(ours), LinkOptions(outgoing_limit=outgoing_limit), initiator=False)
    peer = Connection(initiator=True)
    for index in range(1000):  # each PING queues an 18-byte answer we cannot write
        peer.ping(index.to_bytes(8, "big"))
    first = b"".join(peer.take_outgoing())
    pings = b"".join(encode_frame(FrameType.PING, 0, 0, bytes(8)) for _ in range(10))
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await theirs.send_all(first)
            await nursery.start(link.run)
            await wait_until(lambda: link.statistics().bytes_in == len(first))
            assert link.statistics().bytes_queued > 4096
            await theirs.send_all(pings)
            await trio.sleep(5)
            read_more = link.statistics().bytes_in == len(first) + len(pings)
            nursery.cancel_scope.cancel()
    assert read_more is reads_on
