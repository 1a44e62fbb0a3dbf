"""Discovery among joined nodes, over TCP loopback: services advertised and withdrawn,
waiting for a service, bucket routing by rendezvous hashing, a node killed and
restarted under a redialing client, and streams relayed one hop through a router. The
tests that measure time run over a Unix socket on the autojump clock instead."""

from __future__ import annotations

import ast
import contextlib
import io
import itertools
import re
from collections.abc import AsyncIterator, Iterable
from contextlib import AsyncExitStack, asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
from helpers import drain, wait_quiet, wait_until

import chanserv_trio as cs
from chanserv_trio import _cli as cli
from chanserv_trio.link._link import StreamHandler
from chanserv_trio.node._multiplexer import _score

SERVICE = "svc"
FAST_REDIAL = (0.05, 1.5, 0.5)


# ------------------------------------------------------------------ server nodes


def labelled(label: str) -> cs.SourceFunction:
    """A source function answering with one source whose header names the node; the
    body ``hang`` makes that source send one frame and then wait forever."""

    async def hang() -> AsyncIterator[bytes]:
        yield b"first"
        await trio.sleep_forever()

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        if request == b"hang":
            yield cs.Source(header=label.encode(), frames=hang())
        else:
            yield cs.Source(header=label.encode())

    return source_fn


@attrs.define
class Node:
    """A serving node run by :func:`start_node`; ``kill`` ends it abruptly."""

    label: str
    url: str
    mpx: cs.Multiplexer
    server: cs.Server
    scope: trio.CancelScope

    async def kill(self) -> None:
        """Cut every link at the socket (as a crashed process would), then close."""
        for link in self.mpx.links:
            await trio.aclose_forcefully(link.transport)
        self.scope.cancel()


async def _run_node(
    label: str,
    url: str,
    serve: bool,
    *,
    task_status: trio.TaskStatus[Node],
) -> None:
    with trio.CancelScope() as scope:
        async with cs.Multiplexer(shutdown_grace=0.5) as mpx:
            bound = await mpx.listen(url)
            server = cs.Server(mpx)
            if serve:
                await server.listen_and_serve(SERVICE, labelled(label))
            task_status.started(Node(label, bound, mpx, server, scope))
            await trio.sleep_forever()


async def start_node(
    nursery: trio.Nursery, label: str, url: str = "tcp://127.0.0.1:0", *, serve: bool = True
) -> Node:
    node: Node = await nursery.start(_run_node, label, url, serve)
    return node


async def start_autojumping_node(
    clock: trio.testing.MockClock,
    nursery: trio.Nursery,
    label: str,
    folder: Path,
    *,
    serve: bool = True,
) -> Node:
    """A node listening on a Unix socket in ``folder``, after which ``clock`` autojumps.

    Timings are then exact: bytes between two ends in one process are in the peer's
    buffer when the send returns, so no clock jump can overtake them (over TCP they may
    wait for the kernel). Only binding the socket file runs in a thread, which the clock
    cannot see: the clock runs in real time until the node listens.
    """
    clock.rate = 1
    node = await start_node(nursery, label, f"unix://{folder / 'node.sock'}", serve=serve)
    clock.rate = 0
    clock.autojump_threshold = 0
    return node


@asynccontextmanager
async def client_of(
    urls: Iterable[str], **options: Any
) -> AsyncIterator[tuple[cs.Multiplexer, cs.Client]]:
    async with cs.Multiplexer(shutdown_grace=0.5, **options) as mpx:
        for url in urls:
            await mpx.join(url)
        yield mpx, cs.Client(mpx, dial_timeout=2.0)


async def offering(mpx: cs.Multiplexer, count: int, name: str = SERVICE) -> None:
    """Wait until exactly ``count`` links of ``mpx`` offer ``name``."""
    with trio.fail_after(5):
        await wait_until(lambda: len(mpx.links_offering(name)) == count)


async def served_by(client: cs.Client, key: str | None = None) -> str:
    """The label of the node that answers one request (by bucket ``key`` if given)."""
    tags = None if key is None else {"bucket": key}
    with trio.fail_after(5):
        async with client.lookup_and_post(SERVICE, b"", tags=tags) as sources:
            source = await sources.receive()
            assert await drain(source) == []
            return source.header.decode()


async def assignment(client: cs.Client, keys: Iterable[str]) -> dict[str, str]:
    """Which node each bucket key reaches, asked with a few requests at a time."""
    result: dict[str, str] = {}
    limit = trio.CapacityLimiter(20)

    async def ask(key: str) -> None:
        async with limit:
            result[key] = await served_by(client, key)

    async with trio.open_nursery() as nursery:
        for key in keys:
            nursery.start_soon(ask, key)
    return result


# ------------------------------------------------------- appear and disappear


