"""The chanserv API (Server, Client, Source, RemoteSource) end to end over TCP loopback."""

from __future__ import annotations

import socket
import struct
from collections.abc import AsyncIterator
from typing import Any

import attrs
import pytest
import trio
import trio.lowlevel
import trio.testing
from helpers import chanserv_nodes, drain, wait_quiet, wait_until

import chanserv_trio as cs

SERVICE = "chanserv"


@attrs.define
class Watch:
    """Records how pieces of server-side code ended, from their ``finally`` blocks."""

    ended: dict[str, trio.Event] = attrs.field(factory=dict)
    raised: dict[str, BaseException | None] = attrs.field(factory=dict)

    def event(self, name: str) -> trio.Event:
        return self.ended.setdefault(name, trio.Event())

    def cancelled(self, name: str) -> bool:
        return isinstance(self.raised.get(name), trio.Cancelled)

    def stopped(self, name: str) -> bool:
        """Cancelled while running, or closed by the server while suspended at a
        ``yield`` (an async generator cannot see ``Cancelled`` there)."""
        return isinstance(self.raised.get(name), trio.Cancelled | GeneratorExit)

    async def wait(self, *names: str) -> None:
        for name in names:
            await self.event(name).wait()


def watched(watch: Watch, name: str) -> Any:
    """A context manager noting whether the block ended by an exception, and which."""

    class _Watched:
        def __enter__(self) -> None:
            watch.event(name)
            watch.raised[name] = None

        def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
            watch.raised[name] = exc
            watch.event(name).set()

    return _Watched()


def single_frame(data: bytes) -> AsyncIterator[bytes]:
    async def frames() -> AsyncIterator[bytes]:
        yield data

    return frames()


async def serve(
    server_mpx: cs.Multiplexer,
    source_fn: cs.SourceFunction,
    **options: Any,
) -> tuple[cs.Server, list[BaseException]]:
    errors: list[BaseException] = []
    server = cs.Server(server_mpx, on_error=errors.append, **options)
    await server.listen_and_serve(SERVICE, source_fn)
    return server, errors


# ----------------------------------------------------------- the README tour


async def test_readme_example_end_to_end() -> None:
    seen: list[tuple[bytes, str, bytes]] = []
    ended: list[bytes] = []

    async def frames_for(i: int) -> AsyncIterator[bytes]:
        yield b"wait for me!"
        await trio.sleep(0.1 * (i + 1))
        yield b"ok I'm ready"

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        assert request == b"hello"
        for i in range(5):
            yield cs.Source(header=b"source @%d" % i, frames=frames_for(i))

    async def consume(source: cs.RemoteSource) -> None:
        async for frame in source:
            seen.append((source.header, source.meta.remote_addr, frame))
        ended.append(source.header)

    with trio.fail_after(30):
        async with cs.Multiplexer() as server_mpx:
            address = await server_mpx.listen("tcp://127.0.0.1:0")
            assert address.startswith("tcp://127.0.0.1:") and not address.endswith(":0")
            server = cs.Server(server_mpx, on_error=print)
            await server.listen_and_serve("chanserv", source_fn)
            async with cs.Multiplexer() as client_mpx:
                await client_mpx.join(address)
                client = cs.Client(client_mpx, dial_timeout=5.0, on_error=print)
                async with client.lookup_and_post("chanserv", b"hello") as sources:
                    assert isinstance(sources, trio.abc.ReceiveChannel)
                    async with trio.open_nursery() as nursery:
                        async for source in sources:
                            assert isinstance(source, cs.RemoteSource)
                            assert isinstance(source, trio.abc.ReceiveChannel)
                            assert source.meta.service == "chanserv"
                            nursery.start_soon(consume, source)
                await wait_quiet(server_mpx, client_mpx)
    headers = [b"source @%d" % i for i in range(5)]
    assert sorted(ended) == headers
    for header in headers:
        frames = [frame for h, _, frame in seen if h == header]
        assert frames == [b"wait for me!", b"ok I'm ready"]
    assert {addr for _, addr, _ in seen} == {address}
    # Source @0 finished its second frame before source @4 did (0.1 s vs 0.5 s).
    second = [h for h, _, frame in seen if frame == b"ok I'm ready"]
    assert second == headers


# ------------------------------------------------------------- independence


