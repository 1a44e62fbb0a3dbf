"""Load: 100 clients, each its own multiplexer joined over TCP loopback to one server,
post 20 requests of 10 sources each. Every frame carries its client, request, source
and sequence number and a CRC-32 trailer: nothing may be lost, duplicated, reordered or
damaged. Afterwards no stream is open and no byte buffered anywhere, every task the
library started for a request has exited, and once everything is closed, every task
started during the test has exited.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack
from typing import Any

import attrs
import trio
from faultproxy import CuttingProxy

import chanserv_trio as cs

SERVICE = "load"
CLIENTS = 100
REQUESTS = 20
SOURCES = 10
FRAMES = 3
#: Requests each client keeps in flight at once.
IN_FLIGHT = 5

_REQUEST = struct.Struct(">HH")  # client, request
_HEADER = struct.Struct(">HHH")  # client, request, source
_FRAME = struct.Struct(">HHHH")  # client, request, source, sequence number
_CRC = struct.Struct(">I")


def make_frame(client: int, request: int, source: int, seq: int) -> bytes:
    head = _FRAME.pack(client, request, source, seq)
    body = head + bytes((client + request + source + seq + i) % 256 for i in range(seq * 7))
    return body + _CRC.pack(zlib.crc32(body))


def read_frame(frame: bytes) -> tuple[int, int, int, int]:
    """``(client, request, source, seq)``; AssertionError if the frame is damaged."""
    body, trailer = frame[:-4], frame[-4:]
    assert _CRC.pack(zlib.crc32(body)) == trailer, f"bad checksum: {frame!r}"
    ids: tuple[int, int, int, int] = _FRAME.unpack_from(body)
    assert body == make_frame(*ids)[:-4], f"wrong payload: {frame!r}"
    return ids


async def source_fn(body: bytes) -> AsyncIterator[cs.Source]:
    client, request = _REQUEST.unpack(body)

    async def frames(source: int) -> AsyncIterator[bytes]:
        for seq in range(FRAMES):
            yield make_frame(client, request, source, seq)

    for source in range(SOURCES):
        yield cs.Source(header=_HEADER.pack(client, request, source), frames=frames(source))


class TaskCounter(trio.abc.Instrument):
    """Counts the tasks spawned and exited while it is installed."""

    def __init__(self) -> None:
        self.live: set[trio.lowlevel.Task] = set()
        self.spawned = 0
        self.exited = 0

    def task_spawned(self, task: trio.lowlevel.Task) -> None:
        self.live.add(task)
        self.spawned += 1

    def task_exited(self, task: trio.lowlevel.Task) -> None:
        self.live.discard(task)
        self.exited += 1


@attrs.define
class Ledger:
    """Every frame received, per source, in arrival order."""

    frames: dict[tuple[int, int, int], list[int]] = attrs.Factory(dict)
    headers: dict[tuple[int, int], list[int]] = attrs.Factory(dict)
    total: int = 0
    #: What went wrong, per request.
    failures: list[str] = attrs.Factory(list)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate``; wrap the call in ``trio.fail_after``."""
    while not predicate():  # noqa: ASYNC110 - the condition is the library's state
        await trio.sleep(0.01)


async def consume(source: cs.RemoteSource, key: tuple[int, int, int], ledger: Ledger) -> None:
    seqs = ledger.frames.setdefault(key, [])
    async for frame in source:
        client, request, index, seq = read_frame(frame)
        assert (client, request, index) == key, (key, frame)
        seqs.append(seq)
        ledger.total += 1


async def post(client: cs.Client, number: int, request: int, ledger: Ledger) -> None:
    headers = ledger.headers.setdefault((number, request), [])
    body = _REQUEST.pack(number, request)
    async with (
        client.lookup_and_post(SERVICE, body) as sources,
        trio.open_nursery() as nursery,
    ):
        async for source in sources:
            owner, asked, index = _HEADER.unpack(source.header)
            assert (owner, asked) == (number, request), source.header
            headers.append(index)
            nursery.start_soon(consume, source, (number, request, index), ledger)


async def run_client(mpx: cs.Multiplexer, number: int, ledger: Ledger) -> None:
    client = cs.Client(mpx, dial_timeout=5.0)
    limiter = trio.CapacityLimiter(IN_FLIGHT)

    async def one(request: int) -> None:
        async with limiter:
            try:
                await post(client, number, request, ledger)
            except Exception as exc:  # recorded, asserted once everything is closed
                ledger.failures.append(f"client {number} request {request}: {exc!r}")

    async with trio.open_nursery() as nursery:
        for request in range(REQUESTS):
            nursery.start_soon(one, request)


def quiet_stats(stats: cs.MultiplexerStatistics) -> bool:
    return stats.open_streams == 0 and stats.bytes_buffered == 0 and stats.bytes_queued == 0


def quiet(*nodes: cs.Multiplexer) -> bool:
    return all(quiet_stats(node.statistics()) for node in nodes)