async def test_services_appear_and_disappear_as_nodes_serve_withdraw_and_drop() -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            a, b, c = [await start_node(nursery, label, serve=False) for label in "abc"]
            async with client_of([a.url, b.url, c.url]) as (mpx, client):
                assert mpx.links_offering(SERVICE) == []
                await a.server.listen_and_serve(SERVICE, labelled("a"))
                await offering(mpx, 1)
                assert await served_by(client) == "a"
                await b.server.listen_and_serve(SERVICE, labelled("b"))
                await c.server.listen_and_serve(SERVICE, labelled("c"))
                await offering(mpx, 3)
                assert {link.node_key for link in mpx.links_offering(SERVICE)} == {
                    a.url,
                    b.url,
                    c.url,
                }
                # Picked at random: 60 requests reach all three (a miss: 3 * (2/3)**60).
                assert {await served_by(client) for _ in range(60)} == {"a", "b", "c"}

                a.server.stop_serving(SERVICE)
                await offering(mpx, 2)
                assert {await served_by(client) for _ in range(20)} <= {"b", "c"}

                # Another name on the multiplexer itself comes and goes on its own.
                async def echo(stream: cs.LinkStream) -> None:
                    stream.end()

                b.mpx.handle("other", echo)
                await offering(mpx, 1, "other")
                assert mpx.links_offering("other")[0].node_key == b.url
                b.mpx.unhandle("other")
                await offering(mpx, 0, "other")
                await offering(mpx, 2)

                # A link that drops takes its node's services with it.
                await c.kill()
                await offering(mpx, 1)
                assert [link.node_key for link in mpx.links_offering(SERVICE)] == [b.url]
                assert {await served_by(client) for _ in range(10)} == {"b"}
                mpx.leave(b.url)
                await offering(mpx, 0)
                assert mpx.joined == [a.url, c.url]
                with pytest.raises(cs.ServiceNotFound):
                    async with cs.Client(mpx, dial_timeout=0.05).lookup_and_post(SERVICE):
                        pass  # pragma: no cover
            nursery.cancel_scope.cancel()