async def test_an_ignored_source_does_not_stall_its_siblings_or_other_requests() -> None:
    window = 16 << 10
    frame = b"f" * 1024
    per_source = 300  # 300 KiB per source, ~19 windows
    produced: dict[bytes, int] = {}
    finished: dict[bytes, trio.Event] = {}

    async def frames(header: bytes) -> AsyncIterator[bytes]:
        for _ in range(per_source):
            produced[header] = produced.get(header, 0) + 1
            yield frame
        finished[header].set()

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        for index in range(4):
            header = request + b" %d" % index
            finished[header] = trio.Event()
            yield cs.Source(header=header, frames=frames(header))

    async with chanserv_nodes(client_settings=cs.Settings(initial_stream_window=window)) as (
        server_mpx,
        client_mpx,
    ):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(15):
            async with client.lookup_and_post(SERVICE, b"first") as sources:
                ignored = await sources.receive()
                assert ignored.header == b"first 0"
                siblings = [source async for source in sources]
                for source in siblings:
                    assert await drain(source) == [frame] * per_source
                # Another request on the same connection also flows freely.
                async with client.lookup_and_post(SERVICE, b"second") as other:
                    for source in [source async for source in other]:
                        assert len(await drain(source)) == per_source
                assert not finished[b"first 0"].is_set()
                # What the ignored source sent fits its window (plus the frame in hand).
                assert produced[b"first 0"] <= window // len(frame) + 2
                stats = client_mpx.statistics()
                assert stats.bytes_buffered <= window + 4096
                # Read late, it still delivers everything, in order.
                assert await drain(ignored) == [frame] * per_source
            await wait_quiet(server_mpx, client_mpx)
        assert server_mpx.statistics().window_stalls > 0


# --------------------------------------------------------------- cancellation


async def test_leaving_the_block_early_cancels_source_function_and_producers() -> None:
    watch = Watch()

    async def frames(index: int) -> AsyncIterator[bytes]:
        with watched(watch, f"frames {index}"):
            yield b"first of %d" % index
            await trio.sleep_forever()

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        with watched(watch, "source_fn"):
            for index in range(3):
                yield cs.Source(header=b"%d" % index, frames=frames(index))
            await trio.sleep_forever()

    async with chanserv_nodes() as (server_mpx, client_mpx):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                received = [await sources.receive() for _ in range(3)]
                for index, source in enumerate(received):
                    assert await source.receive() == b"first of %d" % index
                # Leave with the request still running on the server.
            await watch.wait("source_fn", "frames 0", "frames 1", "frames 2")
            await wait_quiet(server_mpx, client_mpx)
    for name in ("source_fn", "frames 0", "frames 1", "frames 2"):
        assert watch.cancelled(name), (name, watch.raised[name])


async def test_exception_in_the_block_cancels_the_server_side_and_propagates() -> None:
    watch = Watch()

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        with watched(watch, "source_fn"):
            yield cs.Source(header=b"only")
            await trio.sleep_forever()

    async with chanserv_nodes() as (server_mpx, client_mpx):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            with pytest.raises(ZeroDivisionError):
                async with client.lookup_and_post(SERVICE, b"") as sources:
                    await sources.receive()
                    1 / 0  # noqa: B018
            await watch.wait("source_fn")
            await wait_quiet(server_mpx, client_mpx)
    assert watch.cancelled("source_fn")


async def test_source_aclose_stops_that_source_only() -> None:
    watch = Watch()

    async def frames(index: int) -> AsyncIterator[bytes]:
        with watched(watch, f"frames {index}"):
            for seq in range(100_000):
                yield struct.pack(">II", index, seq)
                await trio.sleep(0.001)

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        for index in range(3):
            yield cs.Source(header=b"%d" % index, frames=frames(index))

    async with chanserv_nodes() as (server_mpx, client_mpx):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                first, second, third = [await sources.receive() for _ in range(3)]
                assert await first.receive() == struct.pack(">II", 0, 0)
                await first.aclose()
                await watch.wait("frames 0")
                assert watch.stopped("frames 0"), watch.raised["frames 0"]
                with pytest.raises(trio.ClosedResourceError):
                    await first.receive()
                # The siblings keep delivering after their sibling stopped.
                for index, source in ((1, second), (2, third)):
                    for seq in range(20):
                        assert await source.receive() == struct.pack(">II", index, seq)
                assert not watch.event("frames 1").is_set()
                assert not watch.event("frames 2").is_set()
            await watch.wait("frames 1", "frames 2")
            await wait_quiet(server_mpx, client_mpx)


# ------------------------------------------------------------------- errors


async def test_failing_frames_iterable_is_a_remote_error_on_that_source_only() -> None:
    async def frames(index: int) -> AsyncIterator[bytes]:
        yield b"a%d" % index
        yield b"b%d" % index
        if index == 1:
            raise ValueError("frame 3 of source 1 is bad")
        yield b"c%d" % index

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        for index in range(3):
            yield cs.Source(header=b"%d" % index, frames=frames(index))

    async with chanserv_nodes() as (server_mpx, client_mpx):
        _, server_errors = await serve(server_mpx, source_fn)
        client_errors: list[BaseException] = []
        client = cs.Client(client_mpx, dial_timeout=5, on_error=client_errors.append)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                received = [source async for source in sources]  # ends normally
                assert [source.header for source in received] == [b"0", b"1", b"2"]
                assert await drain(received[0]) == [b"a0", b"b0", b"c0"]
                assert await drain(received[2]) == [b"a2", b"b2", b"c2"]
                assert await received[1].receive() == b"a1"
                assert await received[1].receive() == b"b1"
                with pytest.raises(cs.RemoteError) as info:
                    await received[1].receive()
            await wait_quiet(server_mpx, client_mpx)
    assert info.value.kind == "ValueError"
    assert info.value.message == "frame 3 of source 1 is bad"
    assert isinstance(info.value, cs.ChanservError)
    assert "ValueError: frame 3 of source 1 is bad" in str(info.value)
    assert len(server_errors) == 1 and isinstance(server_errors[0], ValueError)
    assert client_errors == [info.value]


