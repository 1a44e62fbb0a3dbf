"""Client and Server options beyond timeouts: per-source buffer size, compression."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
from test_reliability import linked_pair

import chanserv_trio as cs

FRAME = b"f" * 1000


async def endless(request: bytes) -> AsyncIterator[cs.Source]:
    async def frames() -> AsyncIterator[bytes]:
        while True:
            yield FRAME

    yield cs.Source(b"endless", frames())


async def settle() -> None:
    for _ in range(20):
        await trio.sleep(0.01)


@pytest.mark.parametrize(("link_window", "buffer_size"), [(16384, 262144), (262144, 16384)])
async def test_frame_buffer_size_bounds_what_a_source_buffers(
    autojump_clock: object, link_window: int, buffer_size: int
) -> None:
    settings = cs.Settings(initial_stream_window=link_window, max_frame_payload=4096)
    async with linked_pair(settings=settings) as (server, client, _, _):
        await cs.Server(server).listen_and_serve("svc", endless)
        client_side = cs.Client(client, frame_buffer_size=buffer_size)
        with trio.fail_after(30):
            async with client_side.lookup_and_post("svc") as sources:
                source = await sources.receive()
                # Read past whatever the link granted before the new window applied.
                for _ in range(2 * max(link_window, buffer_size) // len(FRAME)):
                    assert await source.receive() == FRAME
                await settle()
                # Nobody reads now: the source fills its window and no more. Consumed
                # bytes go back to the connection in batches of an eighth of the window,
                # and from it to the peer in quarter-window steps, so it may stop up to
                # both short; a frame split at the window's edge adds one frame either way.
                buffered = client.statistics().bytes_buffered
                held_back = (buffer_size >> 2) + (buffer_size >> 3)
                low = buffer_size - held_back - len(FRAME)
                assert low <= buffered <= buffer_size + len(FRAME)


def test_frame_buffer_size_must_be_positive() -> None:
    with pytest.raises(ValueError, match="frame_buffer_size"):
        cs.Client(cs.Multiplexer(), frame_buffer_size=0)


async def test_server_compression_option_asks_for_compression_on_new_links() -> None:
    pytest.importorskip("lz4.block")
    payload = b"compress me " * 5000

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        async def frames() -> AsyncIterator[bytes]:
            yield payload

        yield cs.Source(b"s", frames())

    async with cs.Multiplexer() as server:
        cs.Server(server, compression=True)
        address = await server.listen("tcp://127.0.0.1:0")
        await cs.Server(server).listen_and_serve("svc", source_fn)
        async with cs.Multiplexer(settings=cs.Settings(compression=True)) as client:
            link = await client.join(address)
            assert link.conn.compressing
            with trio.fail_after(10):
                async with cs.Client(client).lookup_and_post("svc") as sources:
                    source = await sources.receive()
                    assert [f async for f in source] == [payload]
            assert link.statistics().bytes_in < len(payload) // 4


async def test_master_read_timeout_cancels_a_request_that_stops_announcing(
    autojump_clock: object,
) -> None:
    cancelled = trio.Event()

    async def stalls(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(b"first", endless_frames())
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()
        yield cs.Source(b"never")  # pragma: no cover

    async with linked_pair() as (server, client, _, _):
        await cs.Server(server).listen_and_serve("svc", stalls)
        with trio.fail_after(30):
            async with cs.Client(client, master_read_timeout=2.0).lookup_and_post(
                "svc"
            ) as sources:
                first = await sources.receive()
                assert first.header == b"first"
                started = trio.current_time()
                with pytest.raises(cs.DeadlineExceeded, match="master_read_timeout"):
                    await sources.receive()
                assert trio.current_time() - started == pytest.approx(2.0)
            await cancelled.wait()


async def endless_frames() -> AsyncIterator[bytes]:
    while True:
        await trio.sleep(0.1)
        yield FRAME


async def test_master_write_timeout_ends_a_request_whose_client_holds_too_many_open(
    autojump_clock: object,
) -> None:
    errors: list[BaseException] = []

    async def many(request: bytes) -> AsyncIterator[cs.Source]:
        for index in range(10):
            yield cs.Source(b"%d" % index, endless_frames())

    # The client accepts at most 3 streams from the server at once.
    async with linked_pair(settings=cs.Settings(max_concurrent_streams=3)) as pair:
        server, client, _, _ = pair
        await cs.Server(server, master_write_timeout=1.0, on_error=errors.append).listen_and_serve(
            "svc", many
        )
        with trio.fail_after(30):
            async with cs.Client(client).lookup_and_post("svc") as sources:
                got = [await sources.receive() for _ in range(3)]
                with pytest.raises(cs.DeadlineExceeded, match="master_write_timeout"):
                    await sources.receive()
                # The sources already announced keep flowing.
                assert await got[0].receive() == FRAME
    assert any("master_write_timeout" in str(error) for error in errors)


class AnnouncementCounter:
    """A source function announcing 50 endless sources, counting how many it has."""

    def __init__(self) -> None:
        self.announced = 0

    async def source_fn(self, request: bytes) -> AsyncIterator[cs.Source]:
        for index in range(50):
            yield cs.Source(b"%d" % index, endless_frames())
            self.announced += 1


async def test_source_buffer_size_holds_the_server_to_a_window_of_announcements(
    autojump_clock: object,
) -> None:
    counter = AnnouncementCounter()
    async with linked_pair() as (server, client, _, _):
        await cs.Server(server).listen_and_serve("svc", counter.source_fn)
        with trio.fail_after(30):
            async with cs.Client(client, source_buffer_size=4).lookup_and_post("svc") as sources:
                await settle()
                # Nothing taken yet: at most the window was announced.
                assert counter.announced <= 5
                taken = [await sources.receive() for _ in range(10)]
                await settle()
                # Taking sources grants more, but never more than a window ahead.
                assert 10 <= counter.announced <= 10 + 5
                assert [s.header for s in taken] == [b"%d" % i for i in range(10)]
                rest = [s.header async for s in sources]
                assert rest == [b"%d" % i for i in range(10, 50)]
            assert counter.announced == 50


async def test_without_source_buffer_size_announcing_is_not_held_back(
    autojump_clock: object,
) -> None:
    counter = AnnouncementCounter()
    async with linked_pair() as (server, client, _, _):
        await cs.Server(server).listen_and_serve("svc", counter.source_fn)
        with trio.fail_after(30):
            async with cs.Client(client).lookup_and_post("svc"):
                await settle()
                assert counter.announced == 50


async def test_time_spent_waiting_for_the_service_counts_against_the_deadline(
    autojump_clock: object,
) -> None:
    remaining: list[float] = []

    async def measure(request: bytes) -> AsyncIterator[cs.Source]:
        remaining.append(trio.current_effective_deadline() - trio.current_time())
        yield cs.Source(b"only", endless_frames())

    async with linked_pair() as (server, client, _, _):

        async def serve_later() -> None:
            await trio.sleep(3)
            await cs.Server(server).listen_and_serve("svc", measure)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve_later)
            with trio.move_on_after(5):
                async with cs.Client(client, dial_timeout=10).lookup_and_post("svc") as sources:
                    await sources.receive()
    # The server got what was left after the 3 s spent waiting for it, not 5 s.
    assert remaining and remaining[0] == pytest.approx(2.0, abs=0.01)


async def test_a_post_waiting_for_room_on_the_link_is_bounded_by_dial_timeout(
    autojump_clock: object,
) -> None:
    # The peer takes one stream of ours at a time: a second request waits for room
    # within dial_timeout like one waiting for a node, then goes when there is room.
    async def one(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(b"one", endless_frames())
        await trio.sleep_forever()  # the request stays open

    async with linked_pair(settings=cs.Settings(max_concurrent_streams=1)) as pair:
        server, client, _, _ = pair
        await cs.Server(server).listen_and_serve("svc", one)
        poster = cs.Client(client, dial_timeout=2.0)
        with trio.fail_after(30):
            async with poster.lookup_and_post("svc") as sources:
                held = await sources.receive()
                assert await held.receive() == FRAME
                started = trio.current_time()
                with pytest.raises(cs.ServiceNotFound, match=r"waited 2\.0 s"):
                    async with poster.lookup_and_post("svc"):
                        pass  # pragma: no cover - never reached
                assert trio.current_time() - started == pytest.approx(2.0)
            async with poster.lookup_and_post("svc") as sources:
                again = await sources.receive()
                assert await again.receive() == FRAME