async def test_a_client_started_before_its_server_waits_up_to_dial_timeout(
    mock_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            node = await start_autojumping_node(mock_clock, nursery, "late", tmp_path, serve=False)
            async with client_of([node.url]) as (mpx, client):
                answer: list[str] = []

                async def ask() -> None:
                    answer.append(await served_by(client))

                async with trio.open_nursery() as asking:
                    asking.start_soon(ask)
                    await trio.sleep(0.2)
                    assert answer == []
                    await node.server.listen_and_serve(SERVICE, labelled("late"))
                assert answer == ["late"]

                # Nobody offers 'missing': ServiceNotFound once dial_timeout is up.
                impatient = cs.Client(mpx, dial_timeout=0.2)
                start = trio.current_time()
                with pytest.raises(cs.ServiceNotFound, match="missing"):
                    async with impatient.lookup_and_post("missing"):
                        pass  # pragma: no cover
                assert 0.2 <= trio.current_time() - start < 2.0
            nursery.cancel_scope.cancel()


# -------------------------------------------------------------- bucket routing


async def test_bucket_keys_reach_the_same_node_and_only_a_leavers_keys_move() -> None:
    keys = [f"user-{i}" for i in range(300)]
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nodes = [await start_node(nursery, label) for label in "abc"]
            urls = [node.url for node in nodes]
            # Two client processes, joined in different orders.
            async with (
                client_of(urls) as (mpx1, client1),
                client_of(reversed(urls)) as (
                    mpx2,
                    client2,
                ),
            ):
                await offering(mpx1, 3)
                await offering(mpx2, 3)
                before = await assignment(client1, keys)
                assert await assignment(client2, keys) == before
                # The same key again gives the same node, every time.
                assert {await served_by(client1, "user-7") for _ in range(10)} == {
                    before["user-7"]
                }
                shares = {label: list(before.values()).count(label) for label in "abc"}
                assert all(60 <= share <= 140 for share in shares.values()), shares

                # b withdraws: only b's keys move, spread over a and c.
                nodes[1].server.stop_serving(SERVICE)
                await offering(mpx1, 2)
                await offering(mpx2, 2)
                without_b = await assignment(client1, keys)
                assert await assignment(client2, keys) == without_b
                moved = {key for key in keys if without_b[key] != before[key]}
                assert moved == {key for key in keys if before[key] == "b"}
                assert 0.2 <= len(moved) / len(keys) <= 0.47
                assert {without_b[key] for key in moved} == {"a", "c"}

                # b serves again: exactly its keys come back to it.
                await nodes[1].server.listen_and_serve(SERVICE, labelled("b"))
                await offering(mpx1, 3)
                assert await assignment(client1, keys) == before

                # A client that leaves c moves c's keys only, and only for itself.
                mpx1.leave(urls[2])
                await offering(mpx1, 2)
                without_c = await assignment(client1, keys)
                assert {key for key in keys if without_c[key] != before[key]} == {
                    key for key in keys if before[key] == "c"
                }
                assert await assignment(client2, keys) == before
            nursery.cancel_scope.cancel()


# -------------------------------------------------------- kill and restart


async def test_a_killed_node_fails_its_requests_and_comes_back_after_restart() -> None:
    keys = [f"k{i}" for i in range(60)]
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            a, b, c = [await start_node(nursery, label) for label in "abc"]
            async with client_of([a.url, b.url, c.url], redial_backoff=FAST_REDIAL) as (
                mpx,
                client,
            ):
                await offering(mpx, 3)
                before = await assignment(client, keys)
                on_b = [key for key in keys if before[key] == "b"]
                assert on_b

                outcomes: list[BaseException | None] = []
                started = trio.Semaphore(0)

                async def in_flight(key: str) -> None:
                    async with client.lookup_and_post(SERVICE, b"hang", {"bucket": key}) as s:
                        source = await s.receive()
                        assert source.header == b"b"
                        assert await source.receive() == b"first"
                        started.release()
                        try:
                            await source.receive()
                        except cs.ChanservError as exc:
                            outcomes.append(exc)
                        else:  # pragma: no cover
                            outcomes.append(None)

                async with trio.open_nursery() as requests:
                    for key in on_b[:3]:
                        requests.start_soon(in_flight, key)
                    for _ in on_b[:3]:
                        await started.acquire()
                    await b.kill()
                assert len(outcomes) == len(on_b[:3])
                assert all(isinstance(exc, cs.ConnectionLost) for exc in outcomes), outcomes

                # New requests go to the nodes left; keys elsewhere stay put.
                await offering(mpx, 2)
                assert {await served_by(client) for _ in range(20)} <= {"a", "c"}
                after_kill = await assignment(client, keys)
                assert {key for key in keys if after_kill[key] != before[key]} == set(on_b)
                assert b.url in mpx.joined

                # Restarted on the same port, it is redialed and its keys return to it.
                restarted = await start_node(nursery, "b-again", b.url)
                assert restarted.url == b.url
                await offering(mpx, 3)
                again = await assignment(client, keys)
                assert {key for key in keys if again[key] == "b-again"} == set(on_b)
                assert all(again[key] == before[key] for key in keys if key not in on_b)
            nursery.cancel_scope.cancel()


async def test_redial_backs_off_and_stops_after_leave(
    mock_clock: trio.testing.MockClock, tmp_path: Path
) -> None:
    # The gaps measured on the autojump clock are the delays the redial loop slept,
    # exactly (a dial to a socket file that is gone fails within the call).
    dials: list[float] = []
    errors: list[BaseException] = []

    def dialed(exc: BaseException) -> None:
        dials.append(trio.current_time())
        errors.append(exc)

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            node = await start_autojumping_node(mock_clock, nursery, "a", tmp_path)
            redialing = client_of([node.url], redial_backoff=(0.05, 2.0, 0.2), on_error=dialed)
            async with redialing as (mpx, _):
                await offering(mpx, 1)
                # Nobody can dial the node any more, however long it takes to go.
                (tmp_path / "node.sock").unlink()
                await node.kill()
                await offering(mpx, 0)
                with trio.fail_after(5):
                    await wait_until(lambda: len(dials) >= 5)
                assert all(isinstance(exc, cs.ConnectionLost) for exc in errors), errors
                gaps = [later - earlier for earlier, later in itertools.pairwise(dials)]
                # 0.1, 0.2, 0.2, ...: doubling up to the ceiling, each delay drawn between
                # half of it and all of it (the jitter).
                assert 0.05 <= gaps[0] <= 0.1
                assert all(0.1 <= gap <= 0.2 for gap in gaps[1:4])
                assert len(set(gaps[1:4])) == 3
                mpx.leave(node.url)
                assert mpx.joined == []
                count = len(dials)
                await trio.sleep(0.5)
                assert len(dials) == count
            nursery.cancel_scope.cancel()


# ----------------------------------------------------------------- router


@attrs.define
class Watch:
    """Events set from the backend's ``finally`` and ``except trio.Cancelled`` blocks."""

    ended: dict[str, trio.Event] = attrs.field(factory=dict)
    cancelled: set[str] = attrs.field(factory=set)

    def event(self, name: str) -> trio.Event:
        return self.ended.setdefault(name, trio.Event())

    async def wait(self, *names: str) -> None:
        with trio.fail_after(5):
            for name in names:
                await self.event(name).wait()


@attrs.define
class Relay:
    """A backend serving behind a router, and a client that reaches only the router."""

    backend: cs.Multiplexer
    router: cs.Multiplexer
    client_mpx: cs.Multiplexer
    client: cs.Client
    backend_server: cs.Server


@asynccontextmanager
async def relayed(
    backend_dials: bool,
    *,
    router_settings: cs.Settings | None = None,
    client_settings: cs.Settings | None = None,
) -> AsyncIterator[Relay]:
    """client -> router -> backend; the router joins the backend, or the other way."""
    async with AsyncExitStack() as stack:
        backend = await stack.enter_async_context(cs.Multiplexer(shutdown_grace=0.5))
        router = await stack.enter_async_context(
            cs.Multiplexer(router=True, settings=router_settings, shutdown_grace=0.5)
        )
        # A backend that dials the router offers its services through the router's
        # listener: it must accept offers (a client's offers are ignored otherwise).
        router_url = await router.listen("tcp://127.0.0.1:0", accept_offers=backend_dials)
        if backend_dials:
            await backend.join(router_url)
        else:
            await router.join(await backend.listen("tcp://127.0.0.1:0"))
        client_mpx = await stack.enter_async_context(
            cs.Multiplexer(settings=client_settings, shutdown_grace=0.5)
        )
        await client_mpx.join(router_url)
        yield Relay(backend, router, client_mpx, cs.Client(client_mpx), cs.Server(backend))


both_directions = pytest.mark.parametrize(
    "backend_dials", [False, True], ids=["router-joins", "backend-joins"]
)


@both_directions
async def test_relay_carries_sources_and_frames_in_order(backend_dials: bool) -> None:
    async def frames(index: int) -> AsyncIterator[bytes]:
        for number in range(50):
            yield b"%d:%d" % (index, number)

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        for index in range(5):
            yield cs.Source(header=b"%s/%d" % (request, index), frames=frames(index))

    with trio.fail_after(10):
        async with relayed(backend_dials) as net:
            await net.backend_server.listen_and_serve(SERVICE, source_fn)
            await offering(net.client_mpx, 1)
            assert net.client_mpx.links[0].node_key == net.router.listening[0]
            received: dict[bytes, list[bytes]] = {}
            headers: list[bytes] = []
            async with (
                net.client.lookup_and_post(SERVICE, b"req") as sources,
                trio.open_nursery() as nursery,
            ):
                async for source in sources:
                    headers.append(source.header)

                    async def read(source: cs.RemoteSource = source) -> None:
                        received[source.header] = await drain(source)

                    nursery.start_soon(read)
            assert headers == [b"req/%d" % i for i in range(5)]
            for index in range(5):
                assert received[b"req/%d" % index] == [b"%d:%d" % (index, n) for n in range(50)]
            with trio.fail_after(5):
                await wait_quiet(net.router, net.backend, net.client_mpx)


@both_directions
async def test_relay_passes_cancellation_to_the_backend(backend_dials: bool) -> None:
    watch = Watch()

    async def endless(name: str) -> AsyncIterator[bytes]:
        try:
            number = 0
            while True:
                yield b"%s %d" % (name.encode(), number)
                number += 1
                await trio.sleep(0.01)
        except trio.Cancelled:
            watch.cancelled.add(name)
            raise
        finally:
            watch.event(name).set()

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        try:
            yield cs.Source(header=b"one", frames=endless("one"))
            yield cs.Source(header=b"two", frames=endless("two"))
            await trio.sleep_forever()
        except trio.Cancelled:
            watch.cancelled.add("sources")
            raise
        finally:
            watch.event("sources").set()

    with trio.fail_after(10):
        async with relayed(backend_dials) as net:
            await net.backend_server.listen_and_serve(SERVICE, source_fn)
            await offering(net.client_mpx, 1)
            async with net.client.lookup_and_post(SERVICE) as sources:
                one = await sources.receive()
                two = await sources.receive()
                assert await one.receive() == b"one 0"
                await one.aclose()
                await watch.wait("one")
                # The sibling and the source function carry on.
                for number in range(3):
                    assert await two.receive() == b"two %d" % number
                assert not watch.event("two").is_set()
                assert not watch.event("sources").is_set()
            await watch.wait("two", "sources")
            assert "sources" in watch.cancelled
            # Stopped either inside its sleep (Cancelled) or closed at a yield.
            assert watch.event("one").is_set()
            with trio.fail_after(5):
                await wait_quiet(net.router, net.backend, net.client_mpx)


async def test_relay_passes_remote_errors_with_kind_and_message() -> None:
    async def failing_frames() -> AsyncIterator[bytes]:
        yield b"ok"
        raise KeyError("no such row")

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"frames fail", frames=failing_frames())
        if request == b"fail":
            raise ValueError("the source function gave up")

    with trio.fail_after(10):
        async with relayed(False) as net:
            await net.backend_server.listen_and_serve(SERVICE, source_fn)
            await offering(net.client_mpx, 1)
            async with net.client.lookup_and_post(SERVICE, b"fail") as sources:
                source = await sources.receive()
                assert await source.receive() == b"ok"
                with pytest.raises(cs.RemoteError) as frames_error:
                    await source.receive()
                with pytest.raises(cs.RemoteError) as sources_error:
                    await sources.receive()
            assert frames_error.value.kind == "KeyError"
            assert frames_error.value.message == "'no such row'"
            assert sources_error.value.kind == "ValueError"
            assert sources_error.value.message == "the source function gave up"
            with trio.fail_after(5):
                await wait_quiet(net.router, net.backend, net.client_mpx)