async def test_failing_source_function_ends_the_request_after_its_sources() -> None:
    failed = trio.Event()

    async def frames(index: int) -> AsyncIterator[bytes]:
        for seq in range(3):
            yield b"%d:%d" % (index, seq)
            await failed.wait()  # still running when the source function fails

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        try:
            yield cs.Source(header=b"0", frames=frames(0))
            yield cs.Source(header=b"1", frames=frames(1))
            raise RuntimeError("ran out of sources")
        finally:
            failed.set()

    async with chanserv_nodes() as (server_mpx, client_mpx):
        _, server_errors = await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                first = await sources.receive()
                second = await sources.receive()
                with pytest.raises(cs.RemoteError) as info:
                    await sources.receive()
                # The sources announced before the failure still work to their end.
                assert await drain(first) == [b"0:0", b"0:1", b"0:2"]
                assert await drain(second) == [b"1:0", b"1:1", b"1:2"]
            await wait_quiet(server_mpx, client_mpx)
    assert info.value.kind == "RuntimeError"
    assert info.value.message == "ran out of sources"
    assert [type(exc) for exc in server_errors] == [RuntimeError]


async def test_source_function_yielding_a_non_source_is_a_remote_type_error() -> None:
    async def source_fn(request: bytes) -> AsyncIterator[Any]:
        yield b"not a Source"

    async with chanserv_nodes() as (server_mpx, client_mpx):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                with pytest.raises(cs.RemoteError) as info:
                    await sources.receive()
    assert info.value.kind == "TypeError"
    assert "Source" in info.value.message


async def test_frame_that_is_not_bytes_like_is_a_remote_type_error() -> None:
    async def frames() -> AsyncIterator[Any]:
        yield b"fine"
        yield 42

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"", frames=frames())

    async with chanserv_nodes() as (server_mpx, client_mpx):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                source = await sources.receive()
                assert await source.receive() == b"fine"
                with pytest.raises(cs.RemoteError) as info:
                    await source.receive()
    assert info.value.kind == "TypeError"


def one_endless_source(watch: Watch) -> cs.SourceFunction:
    """One source that sends a frame and then waits forever, as does the source function
    (so the request is still running on both levels)."""

    async def frames() -> AsyncIterator[bytes]:
        with watched(watch, "frames"):
            yield b"first"
            await trio.sleep_forever()

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        with watched(watch, "source_fn"):
            yield cs.Source(header=b"endless", frames=frames())
            await trio.sleep_forever()

    return source_fn


@pytest.mark.parametrize("side", ["server", "client"])
async def test_transport_closed_mid_stream_is_connection_lost(side: str) -> None:
    watch = Watch()
    async with chanserv_nodes() as (server_mpx, client_mpx):
        await serve(server_mpx, one_endless_source(watch))
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                source = await sources.receive()
                assert await source.receive() == b"first"
                # One end of the connection vanishes.
                (link,) = (server_mpx if side == "server" else client_mpx).links
                await trio.aclose_forcefully(link.transport)
                with pytest.raises(cs.ConnectionLost):
                    await source.receive()
                with pytest.raises(cs.ConnectionLost):
                    await sources.receive()
            await watch.wait("frames", "source_fn")
            if side == "server":  # (the client redials a link it lost itself)
                await wait_until(lambda: not client_mpx.links and not server_mpx.links)
    assert watch.cancelled("frames") and watch.cancelled("source_fn")


async def test_server_multiplexer_closed_mid_stream_is_server_shutting_down() -> None:
    watch = Watch()
    stop_server = trio.Event()

    async def run_server(*, task_status: trio.TaskStatus[str]) -> None:
        async with cs.Multiplexer(shutdown_grace=0.1) as server_mpx:
            address = await server_mpx.listen("tcp://127.0.0.1:0")
            await serve(server_mpx, one_endless_source(watch))
            task_status.started(address)
            await stop_server.wait()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery, cs.Multiplexer() as client_mpx:
            address = await nursery.start(run_server)
            await client_mpx.join(address)
            client = cs.Client(client_mpx, dial_timeout=5)
            async with client.lookup_and_post(SERVICE, b"") as sources:
                source = await sources.receive()
                assert await source.receive() == b"first"
                stop_server.set()  # its grace period is too short for an endless source
                with pytest.raises(cs.ServerShuttingDown):
                    await source.receive()
                with pytest.raises(cs.ServerShuttingDown):
                    await sources.receive()
            await watch.wait("frames", "source_fn")
            await wait_until(lambda: not client_mpx.links)
            # Nothing is left to reach: posting again finds no service.
            with pytest.raises(cs.ServiceNotFound):
                async with cs.Client(client_mpx, dial_timeout=0.1).lookup_and_post(SERVICE):
                    pass  # pragma: no cover
    assert watch.cancelled("frames") and watch.cancelled("source_fn")


