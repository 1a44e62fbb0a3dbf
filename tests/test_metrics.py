"""The Prometheus endpoint: scraped with a plain HTTP client, its counters follow real
requests over a real link."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
import trio
from helpers import wait_until
from prometheus_client.parser import text_string_to_metric_families

import chanserv_trio as cs
from chanserv_trio.chanserv._metrics import StatisticsCollector, serve_metrics


async def two_frames(request: bytes) -> AsyncIterator[cs.Source]:
    async def frames() -> AsyncIterator[bytes]:
        yield b"abc"
        yield b"de"

    if request == b"fail":
        raise ValueError("no")
    yield cs.Source(header=b"one", frames=frames())


async def scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    async with httpx.AsyncClient(trust_env=False) as http:
        response = await http.get(url)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


async def post(client: cs.Client, body: bytes = b"") -> None:
    async with client.lookup_and_post("two", body) as sources:
        async for source in sources:
            async for _ in source:
                pass


def server_side(service: str, **labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted({"side": "server", "service": service, **labels}.items()))


async def test_scraped_counters_move_with_requests() -> None:
    with trio.fail_after(20):
        async with cs.Multiplexer() as server_mpx, trio.open_nursery() as nursery:
            address = await server_mpx.listen("tcp://127.0.0.1:0")
            server = cs.Server(server_mpx)
            await server.listen_and_serve("two", two_frames)
            url = await nursery.start(serve_metrics, "http://127.0.0.1:0", server_mpx, server)
            assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")

            before = await scrape(url)
            assert before["chanserv_links", ()] == 0
            assert before.get(("chanserv_requests_total", server_side("two", outcome="ok"))) == 0

            async with cs.Multiplexer() as client_mpx:
                await client_mpx.join(address)
                client = cs.Client(client_mpx)
                for _ in range(3):
                    await post(client)
                with pytest.raises(cs.RemoteError):
                    await post(client, b"fail")
                during = await scrape(url)
            ok = ("chanserv_requests_total", server_side("two", outcome="ok"))
            failed = ("chanserv_requests_total", server_side("two", outcome="remote_error"))
            assert during[ok] == 3
            assert during[failed] == 1
            assert during["chanserv_frames_total", server_side("two")] == 6
            assert during["chanserv_frame_bytes_total", server_side("two")] == 15
            assert during["chanserv_sources_total", server_side("two")] == 3
            assert during["chanserv_errors_total", server_side("two")] == 1
            assert during["chanserv_requests_active", server_side("two")] == 0
            assert during["chanserv_links", ()] == 1
            assert during["chanserv_links_opened_total", ()] == 1
            bytes_in = ("chanserv_bytes_total", (("direction", "in"),))
            assert during[bytes_in] > before[bytes_in]
            assert during["chanserv_streams_opened_total", ()] == 7  # 4 requests, 3 sources

            with trio.fail_after(5):
                await wait_until(lambda: server_mpx.totals().links_closed == 1)
            after = await scrape(url)
            assert after["chanserv_links_closed_total", ()] == 1
            # Counters keep what the closed link carried; the gauges drop.
            assert after[bytes_in] >= during[bytes_in]
            assert after["chanserv_links", ()] == 0
            assert after[ok] == 3
            nursery.cancel_scope.cancel()


async def test_collector_works_inside_trio_and_names_client_metrics() -> None:
    from prometheus_client import CollectorRegistry, generate_latest

    with trio.fail_after(10):
        async with cs.Multiplexer() as server_mpx, cs.Multiplexer() as client_mpx:
            address = await server_mpx.listen("tcp://127.0.0.1:0")
            await cs.Server(server_mpx).listen_and_serve("two", two_frames)
            await client_mpx.join(address)
            client = cs.Client(client_mpx)
            await post(client)
            registry = CollectorRegistry(auto_describe=False)
            registry.register(StatisticsCollector(client_mpx, client=client, namespace="app"))
            text = generate_latest(registry).decode()
            assert 'app_requests_total{outcome="ok",service="two",side="client"} 1.0' in text
            assert 'app_frames_total{service="two",side="client"} 2.0' in text
            assert "app_rtt_seconds" in text


@pytest.mark.parametrize(
    "url", ["tcp://127.0.0.1:0", "http://127.0.0.1", "http://127.0.0.1:0/other", "http://:9"]
)
async def test_metrics_url_must_be_http_host_port(url: str) -> None:
    async with cs.Multiplexer() as mpx:
        with pytest.raises(ValueError, match="metrics URL"):
            await serve_metrics(url, mpx)