async def test_relay_carries_a_large_frame_whole() -> None:
    big = bytes(range(256)) * (5 * 4096)  # 5 MiB

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        async def frames() -> AsyncIterator[bytes]:
            yield b"small"
            yield big
            yield b"after"

        yield cs.Source(header=b"big", frames=frames())

    with trio.fail_after(10):
        async with relayed(True) as net:
            await net.backend_server.listen_and_serve(SERVICE, source_fn)
            await offering(net.client_mpx, 1)
            async with net.client.lookup_and_post(SERVICE) as sources:
                source = await sources.receive()
                received = await drain(source)
            assert [len(frame) for frame in received] == [5, len(big), 5]
            assert received[1] == big
            with trio.fail_after(5):
                await wait_quiet(net.router, net.backend, net.client_mpx)


async def test_router_buffers_boundedly_behind_a_slow_consumer() -> None:
    window = 64 << 10
    frame = b"x" * (16 << 10)
    count = 200  # 3.2 MiB: fifty windows

    async def frames() -> AsyncIterator[bytes]:
        for _ in range(count):
            yield frame

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"flood", frames=frames())

    small = cs.Settings(initial_stream_window=window, connection_window=4 * window)
    peak_buffered = peak_queued = 0
    with trio.fail_after(15):
        async with relayed(False, router_settings=small, client_settings=small) as net:
            await net.backend_server.listen_and_serve(SERVICE, source_fn)
            await offering(net.client_mpx, 1)
            async with net.client.lookup_and_post(SERVICE) as sources:
                source = await sources.receive()
                for number in range(count):
                    assert await source.receive() == frame
                    if number == 0:
                        # Nobody reads until the backpressure has reached the producer.
                        with trio.fail_after(5):
                            await wait_until(lambda: net.backend.statistics().window_stalls > 0)
                    elif number % 10 == 0:
                        await trio.sleep(0.01)  # the slow consumer
                    stats = net.router.statistics()
                    peak_buffered = max(peak_buffered, stats.bytes_buffered)
                    peak_queued = max(peak_queued, stats.bytes_queued)
                with pytest.raises(trio.EndOfChannel):
                    await source.receive()
            # The backpressure reached the producer: it waited for credit.
            assert net.backend.statistics().window_stalls > 0
            with trio.fail_after(5):
                await wait_quiet(net.router, net.backend, net.client_mpx)
    # The router holds at most what the backend may send ahead on the stream, plus the
    # frame it is passing on; it queues at most what the client lets it send.
    assert 0 < peak_buffered <= 2 * window + len(frame), peak_buffered
    assert peak_queued <= 2 * window + len(frame), peak_queued