async def test_unknown_service_is_service_not_found_after_dial_timeout(
    autojump_clock: trio.abc.Clock,
) -> None:
    async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
        await serve(server_mpx, one_endless_source(Watch()))
        errors: list[BaseException] = []
        client = cs.Client(client_mpx, dial_timeout=3.0, on_error=errors.append)
        start = trio.current_time()
        with trio.fail_after(30), pytest.raises(cs.ServiceNotFound, match="nobody"):
            async with client.lookup_and_post("nobody", b""):
                pass  # pragma: no cover
        assert trio.current_time() - start == pytest.approx(3.0, abs=0.01)
        assert len(errors) == 1 and isinstance(errors[0], cs.ServiceNotFound)


async def test_service_registered_within_dial_timeout_is_found(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"late", frames=single_frame(request))

    async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
        client = cs.Client(client_mpx, dial_timeout=3.0)

        async def register_later() -> None:
            await trio.sleep(2.0)
            await serve(server_mpx, source_fn)

        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(register_later)
                start = trio.current_time()
                async with client.lookup_and_post(SERVICE, b"body") as sources:
                    source = await sources.receive()
                    assert await drain(source) == [b"body"]
                assert 2.0 <= trio.current_time() - start < 3.0
            await wait_quiet(server_mpx, client_mpx)


async def test_join_to_a_closed_port_is_connection_lost() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with cs.Multiplexer() as mpx:
        with trio.fail_after(10), pytest.raises(cs.ConnectionLost):
            await mpx.join(f"tcp://127.0.0.1:{port}")


# -------------------------------------------------------------------- scale


async def test_a_thousand_sources_on_one_connection() -> None:
    count = 1000

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        for index in range(count):
            yield cs.Source(header=b"%d" % index, frames=single_frame(b"frame %d" % index))

    async with chanserv_nodes() as (server_mpx, client_mpx):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        got: dict[bytes, list[bytes]] = {}
        with trio.fail_after(20):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                async for source in sources:
                    got[source.header] = await drain(source)
            await wait_quiet(server_mpx, client_mpx)
        assert len(client_mpx.links) == 1
    assert list(got) == [b"%d" % index for index in range(count)]
    assert all(got[b"%d" % index] == [b"frame %d" % index] for index in range(count))


async def test_a_thousand_sources_consumed_concurrently() -> None:
    count = 1000

    async def frames(index: int) -> AsyncIterator[bytes]:
        for seq in range(3):
            yield struct.pack(">II", index, seq)

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        for index in range(count):
            yield cs.Source(header=b"%d" % index, frames=frames(index))

    async with chanserv_nodes() as (server_mpx, client_mpx):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        got: dict[int, list[bytes]] = {}

        async def consume(source: cs.RemoteSource) -> None:
            got[int(source.header)] = await drain(source)

        with trio.fail_after(20):
            async with (
                client.lookup_and_post(SERVICE, b"") as sources,
                trio.open_nursery() as nursery,
            ):
                async for source in sources:
                    nursery.start_soon(consume, source)
            await wait_quiet(server_mpx, client_mpx)
    assert sorted(got) == list(range(count))
    for index, frames_got in got.items():
        assert frames_got == [struct.pack(">II", index, seq) for seq in range(3)]


async def test_leaving_the_block_cancels_sources_still_open_among_many_finished() -> None:
    # Sources read to their end are forgotten by the request as it goes; the ones
    # still open, announced before or after, are all cancelled on leaving.
    count = 300
    watch = Watch()

    async def frames(index: int) -> AsyncIterator[bytes]:
        with watched(watch, f"frames {index}"):
            yield b"first of %d" % index
            if index % 3 == 0:
                await trio.sleep_forever()

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        for index in range(count):
            yield cs.Source(header=b"%d" % index, frames=frames(index))

    async with chanserv_nodes() as (server_mpx, client_mpx):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        held = []
        with trio.fail_after(20):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                async for source in sources:
                    index = int(source.header)
                    assert source.meta == cs.SourceMeta(
                        client_mpx.links[0].remote_addr, SERVICE, source.meta.stream_id
                    )
                    assert await source.receive() == b"first of %d" % index
                    if index % 3:
                        assert await drain(source) == []
                    else:
                        held.append(source)
                assert len(held) == count // 3
            await watch.wait(*(f"frames {index}" for index in range(count)))
            await wait_quiet(server_mpx, client_mpx)
    for index in range(count):
        name = f"frames {index}"
        if index % 3:
            assert watch.raised[name] is None, (name, watch.raised[name])
        else:
            assert watch.stopped(name), (name, watch.raised[name])
    assert len({source.meta.stream_id for source in held}) == count // 3


FIFTY_MIB = 50 << 20


