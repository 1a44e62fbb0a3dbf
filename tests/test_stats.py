"""Server and Client statistics, Multiplexer totals, and the ``chanserv_trio.stats`` service."""

from __future__ import annotations

import io
import json
from collections.abc import AsyncIterator

import attrs
import pytest
import trio
from helpers import chanserv_nodes, wait_quiet, wait_until

import chanserv_trio as cs
from chanserv_trio.chanserv._statistics import OUTCOMES
from chanserv_trio.chanserv._stats import STATS_FORMAT, format_snapshot, print_stats, snapshot


async def three_sources(request: bytes) -> AsyncIterator[cs.Source]:
    async def frames() -> AsyncIterator[bytes]:
        yield b"ab"
        yield b"cde"

    if request == b"fail":
        raise RuntimeError("asked to fail")
    for index in range(3):
        yield cs.Source(header=b"%d" % index, frames=frames())


async def forever(request: bytes) -> AsyncIterator[cs.Source]:
    async def frames() -> AsyncIterator[bytes]:
        yield b"x"
        await trio.sleep_forever()

    yield cs.Source(frames=frames())


async def post_all(client: cs.Client, name: str, body: bytes = b"") -> int:
    frames = 0
    async with client.lookup_and_post(name, body) as sources:
        async for source in sources:
            async for _ in source:
                frames += 1
    return frames


def outcomes(**counts: int) -> dict[str, int]:
    return {name: counts.get(name, 0) for name in OUTCOMES}


async def test_server_and_client_count_requests_by_service_and_outcome() -> None:
    with trio.fail_after(10):
        async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
            errors: list[BaseException] = []
            server = cs.Server(server_mpx, on_error=errors.append)
            await server.listen_and_serve("three", three_sources)
            await server.listen_and_serve("forever", forever)
            client = cs.Client(client_mpx, dial_timeout=0.2)
            assert await post_all(client, "three") == 6
            with pytest.raises(cs.RemoteError):
                await post_all(client, "three", b"fail")
            with pytest.raises(cs.ServiceNotFound):
                await post_all(client, "nobody")
            # A request the client leaves before its end counts as cancelled on both sides.
            async with client.lookup_and_post("forever") as sources:
                source = await sources.receive()
                assert await source.receive() == b"x"
                assert client.statistics().active_requests == 1
            await wait_quiet(server_mpx, client_mpx)
            await wait_until(lambda: server.statistics().active_requests == 0)

            stats = server.statistics()
            assert stats.services["three"] == cs.ServiceStatistics(
                requests=2,
                active=0,
                outcomes=outcomes(ok=1, remote_error=1),
                sources=3,
                frames=6,
                bytes=15,
                errors=1,
            )
            assert stats.services["forever"].outcomes == outcomes(cancelled=1)
            assert (stats.requests, stats.sources, stats.frames, stats.bytes) == (3, 4, 7, 16)
            assert stats.outcomes == outcomes(ok=1, remote_error=1, cancelled=1)
            assert stats.errors == len(errors) == 1

            mine = client.statistics()
            assert mine.services["three"].outcomes == outcomes(ok=1, remote_error=1)
            assert mine.services["three"].frames == 6
            assert mine.services["three"].bytes == 15
            assert mine.services["nobody"].outcomes == outcomes(not_found=1)
            assert mine.services["forever"].outcomes == outcomes(cancelled=1)
            assert (mine.requests, mine.active_requests, mine.sources) == (4, 0, 4)
            assert mine.errors == 2  # the RemoteError and the ServiceNotFound
            with pytest.raises(attrs.exceptions.FrozenInstanceError):
                mine.requests = 0  # type: ignore[misc]