@both_directions
async def test_a_backend_lost_behind_the_router_is_connection_lost(backend_dials: bool) -> None:
    watch = Watch()

    async def hang() -> AsyncIterator[bytes]:
        yield b"first"
        await trio.sleep_forever()

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"hang", frames=hang())
        await trio.sleep_forever()  # the request stays open too

    with trio.fail_after(10):
        async with relayed(backend_dials) as net:
            await net.backend_server.listen_and_serve(SERVICE, source_fn)
            await offering(net.client_mpx, 1)
            async with net.client.lookup_and_post(SERVICE) as sources:
                source = await sources.receive()
                assert await source.receive() == b"first"
                for link in net.backend.links:
                    await trio.aclose_forcefully(link.transport)
                with pytest.raises(cs.ConnectionLost):
                    await source.receive()
                with pytest.raises(cs.ConnectionLost):
                    await sources.receive()
            await offering(net.client_mpx, 0)
            with trio.fail_after(5):
                await wait_quiet(net.router, net.client_mpx)
    assert not watch.ended


@both_directions
async def test_a_client_lost_in_front_of_the_router_stops_the_backend(
    backend_dials: bool,
) -> None:
    watch = Watch()

    async def hang() -> AsyncIterator[bytes]:
        try:
            yield b"first"
            await trio.sleep_forever()
        finally:
            watch.event("frames").set()

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"hang", frames=hang())

    with trio.fail_after(10):
        async with relayed(backend_dials) as net:
            await net.backend_server.listen_and_serve(SERVICE, source_fn)
            await offering(net.client_mpx, 1)
            async with net.client.lookup_and_post(SERVICE) as sources:
                source = await sources.receive()
                assert await source.receive() == b"first"
                for link in net.client_mpx.links:
                    await trio.aclose_forcefully(link.transport)
                await watch.wait("frames")
                with pytest.raises(cs.ConnectionLost):
                    await source.receive()
            with trio.fail_after(5):
                await wait_quiet(net.router, net.backend)