async def test_a_fifty_mib_frame_arrives_whole() -> None:
    big = bytes(range(256)) * (FIFTY_MIB // 256)

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"big", frames=single_frame(big))

    with trio.fail_after(20):
        async with chanserv_nodes() as (server_mpx, client_mpx):
            await serve(server_mpx, source_fn)
            client = cs.Client(client_mpx, dial_timeout=5)
            async with client.lookup_and_post(SERVICE, b"") as sources:
                source = await sources.receive()
                frames = await drain(source)
            await wait_quiet(server_mpx, client_mpx)
    assert len(frames) == 1
    assert type(frames[0]) is bytes
    assert len(frames[0]) == FIFTY_MIB and frames[0] == big


# ----------------------------------------------------------- frame kinds


class Record:
    """A domain object that knows its own bytes."""

    def __init__(self, value: int) -> None:
        self.value = value

    def __bytes__(self) -> bytes:
        return b"record %d" % self.value


async def test_frames_may_be_bytes_bytearray_memoryview_or_have_bytes_protocol() -> None:
    async def frames() -> AsyncIterator[cs.FrameLike]:
        yield b"bytes"
        yield bytearray(b"bytearray")
        yield memoryview(b"<memoryview>")[1:-1]
        yield Record(7)
        yield b""

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"kinds", frames=frames())

    async with chanserv_nodes() as (server_mpx, client_mpx):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                got = await drain(await sources.receive())
            await wait_quiet(server_mpx, client_mpx)
    assert got == [b"bytes", b"bytearray", b"memoryview", b"record 7", b""]
    assert all(type(frame) is bytes for frame in got)


async def test_a_trio_memory_channel_as_frames_and_an_empty_source() -> None:
    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        send, receive = trio.open_memory_channel[bytes](4)

        async def feed() -> None:
            async with send:
                for index in range(20):
                    await send.send(b"from channel %d" % index)

        nursery.start_soon(feed)
        yield cs.Source(header=b"channel", frames=receive)
        yield cs.Source()  # empty header, no frames

    async with chanserv_nodes() as (server_mpx, client_mpx), trio.open_nursery() as nursery:
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                from_channel, empty = [source async for source in sources]
                assert await drain(from_channel) == [b"from channel %d" % i for i in range(20)]
                assert empty.header == b""
                assert await drain(empty) == []
            await wait_quiet(server_mpx, client_mpx)


# ------------------------------------------------------ ordering, exactly once


async def test_frames_arrive_in_order_exactly_once_across_interleaved_sources() -> None:
    sources_count, frames_count = 8, 2000

    async def frames(index: int) -> AsyncIterator[bytes]:
        for seq in range(frames_count):
            yield struct.pack(">II", index, seq) + b"." * (seq % 97)
            if seq % 256 == 0:
                await trio.lowlevel.checkpoint()  # let the sources interleave on the wire

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        for index in range(sources_count):
            yield cs.Source(header=b"%d" % index, frames=frames(index))

    async with chanserv_nodes(client_settings=cs.Settings(initial_stream_window=32 << 10)) as (
        server_mpx,
        client_mpx,
    ):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        got: dict[int, list[int]] = {}

        async def consume(source: cs.RemoteSource) -> None:
            index = int(source.header)
            seqs = got.setdefault(index, [])
            async for frame in source:
                source_index, seq = struct.unpack_from(">II", frame)
                assert source_index == index
                assert len(frame) == 8 + seq % 97
                seqs.append(seq)
                if seq % 500 == 0:
                    await trio.sleep(0.001)  # a slowish reader, so windows fill up

        with trio.fail_after(20):
            async with (
                client.lookup_and_post(SERVICE, b"") as sources,
                trio.open_nursery() as nursery,
            ):
                async for source in sources:
                    nursery.start_soon(consume, source)
            await wait_quiet(server_mpx, client_mpx)
        assert client_mpx.statistics().open_streams == 0
        assert server_mpx.statistics().open_streams == 0
    assert sorted(got) == list(range(sources_count))
    for seqs in got.values():
        assert seqs == list(range(frames_count))


async def test_statistics_show_no_open_streams_after_a_mix_of_outcomes() -> None:
    async def frames(kind: bytes) -> AsyncIterator[bytes]:
        yield kind
        if kind == b"fail":
            raise OSError("disk gone")
        if kind == b"endless":
            await trio.sleep_forever()

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        for kind in (b"ok", b"fail", b"endless", b"ignored"):
            yield cs.Source(header=kind, frames=frames(kind))
        if request == b"raise":
            raise LookupError("no more")

    async with chanserv_nodes() as (server_mpx, client_mpx):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            for body in (b"ok", b"raise"):
                async with client.lookup_and_post(SERVICE, body) as sources:
                    ok, fail, endless, _ignored = [await sources.receive() for _ in range(4)]
                    assert await drain(ok) == [b"ok"]
                    with pytest.raises(cs.RemoteError):
                        await drain(fail)
                    assert await endless.receive() == b"endless"
                    await endless.aclose()
                assert client_mpx.statistics().links == 1
            await wait_quiet(server_mpx, client_mpx)
        stats = client_mpx.statistics()
        assert stats.open_streams == 0 and stats.bytes_buffered == 0
        assert server_mpx.statistics().open_streams == 0