async def test_server_counts_deadline_exceeded(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(10):
        async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
            server = cs.Server(server_mpx, serving_timeout=1.0)
            await server.listen_and_serve("forever", forever)
            client = cs.Client(client_mpx)
            with pytest.raises(cs.DeadlineExceeded):
                await post_all(client, "forever")
            await wait_until(lambda: server.statistics().active_requests == 0)
            assert server.statistics().outcomes["deadline_exceeded"] == 1
            assert client.statistics().outcomes["deadline_exceeded"] == 1


async def test_totals_keep_what_closed_links_counted() -> None:
    with trio.fail_after(10):
        async with cs.Multiplexer() as server_mpx:
            address = await server_mpx.listen("tcp://127.0.0.1:0")
            server = cs.Server(server_mpx)
            await server.listen_and_serve("three", three_sources)
            async with cs.Multiplexer() as client_mpx:
                await client_mpx.join(address, redial=False)
                await post_all(cs.Client(client_mpx), "three")
                during = server_mpx.totals()
                assert during.links_opened == 1
                assert during.links_closed == 0
                assert during.streams_opened == 4  # the request and its three sources
            await wait_until(lambda: server_mpx.totals().links_closed == 1)
            after = server_mpx.totals()
            assert after.links_opened == after.links_closed == 1
            assert after.bytes_in >= during.bytes_in > 0
            assert after.bytes_out >= during.bytes_out > 0
            assert after.messages_out >= 6
            assert server_mpx.statistics().bytes_in == 0  # the live view forgot them


async def test_snapshot_is_json_and_names_links_and_services() -> None:
    with trio.fail_after(10):
        async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
            server = cs.Server(server_mpx)
            await server.listen_and_serve("three", three_sources)
            client = cs.Client(client_mpx)
            await post_all(client, "three")
            snap = json.loads(json.dumps(snapshot(client_mpx, client=client)))
            assert snap["format"] == STATS_FORMAT
            assert snap["node"]["id"] == client_mpx.node_id
            assert snap["services"] == {"three": ["attached"]}
            (link,) = snap["links"]
            assert link["peer_services"] == ["three"]
            assert link["statistics"]["bytes_in"] > 0
            assert snap["client"]["services"]["three"]["frames"] == 6
            assert snap["server"] is None
            assert snap["totals"]["links_opened"] == 1
            text = format_snapshot(snap)
            assert "three: attached" in text
            assert "client: 1 requests" in text


async def test_stats_service_streams_snapshots(autojump_clock: trio.abc.Clock) -> None:
    with trio.fail_after(30):
        async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
            server = cs.Server(server_mpx)
            await server.listen_and_serve("three", three_sources)
            await cs.serve_stats(server_mpx, server)
            client = cs.Client(client_mpx)
            one = await cs.fetch_stats(client)
            assert one["node"]["id"] == server_mpx.node_id
            assert one["node"]["services"] == ["chanserv_trio.stats", "three"]
            seen = []
            async with cs.open_stats(client, interval=2.0, count=3) as snapshots:
                async for snap in snapshots:
                    seen.append(snap)
                    await post_all(client, "three")
            # Each snapshot sees the requests posted before it (and itself running).
            assert [s["server"]["services"]["three"]["requests"] for s in seen] == [0, 1, 2]
            assert seen[0]["server"]["services"]["chanserv_trio.stats"]["active"] == 1
            # Until the client leaves.
            async with cs.open_stats(client, interval=1.0, count=None) as snapshots:
                count = 0
                async for _ in snapshots:
                    count += 1
                    if count == 5:
                        break
            with pytest.raises(cs.RemoteError, match="count must be"):
                async with client.lookup_and_post("chanserv_trio.stats", b'{"count": 0}') as s:
                    await s.receive()
            with pytest.raises(cs.RemoteError, match="JSON"):
                async with client.lookup_and_post("chanserv_trio.stats", b"[1") as s:
                    await s.receive()


async def test_print_stats_once_and_watching() -> None:
    with trio.fail_after(10):
        async with cs.Multiplexer() as server_mpx:
            address = await server_mpx.listen("tcp://127.0.0.1:0")
            server = cs.Server(server_mpx)
            await cs.serve_stats(server_mpx, server)
            out = io.StringIO()
            await print_stats(address, out=out)
            text = out.getvalue()
            assert text.startswith(f"node {server_mpx.node_id}")
            assert "chanserv_trio.stats: local" in text
            out = io.StringIO()
            await print_stats(address, out=out, watch=True, interval=0.1, count=2, as_json=True)
            lines = out.getvalue().splitlines()
            assert len(lines) == 2
            assert all(json.loads(line)["format"] == STATS_FORMAT for line in lines)


async def test_a_shutdown_counts_as_shutting_down_on_both_sides(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(30):
        async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
            server = cs.Server(server_mpx)
            await server.listen_and_serve("forever", forever)
            client = cs.Client(client_mpx)
            with pytest.raises(cs.ServerShuttingDown):
                async with client.lookup_and_post("forever") as sources:
                    source = await sources.receive()
                    assert await source.receive() == b"x"
                    await server_mpx.shutdown(grace=1.0)
                    await source.receive()
            await wait_until(lambda: server.statistics().active_requests == 0)
            assert server.statistics().outcomes == outcomes(shutting_down=1)
            assert client.statistics().outcomes == outcomes(shutting_down=1)