async def test_router_readvertises_and_forgets_its_backends_services() -> None:
    with trio.fail_after(10):
        async with relayed(True) as net:
            await net.backend_server.listen_and_serve(SERVICE, labelled("backend"))
            await offering(net.client_mpx, 1)
            assert await served_by(net.client) == "backend"
            net.backend_server.stop_serving(SERVICE)
            await offering(net.client_mpx, 0)
            await net.backend_server.listen_and_serve(SERVICE, labelled("backend"))
            await offering(net.client_mpx, 1)
            for link in net.backend.links:
                await trio.aclose_forcefully(link.transport)
            await offering(net.client_mpx, 0)


async def test_router_spreads_requests_over_backends_and_skips_a_dead_one() -> None:
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            backends = [await start_node(nursery, label) for label in "ab"]
            async with cs.Multiplexer(router=True, shutdown_grace=0.5) as router:
                router_url = await router.listen("tcp://127.0.0.1:0")
                for backend in backends:
                    await router.join(backend.url)
                async with client_of([router_url]) as (mpx, client):
                    await offering(mpx, 1)
                    await offering(router, 2)
                    assert {await served_by(client) for _ in range(40)} == {"a", "b"}
                    await backends[0].kill()
                    await offering(router, 1)
                    assert {await served_by(client) for _ in range(10)} == {"b"}
                    with trio.fail_after(5):
                        await wait_quiet(router, mpx)
            nursery.cancel_scope.cancel()


async def test_bucket_routing_holds_through_a_router() -> None:
    keys = [f"user-{i}" for i in range(40)]
    with trio.fail_after(15):
        async with trio.open_nursery() as nursery:
            backends = [await start_node(nursery, label) for label in "abc"]
            async with cs.Multiplexer(router=True, shutdown_grace=0.5) as router:
                router_url = await router.listen("tcp://127.0.0.1:0")
                for backend in backends:
                    await router.join(backend.url)
                async with (
                    client_of([router_url]) as (via_router, routed),
                    client_of([backend.url for backend in backends]) as (direct, straight),
                ):
                    await offering(router, 3)
                    await offering(via_router, 1)
                    await offering(direct, 3)
                    # Random picks would agree 30 times in a row with odds of 3**-29.
                    assert len({await served_by(routed, "user-1") for _ in range(30)}) == 1
                    # The router names its backends by the URLs it joined, as a client
                    # joined to them directly does: the same key reaches the same node.
                    through = await assignment(routed, keys)
                    assert through == await assignment(straight, keys)
                    assert set(through.values()) == {"a", "b", "c"}
            nursery.cancel_scope.cancel()


async def test_a_router_picks_the_backend_by_the_route_key_in_the_open_frame() -> None:
    """The router reads no request envelope: a raw stream with a route key is enough."""
    seen: dict[str, list[bytes]] = {"a": [], "b": [], "c": []}

    def answer(label: str) -> StreamHandler:
        async def handler(stream: cs.LinkStream) -> None:
            seen[label].append(stream.route_key)
            await stream.send(label.encode())

        return handler

    keys = [b"k%d" % index for index in range(12)]
    with trio.fail_after(15):
        async with AsyncExitStack() as stack:
            urls = {}
            for label in seen:
                backend = await stack.enter_async_context(cs.Multiplexer(shutdown_grace=0.5))
                backend.handle("raw", answer(label))
                urls[label] = await backend.listen("tcp://127.0.0.1:0")
            router = await stack.enter_async_context(
                cs.Multiplexer(router=True, shutdown_grace=0.5)
            )
            router_url = await router.listen("tcp://127.0.0.1:0")
            for url in urls.values():
                await router.join(url)
            client = await stack.enter_async_context(cs.Multiplexer(shutdown_grace=0.5))
            await client.join(router_url)
            await offering(router, 3, "raw")
            await offering(client, 1, "raw")
            for key in keys:
                stream = await client.open_stream("raw", b"\xffno envelope", route_key=key)
                expected = max(urls, key=lambda label: (_score(key, urls[label]), urls[label]))
                assert await stream.receive() == expected.encode(), key
                stream.end()
    assert sorted(key for keys_seen in seen.values() for key in keys_seen) == sorted(keys)
    assert sum(1 for keys_seen in seen.values() if keys_seen) > 1