# -------------------------------------------------------------- deadlines


async def test_client_deadline_travels_to_the_server(autojump_clock: trio.abc.Clock) -> None:
    watch = Watch()
    remaining: list[float] = []

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        with watched(watch, "source_fn"):
            remaining.append(trio.current_effective_deadline() - trio.current_time())
            yield cs.Source(header=b"slow")
            await trio.sleep_forever()

    async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        start = trio.current_time()
        with trio.move_on_after(5.0):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                await sources.receive()
                # The client does not give up on its own: only the deadline it sent
                # can stop the server, which then reports it.
                with trio.CancelScope(shield=True), trio.fail_after(30):
                    with pytest.raises(cs.DeadlineExceeded):
                        await sources.receive()
                    await watch.wait("source_fn")
                    cancelled_at = trio.current_time() - start
        with trio.fail_after(30):
            await wait_quiet(server_mpx, client_mpx)
    assert watch.cancelled("source_fn")
    assert cancelled_at == pytest.approx(5.0, abs=0.1)
    assert remaining and 4.9 <= remaining[0] <= 5.0


async def test_no_deadline_on_the_client_means_none_on_the_server() -> None:
    remaining: list[float] = []

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        remaining.append(trio.current_effective_deadline())
        yield cs.Source(header=b"x")

    async with chanserv_nodes() as (server_mpx, client_mpx):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        async with client.lookup_and_post(SERVICE, b"") as sources:
            with trio.fail_after(10):  # the scope is inside the request: not sent
                assert [source.header async for source in sources] == [b"x"]
    assert remaining == [float("inf")]


async def test_serving_timeout_is_deadline_exceeded(autojump_clock: trio.abc.Clock) -> None:
    watch = Watch()
    async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
        _, errors = await serve(server_mpx, one_endless_source(watch), serving_timeout=2.0)
        client = cs.Client(client_mpx, dial_timeout=5)
        start = trio.current_time()
        with trio.fail_after(30):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                source = await sources.receive()
                assert await source.receive() == b"first"
                with pytest.raises(cs.DeadlineExceeded):
                    await source.receive()
                assert trio.current_time() - start == pytest.approx(2.0, abs=0.1)
                with pytest.raises(cs.DeadlineExceeded):
                    await sources.receive()
            await watch.wait("frames")
            await wait_quiet(server_mpx, client_mpx)
    assert watch.cancelled("frames")
    assert errors == []  # a deadline is not an error of the source function


async def test_sourcing_timeout_is_deadline_exceeded(autojump_clock: trio.abc.Clock) -> None:
    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"quick", frames=single_frame(b"q"))
        await trio.sleep(0.5)
        yield cs.Source(header=b"in time", frames=single_frame(b"t"))
        await trio.sleep(10)
        yield cs.Source(header=b"too late")  # pragma: no cover

    async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
        _, errors = await serve(server_mpx, source_fn, sourcing_timeout=1.0)
        client = cs.Client(client_mpx, dial_timeout=5)
        start = trio.current_time()
        with trio.fail_after(30):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                quick = await sources.receive()
                in_time = await sources.receive()
                with pytest.raises(cs.DeadlineExceeded, match="sourcing_timeout"):
                    await sources.receive()
                assert trio.current_time() - start == pytest.approx(1.5, abs=0.1)
                assert await drain(quick) == [b"q"]
                assert await drain(in_time) == [b"t"]
            await wait_quiet(server_mpx, client_mpx)
    assert [type(exc) for exc in errors] == [trio.TooSlowError]