async def test_hundred_clients_lose_duplicate_and_reorder_nothing() -> None:
    # Everything is observed inside the blocks and asserted after they close, so a
    # failure is reported plainly rather than wrapped once per multiplexer.
    counter = TaskCounter()
    trio.lowlevel.add_instrument(counter)
    try:
        errors: list[BaseException] = []
        ledger = Ledger()
        async with cs.Multiplexer(on_error=errors.append) as server_mpx:
            address = await server_mpx.listen("tcp://127.0.0.1:0")
            await cs.Server(server_mpx, on_error=errors.append).listen_and_serve(
                SERVICE, source_fn
            )
            async with AsyncExitStack() as stack:
                clients = [
                    await stack.enter_async_context(cs.Multiplexer(on_error=errors.append))
                    for _ in range(CLIENTS)
                ]
                with trio.fail_after(10):
                    async with trio.open_nursery() as nursery:
                        for mpx in clients:
                            nursery.start_soon(mpx.join, address)
                    await wait_until(lambda: server_mpx.statistics().links == CLIENTS)
                # The tasks of idle links (readers, writers, listeners): after the load,
                # exactly these and no more may be alive.
                idle = set(counter.live)
                with trio.fail_after(60):
                    async with trio.open_nursery() as nursery:
                        for number, mpx in enumerate(clients):
                            nursery.start_soon(run_client, mpx, number, ledger)
                with trio.move_on_after(5):
                    await wait_until(lambda: quiet(server_mpx, *clients) and counter.live == idle)
                leaked = sorted(task.name for task in counter.live - idle)
                server_stats = server_mpx.statistics()
                client_stats = [mpx.statistics() for mpx in clients]
            with trio.move_on_after(5):
                await wait_until(lambda: server_mpx.statistics().links == 0)
            links_after_close = server_mpx.statistics().links
        left_running = sorted(task.name for task in counter.live)
    finally:
        trio.lowlevel.remove_instrument(counter)

    assert ledger.failures == []
    assert errors == []
    expected = CLIENTS * REQUESTS * SOURCES * FRAMES
    assert ledger.total == expected
    assert len(ledger.frames) == CLIENTS * REQUESTS * SOURCES
    wrong = {key: seqs for key, seqs in ledger.frames.items() if seqs != list(range(FRAMES))}
    assert wrong == {}
    assert len(ledger.headers) == CLIENTS * REQUESTS
    assert all(headers == list(range(SOURCES)) for headers in ledger.headers.values())
    # Every frame crossed the wire once: no retransmission, no extra copy.
    assert sum(stats.messages_in for stats in client_stats) == expected
    assert server_stats.links == CLIENTS
    assert server_stats.open_streams == 0 and server_stats.bytes_buffered == 0
    assert all(quiet_stats(stats) for stats in [server_stats, *client_stats])
    assert leaked == []
    assert links_after_close == 0
    assert left_running == []
    assert counter.spawned == counter.exited > CLIENTS * REQUESTS * SOURCES


async def test_hundred_clients_through_random_cuts_lose_duplicate_and_reorder_nothing() -> None:
    """The same load with resumption on, every client joined through one proxy that
    breaks all hundred connections at once, again and again at byte counts drawn from
    a seeded generator (inside frames, most of them): still every frame exactly once."""
    rng = random.Random(12)
    options: dict[str, Any] = {
        "resume_timeout": 20.0,
        "redial_backoff": (0.05, 2.0, 0.5),
        "shutdown_grace": 1.0,
    }
    errors: list[BaseException] = []
    ledger = Ledger()
    async with cs.Multiplexer(on_error=errors.append, **options) as server_mpx:
        address = await server_mpx.listen("tcp://127.0.0.1:0")
        await cs.Server(server_mpx, on_error=errors.append).listen_and_serve(SERVICE, source_fn)
        proxy = CuttingProxy(("127.0.0.1", int(address.rsplit(":", 1)[1])))
        async with trio.open_nursery() as proxies, AsyncExitStack() as stack:
            url = await proxies.start(proxy.run)
            clients = [
                await stack.enter_async_context(cs.Multiplexer(on_error=errors.append, **options))
                for _ in range(CLIENTS)
            ]
            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for mpx in clients:
                        nursery.start_soon(mpx.join, url)
                await wait_until(lambda: server_mpx.statistics().links == CLIENTS)

            first_links = [mpx.links[0] for mpx in clients]

            async def cut_now_and_then() -> None:
                for _ in range(4):
                    proxy.cut_every, proxy.cuts_left = rng.randrange(50_000, 400_000), 1
                    await wait_until(lambda: proxy.cuts_left == 0)

            with trio.fail_after(60):
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(cut_now_and_then)
                    async with trio.open_nursery() as load:
                        for number, mpx in enumerate(clients):
                            load.start_soon(run_client, mpx, number, ledger)
                    nursery.cancel_scope.cancel()
            breaks = proxy.breaks
            replaced = sum(
                mpx.links != [link] for mpx, link in zip(clients, first_links, strict=True)
            )
            resumed = sum(link.resumptions for link in first_links)
            client_stats = [mpx.statistics() for mpx in clients]
            proxies.cancel_scope.cancel()

    assert ledger.failures == []
    assert [error for error in errors if not isinstance(error, cs.ConnectionLost)] == []
    expected = CLIENTS * REQUESTS * SOURCES * FRAMES
    assert ledger.total == expected
    wrong = {key: seqs for key, seqs in ledger.frames.items() if seqs != list(range(FRAMES))}
    assert wrong == {}
    assert all(headers == list(range(SOURCES)) for headers in ledger.headers.values())
    # Replayed frames are the ones the other side never processed: none counts twice.
    assert sum(stats.messages_in for stats in client_stats) == expected
    # Each break is of every connection forwarded at that moment (a later one may find
    # most links still resuming from the one before); the load may end before the last.
    assert breaks >= 2 and resumed >= CLIENTS // 2
    # No link was given up and replaced by a new one: each resumed.
    assert replaced == 0