def test_the_node_layer_imports_nothing_of_chanserv() -> None:
    package = Path(cs.__file__).resolve().parent
    for name in ("node/_multiplexer.py", "node/_router.py"):
        tree = ast.parse((package / name).read_text(encoding="utf-8"))
        modules = [
            node.module or "" for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
        ]
        assert not [module for module in modules if module.startswith("_chanserv")], name


# -------------------------------------------------------------------- CLI


def test_cli_parses_join_router_and_bucket() -> None:
    args = cli._parser().parse_args(
        ["serve", "--router", "--listen", "tcp://h:1", "--join", "tcp://a:2", "--join", "ws://b"]
    )
    assert (args.function, args.router, args.listen) == (None, True, ["tcp://h:1"])
    assert args.join == ["tcp://a:2", "ws://b"]
    args = cli._parser().parse_args(
        ["post", "tcp://a:1", "svc", "--join", "tcp://b:2", "--join", "tcp://c:3", "--bucket", "k"]
    )
    assert (args.words, args.join, args.bucket) == (
        ["tcp://a:1", "svc"],
        ["tcp://b:2", "tcp://c:3"],
        "k",
    )
    assert cli._post_words(args.words, None) == ("tcp://a:1", "svc", "")
    assert cli._post_words(["svc", "body"], "etcd://127.0.0.1:2379") == (None, "svc", "body")
    with pytest.raises(cli.UsageError, match="URL NAME"):
        cli._post_words(["svc"], None)
    args = cli._parser().parse_args(["post", "--registry", "etcd://r:2379", "svc", "hello"])
    assert (args.registry, args.words) == ("etcd://r:2379", ["svc", "hello"])
    args = cli._parser().parse_args(["serve", "mod:fn", "--listen", "tcp://h:1"])
    assert (args.function, args.router, args.join) == ("mod:fn", False, [])