async def test_frame_write_timeout_is_deadline_exceeded(autojump_clock: trio.abc.Clock) -> None:
    window = 4096
    watch = Watch()

    async def frames() -> AsyncIterator[bytes]:
        with watched(watch, "frames"):
            for seq in range(100):
                yield seq.to_bytes(2, "big") * 256  # 512 bytes: 8 fill the window

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"fast", frames=frames())

    async with chanserv_nodes(
        client_settings=cs.Settings(initial_stream_window=window), memory=True
    ) as (
        server_mpx,
        client_mpx,
    ):
        _, errors = await serve(server_mpx, source_fn, frame_write_timeout=1.0)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(30):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                source = await sources.receive()
                await watch.wait("frames")  # the client reads nothing meanwhile
                got: list[bytes] = []
                with pytest.raises(cs.DeadlineExceeded, match="frame_write_timeout"):
                    async for frame in source:
                        got.append(frame)
            await wait_quiet(server_mpx, client_mpx)
    # Everything that fit the window arrived, in order, before the error.
    assert got == [seq.to_bytes(2, "big") * 256 for seq in range(window // 512)]
    assert [type(exc) for exc in errors] == [trio.TooSlowError]


async def test_frame_read_timeout_is_deadline_exceeded(autojump_clock: trio.abc.Clock) -> None:
    watch = Watch()
    async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
        await serve(server_mpx, one_endless_source(watch))
        client_errors: list[BaseException] = []
        client = cs.Client(
            client_mpx, dial_timeout=5, frame_read_timeout=1.5, on_error=client_errors.append
        )
        with trio.fail_after(30):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                source = await sources.receive()
                assert await source.receive() == b"first"
                start = trio.current_time()
                with pytest.raises(cs.DeadlineExceeded, match="frame_read_timeout"):
                    await source.receive()
                assert trio.current_time() - start == pytest.approx(1.5, abs=0.01)
                # The server's producer is stopped too, while the request lives on.
                await watch.wait("frames")
                assert watch.cancelled("frames")
            await wait_quiet(server_mpx, client_mpx)
    assert len(client_errors) == 1 and isinstance(client_errors[0], cs.DeadlineExceeded)


async def test_frame_read_timeout_does_not_fire_while_frames_keep_coming(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def frames() -> AsyncIterator[bytes]:
        for seq in range(10):
            await trio.sleep(1.0)  # ten seconds in all, one at a time
            yield b"%d" % seq

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"steady", frames=frames())

    async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5, frame_read_timeout=1.5)
        with trio.fail_after(30):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                assert await drain(await sources.receive()) == [b"%d" % i for i in range(10)]
            await wait_quiet(server_mpx, client_mpx)


@pytest.mark.parametrize(
    "options",
    [
        {"serving_timeout": 0},
        {"sourcing_timeout": -1.0},
        {"frame_write_timeout": 0.0},
        {"max_error_mass": 0},
    ],
)
async def test_server_rejects_nonsense_options(options: dict[str, Any]) -> None:
    async with cs.Multiplexer() as mpx:
        with pytest.raises(ValueError):
            cs.Server(mpx, **options)


@pytest.mark.parametrize("options", [{"dial_timeout": -1.0}, {"frame_read_timeout": 0.0}])
async def test_client_rejects_nonsense_options(options: dict[str, Any]) -> None:
    async with cs.Multiplexer() as mpx:
        with pytest.raises(ValueError):
            cs.Client(mpx, **options)


# -------------------------------------------------------------- error mass


async def test_max_error_mass_calls_back_and_success_resets_the_count() -> None:
    calls: list[tuple[int, BaseException]] = []

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        if request.startswith(b"fail"):
            raise ValueError(request.decode())
        yield cs.Source(header=b"fine")

    async with chanserv_nodes() as (server_mpx, client_mpx):
        _, errors = await serve(
            server_mpx,
            source_fn,
            max_error_mass=3,
            on_max_error_mass=lambda count, exc: calls.append((count, exc)),
        )
        client = cs.Client(client_mpx, dial_timeout=5)

        async def post(body: bytes) -> None:
            async with client.lookup_and_post(SERVICE, body) as sources:
                if body.startswith(b"fail"):
                    with pytest.raises(cs.RemoteError):
                        await sources.receive()
                else:
                    assert [source.header async for source in sources] == [b"fine"]
            await wait_quiet(server_mpx, client_mpx)

        with trio.fail_after(10):
            for body in (b"fail 1", b"fail 2"):
                await post(body)
            assert calls == []
            await post(b"fail 3")
            assert len(calls) == 1
            count, last = calls[0]
            assert count == 3 and isinstance(last, ValueError) and str(last) == "fail 3"
            # The count starts again from zero after the callback...
            await post(b"fail 4")
            await post(b"fail 5")
            assert len(calls) == 1
            # ... and after a request that succeeded.
            await post(b"ok")
            await post(b"fail 6")
            await post(b"fail 7")
            assert len(calls) == 1
            await post(b"fail 8")
            assert len(calls) == 2 and str(calls[1][1]) == "fail 8"
    assert len(errors) == 8  # on_error sees every error, whatever the mass


async def test_stop_serving_withdraws_the_service(autojump_clock: trio.abc.Clock) -> None:
    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"here")

    async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
        server, _ = await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=1.0)
        with trio.fail_after(30):
            async with client.lookup_and_post(SERVICE) as sources:
                assert [source.header async for source in sources] == [b"here"]
            server.stop_serving(SERVICE)
            await wait_until(lambda: not client_mpx.links_offering(SERVICE))
            with pytest.raises(cs.ServiceNotFound):
                async with client.lookup_and_post(SERVICE):
                    pass  # pragma: no cover


# ------------------------------------- chanserv errors raised by user code


async def test_frame_over_the_clients_message_limit_fails_that_source_only() -> None:
    async def frames(size: int) -> AsyncIterator[bytes]:
        yield b"small"
        yield b"x" * size

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"too big", frames=frames(2048))
        yield cs.Source(header=b"fits", frames=frames(1024))

    async with chanserv_nodes(client_settings=cs.Settings(max_message_size=1024)) as (
        server_mpx,
        client_mpx,
    ):
        _, errors = await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                too_big, fits = [source async for source in sources]
                assert await too_big.receive() == b"small"
                with pytest.raises(cs.RemoteError) as info:
                    await too_big.receive()
                assert await drain(fits) == [b"small", b"x" * 1024]
            await wait_quiet(server_mpx, client_mpx)
    assert info.value.kind == "MessageTooLarge"
    assert [type(exc) for exc in errors] == [cs.MessageTooLarge]