@pytest.mark.parametrize(
    "argv",
    [["serve", "--listen", "tcp://127.0.0.1:0"], ["serve", "--router"]],
    ids=["neither-function-nor-router", "neither-listen-nor-join"],
)
def test_cli_serve_refuses_a_node_that_can_do_nothing(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    assert cli.main(argv) == 2  # a usage error
    assert "serve needs" in capsys.readouterr().err


async def test_cli_router_between_backends_with_post_joining_several_nodes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def lines(out: io.StringIO) -> list[str]:
        return [line for line in out.getvalue().splitlines() if "announced" in line]

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            log = io.StringIO()
            [a_url] = await nursery.start(
                partial(cli.run_serve, labelled("a"), ["tcp://127.0.0.1:0"], SERVICE, log)
            )
            [router_url] = await nursery.start(
                partial(
                    cli.run_serve,
                    None,
                    ["tcp://127.0.0.1:0"],
                    SERVICE,
                    log,
                    router=True,
                    joins=[a_url],
                )
            )
            # b listens nowhere: it joins the router, which relays to it.
            await nursery.start(
                partial(cli.run_serve, labelled("b"), [], SERVICE, log, joins=[router_url])
            )
            with trio.fail_after(5):
                await wait_until(lambda: log.getvalue().count("joined") == 2)
            assert f"serving {SERVICE!r} on {a_url}" in log.getvalue()
            assert f"routing on {router_url}" in log.getvalue()

            seen: set[str] = set()
            for _ in range(30):
                out = io.StringIO()
                await cli.run_post(router_url, SERVICE, b"", 2.0, out)
                [line] = lines(out)
                seen.add(line.split("]")[0])
            assert seen == {"[a", "[b"}

            # The same bucket key reaches the same backend through the router every time.
            picks = set()
            for _ in range(10):
                out = io.StringIO()
                await cli.run_post(router_url, SERVICE, b"", 2.0, out, bucket="user-1")
                picks.update(lines(out))
            assert len(picks) == 1

            # post joins several nodes, skipping one nobody answers at.
            with trio.socket.socket() as probe:
                await probe.bind(("127.0.0.1", 0))
                dead = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
            caplog.clear()
            out = io.StringIO()
            await cli.run_post(dead, SERVICE, b"", 2.0, out, joins=[a_url])
            assert lines(out)
            assert f"cannot join {dead}" in caplog.text
            with pytest.raises(cs.ConnectionLost, match="cannot join"):
                await cli.run_post(dead, SERVICE, b"", 2.0, io.StringIO(), joins=[dead])
            nursery.cancel_scope.cancel()


async def test_cli_serve_joins_a_node_that_starts_later(
    caplog: pytest.LogCaptureFixture,
) -> None:
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        later = f"tcp://127.0.0.1:{probe.getsockname()[1]}"
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            log = io.StringIO()
            [router_url] = await nursery.start(
                partial(
                    cli.run_serve,
                    None,
                    ["tcp://127.0.0.1:0"],
                    SERVICE,
                    log,
                    router=True,
                    joins=[later],
                )
            )
            with trio.fail_after(5):
                await wait_until(lambda: "cannot join" in caplog.text)
            await nursery.start(
                partial(cli.run_serve, labelled("late"), [later], SERVICE, io.StringIO())
            )
            with trio.fail_after(5):
                await wait_until(lambda: f"joined {later}" in log.getvalue())
            out = io.StringIO()
            await cli.run_post(router_url, SERVICE, b"", 2.0, out)
            assert "[late] announced" in out.getvalue()
            nursery.cancel_scope.cancel()


# ------------------------------------------------------------------- docs

DEPLOYMENT = Path(__file__).resolve().parent.parent / "docs" / "deployment.md"


def deployment_programs() -> list[tuple[str, str | None]]:
    """Each complete program of docs/deployment.md (a block ending in ``trio.run(main)``)
    with the output shown after it, if any."""
    text = DEPLOYMENT.read_text(encoding="utf-8")
    found = []
    for match in re.finditer(r"```python\n(.*?)```(\n\nOutput:\n\n```\n(.*?)```)?", text, re.S):
        program = match.group(1)
        if program.rstrip().endswith("trio.run(main)"):
            found.append((program, match.group(3)))
    return found


def test_deployment_page_has_its_programs() -> None:
    assert len(deployment_programs()) == 3


@pytest.mark.parametrize("index", range(3))
def test_deployment_program_runs_and_prints_what_the_page_shows(index: int) -> None:
    program, shown = deployment_programs()[index]
    namespace: dict[str, Any] = {"__name__": "deployment_example"}
    exec(program.rstrip().removesuffix("trio.run(main)"), namespace)

    async def bounded() -> None:
        with trio.fail_after(10):
            await namespace["main"]()

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        trio.run(bounded)
    assert shown is not None
    assert out.getvalue() == shown


async def test_routers_linked_to_each_other_offer_only_one_hop() -> None:
    async def one(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(b"h", frames_of(b"x"))

    async with (
        cs.Multiplexer() as backend,
        cs.Multiplexer(router=True) as first,
        cs.Multiplexer(router=True) as second,
        cs.Multiplexer() as near_client,
        cs.Multiplexer() as far_client,
    ):
        first_address = await first.listen("tcp://127.0.0.1:0", accept_offers=True)
        second_address = await second.listen("tcp://127.0.0.1:0")
        await backend.join(first_address)
        await cs.Server(backend).listen_and_serve("svc", one)
        await second.join(first_address)
        await near_client.join(first_address)
        await far_client.join(second_address)
        with trio.fail_after(10):
            # The first router offers svc, marked as relayed, to everyone but the backend.
            await wait_until(lambda: "svc" in near_client.links[0].peer_services)
            assert near_client.links[0].peer_relayed == {"svc"}
            await wait_until(lambda: "svc" in second.links[0].peer_relayed)
            async with cs.Client(near_client).lookup_and_post("svc") as sources:
                assert [f async for f in await sources.receive()] == [b"x"]
            # The second router does not pass on what it only reaches through a router:
            # it would have told the far client before a name it serves itself, which
            # it advertises now, so once that name arrives nothing else is on its way.
            second.handle("marker", lambda stream: stream.aclose())
            await wait_until(lambda: "marker" in far_client.links[0].peer_services)
            assert "svc" not in far_client.links[0].peer_services
            with pytest.raises(cs.ServiceNotFound):
                async with cs.Client(far_client, dial_timeout=0.2).lookup_and_post("svc"):
                    pass
            # Withdrawn at the source, it disappears everywhere: nothing echoes it back.
            cs.Server(backend).stop_serving("svc")
            await wait_until(lambda: "svc" not in near_client.links[0].peer_services)
            await wait_until(lambda: "svc" not in second.links[0].peer_services)
            assert first.links_offering("svc") == []


async def frames_of(*items: bytes) -> AsyncIterator[bytes]:
    for item in items:
        yield item


async def test_source_credits_cross_a_router() -> None:
    async def many(request: bytes) -> AsyncIterator[cs.Source]:
        for index in range(30):
            yield cs.Source(b"%d" % index, frames_of(b"f%d" % index))

    async with (
        cs.Multiplexer() as backend,
        cs.Multiplexer(router=True) as router,
        cs.Multiplexer() as client_mpx,
    ):
        address = await router.listen("tcp://127.0.0.1:0", accept_offers=True)
        await backend.join(address)
        await cs.Server(backend).listen_and_serve("svc", many)
        await client_mpx.join(address)
        client = cs.Client(client_mpx, source_buffer_size=3, dial_timeout=5)
        with trio.fail_after(10):
            async with client.lookup_and_post("svc") as sources:
                got = [(s.header, [f async for f in s]) async for s in sources]
        assert got == [(b"%d" % i, [b"f%d" % i]) for i in range(30)]
        await wait_until(lambda: router.statistics().open_streams == 0)