async def test_source_header_over_the_clients_limit_is_a_remote_error() -> None:
    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"fine", frames=single_frame(b"f"))
        yield cs.Source(header=b"h" * 2048)

    async with chanserv_nodes(client_settings=cs.Settings(max_open_payload=1024)) as (
        server_mpx,
        client_mpx,
    ):
        _, errors = await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                fine = await sources.receive()
                with pytest.raises(cs.RemoteError) as info:
                    await sources.receive()
                assert await drain(fine) == [b"f"]
            await wait_quiet(server_mpx, client_mpx)
    assert info.value.kind == "MessageTooLarge"
    assert [type(exc) for exc in errors] == [cs.MessageTooLarge]


async def test_chanserv_error_from_a_proxied_upstream_is_a_remote_error() -> None:
    """A server that relays another service's frames passes the upstream failure on,
    as an error of that source and of the source function, never as a normal end."""

    async def frames() -> AsyncIterator[bytes]:
        yield b"relayed"
        raise cs.RemoteError("ValueError", "upstream source broke")

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"relay", frames=frames())
        if request == b"lookup fails too":
            raise cs.ServiceNotFound("no upstream named 'origin'")

    async with chanserv_nodes() as (server_mpx, client_mpx):
        _, errors = await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"lookup fails too") as sources:
                relay = await sources.receive()
                with pytest.raises(cs.RemoteError) as on_request:
                    await sources.receive()
                assert await relay.receive() == b"relayed"
                with pytest.raises(cs.RemoteError) as on_source:
                    await relay.receive()
            await wait_quiet(server_mpx, client_mpx)
    assert on_request.value.kind == "ServiceNotFound"
    assert on_request.value.message == "no upstream named 'origin'"
    assert on_source.value.kind == "RemoteError"
    assert "upstream source broke" in on_source.value.message
    assert sorted(type(exc).__name__ for exc in errors) == ["RemoteError", "ServiceNotFound"]


async def test_source_function_raising_before_it_returns_is_a_remote_error() -> None:
    """A plain function may check the request and raise before it returns its
    iterable; that is the source function failing, like any other."""

    async def announce(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=request)

    def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        if not request:
            raise ValueError("empty request")
        return announce(request)

    async with chanserv_nodes() as (server_mpx, client_mpx):
        _, errors = await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                with pytest.raises(cs.RemoteError) as info:
                    await sources.receive()
            async with client.lookup_and_post(SERVICE, b"fine") as sources:
                assert [source.header async for source in sources] == [b"fine"]
            await wait_quiet(server_mpx, client_mpx)
    assert info.value.kind == "ValueError" and info.value.message == "empty request"
    assert [type(exc) for exc in errors] == [ValueError]


async def test_source_function_returning_a_coroutine_is_a_remote_type_error() -> None:
    async def source_fn(request: bytes) -> list[cs.Source]:  # forgot to yield
        return [cs.Source(header=b"never")]

    async with chanserv_nodes() as (server_mpx, client_mpx):
        _, errors = await serve(server_mpx, source_fn)  # type: ignore[arg-type]
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                with pytest.raises(cs.RemoteError) as info:
                    await sources.receive()
            await wait_quiet(server_mpx, client_mpx)
    assert info.value.kind == "TypeError"
    assert [type(exc) for exc in errors] == [TypeError]


async def test_receive_after_source_aclose_is_closed_even_with_frames_buffered() -> None:
    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"three", frames=_three_frames())

    async with chanserv_nodes() as (server_mpx, client_mpx):
        await serve(server_mpx, source_fn)
        client = cs.Client(client_mpx, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post(SERVICE, b"") as sources:
                source = await sources.receive()
                assert await source.receive() == b"1"
                await wait_until(lambda: client_mpx.statistics().messages_in >= 3)
                await source.aclose()
                with pytest.raises(trio.ClosedResourceError):
                    await source.receive()
                with pytest.raises(trio.ClosedResourceError):
                    source.receive_nowait()
                assert [other async for other in sources] == []
            await wait_quiet(server_mpx, client_mpx)


async def _three_frames() -> AsyncIterator[bytes]:
    for frame in (b"1", b"2", b"3"):
        yield frame


@pytest.mark.parametrize(("tags", "route_key"), [({"bucket": "user-1"}, b"user-1"), (None, b"")])
async def test_the_client_puts_the_bucket_tag_in_the_route_key(
    autojump_clock: trio.abc.Clock, tags: dict[str, str] | None, route_key: bytes
) -> None:
    seen: list[bytes] = []

    async def peek(master: cs.LinkStream) -> None:
        seen.append(master.route_key)  # and no sources: the request ends at once

    async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
        server_mpx.handle("peek", peek)
        with trio.fail_after(5):
            async with cs.Client(client_mpx).lookup_and_post("peek", tags=tags) as sources:
                assert [source async for source in sources] == []
    assert seen == [route_key]
