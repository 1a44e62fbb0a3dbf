"""Prometheus metrics of a node, read from its statistics when scraped (optional:
``pip install 'chanserv-trio[metrics]'``, which brings ``prometheus-client``).

:class:`StatisticsCollector` turns :meth:`Multiplexer.totals`,
:meth:`Multiplexer.statistics`, :meth:`Server.statistics` and :meth:`Client.statistics`
into counters and gauges each time it is collected. :func:`serve_metrics` serves them
on ``/metrics`` with prometheus-client's own HTTP server, which runs in a thread of its
own: a scrape asks the trio thread for the snapshots (``trio.from_thread``), so the
node's state is only ever read where it changes. docs/operations.md lists the metrics.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import attrs
import trio

from ..node._multiplexer import Multiplexer, MultiplexerStatistics, MultiplexerTotals
from ._client import Client
from ._server import Server
from ._statistics import ClientStatistics, ServerStatistics

if TYPE_CHECKING:
    from prometheus_client.metrics_core import Metric
    from prometheus_client.registry import CollectorRegistry

__all__ = ["StatisticsCollector", "serve_metrics"]

_NEEDS = "metrics need prometheus-client: pip install 'chanserv-trio[metrics]'"


@attrs.frozen
class _Snapshot:
    totals: MultiplexerTotals
    now: MultiplexerStatistics
    server: ServerStatistics | None
    client: ClientStatistics | None


class StatisticsCollector:
    """A prometheus-client collector of one node's statistics, read at each scrape.

    Register it on a ``prometheus_client.CollectorRegistry`` (``registry.register(
    StatisticsCollector(mpx, server))``); :func:`serve_metrics` does so for you. Its
    metrics are named ``{namespace}_...`` (default ``chanserv``). It may be collected
    from the trio thread running ``mpx`` or from any other thread (prometheus-client's
    HTTP server): the snapshots are then taken in the trio thread, which needs to be
    running; if it no longer is, the scrape has no chanserv metrics.
    """

    def __init__(
        self,
        mpx: Multiplexer,
        server: Server | None = None,
        client: Client | None = None,
        *,
        namespace: str = "chanserv",
    ) -> None:
        self.mpx = mpx
        self.server = server
        self.client = client
        self.namespace = namespace
        self._token = trio.lowlevel.current_trio_token()

    def _take(self) -> _Snapshot:
        server, client = self.server, self.client
        return _Snapshot(
            self.mpx.totals(),
            self.mpx.statistics(),
            None if server is None else server.statistics(),
            None if client is None else client.statistics(),
        )

    def snapshot(self) -> _Snapshot | None:
        """The statistics now, taken in the node's trio thread (None once it ended)."""
        try:
            trio.lowlevel.current_trio_token()
        except RuntimeError:
            pass
        else:
            return self._take()  # collected inside trio (the tests, generate_latest)
        try:
            return trio.from_thread.run_sync(self._take, trio_token=self._token)
        except trio.RunFinishedError:
            return None

    def collect(self) -> Iterator[Metric]:
        """The metrics (called by prometheus-client at each scrape)."""
        try:
            from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
        except ImportError as exc:  # pragma: no cover - constructed only with it present
            raise ImportError(_NEEDS) from exc
        snap = self.snapshot()
        if snap is None:
            return
        ns = self.namespace
        totals, now = snap.totals, snap.now

        def counter(name: str, doc: str, value: float) -> CounterMetricFamily:
            return CounterMetricFamily(f"{ns}_{name}", doc, value=value)

        def gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
            return GaugeMetricFamily(f"{ns}_{name}", doc, value=value)

        yield gauge("links", "Links up now.", now.links)
        yield counter("links_opened", "Links that completed their handshake.", totals.links_opened)
        yield counter("links_closed", "Links closed or lost.", totals.links_closed)
        yield counter(
            "links_refused", "Connections refused by a listener's max_links.", now.links_refused
        )
        yield counter(
            "resets_refused",
            "Peer resets refused by the per-host budget (ENHANCE_YOUR_CALM).",
            now.resets_refused,
        )
        yield gauge("streams_open", "Streams open on the links up now.", now.open_streams)
        yield counter("streams_opened", "Streams opened by either side.", totals.streams_opened)
        for name, doc, pair in (
            ("bytes", "Bytes to and from the transports.", (totals.bytes_in, totals.bytes_out)),
            (
                "messages",
                "Whole messages received and sent.",
                (totals.messages_in, totals.messages_out),
            ),
        ):
            family = CounterMetricFamily(f"{ns}_{name}", doc, labels=["direction"])
            family.add_metric(["in"], pair[0])
            family.add_metric(["out"], pair[1])
            yield family
        yield counter(
            "window_stalls", "Times a sender waited for flow-control credit.", totals.window_stalls
        )
        yield gauge(
            "bytes_buffered",
            "Received bytes not yet consumed by the application.",
            now.bytes_buffered,
        )
        yield gauge("bytes_queued", "Bytes queued for the transports.", now.bytes_queued)
        rtt = GaugeMetricFamily(
            f"{ns}_rtt_seconds", "The largest last-measured round-trip time over the links."
        )
        if now.rtt is not None:
            rtt.add_metric([], now.rtt)
        yield rtt
        yield from self._requests(snap)

    def _requests(self, snap: _Snapshot) -> Iterator[Metric]:
        from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

        ns = self.namespace
        requests = CounterMetricFamily(
            f"{ns}_requests",
            "Finished requests by side (server, client), service and outcome.",
            labels=["side", "service", "outcome"],
        )
        active = GaugeMetricFamily(
            f"{ns}_requests_active", "Requests running now.", labels=["side", "service"]
        )
        per_service: dict[str, Any] = {
            field: CounterMetricFamily(f"{ns}_{name}", doc, labels=["side", "service"])
            for field, name, doc in (
                ("sources", "sources", "Sources announced (server) or received (client)."),
                ("frames", "frames", "Frames sent (server) or received (client)."),
                ("bytes", "frame_bytes", "Payload bytes of those frames."),
                ("errors", "errors", "Errors reported to on_error."),
            )
        }
        for side, stats in (("server", snap.server), ("client", snap.client)):
            if stats is None:
                continue
            for service, one in stats.services.items():
                for outcome, count in one.outcomes.items():
                    requests.add_metric([side, service, outcome], count)
                active.add_metric([side, service], one.active)
                for field, family in per_service.items():
                    family.add_metric([side, service], getattr(one, field))
        yield requests
        yield active
        yield from per_service.values()


def _registry(collector: StatisticsCollector) -> CollectorRegistry:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry


async def serve_metrics(
    url: str,
    mpx: Multiplexer,
    server: Server | None = None,
    client: Client | None = None,
    *,
    namespace: str = "chanserv",
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the node's metrics for Prometheus at ``url`` (``http://HOST:PORT``, or
    ``http://HOST:PORT/metrics``; port 0 picks a free one) until cancelled; use it with
    ``await nursery.start(serve_metrics, url, mpx, server)``, which returns the bound
    URL of the metrics page.

    The page is served by prometheus-client's HTTP server in a thread of its own and
    holds only this node's metrics (:class:`StatisticsCollector`), not the default
    registry's. Raises ``ImportError`` without prometheus-client, ``ValueError`` for
    another URL, ``OSError`` if it cannot bind.
    """
    try:
        from prometheus_client import start_http_server
    except ImportError as exc:
        raise ImportError(_NEEDS) from exc
    host, port = _address(url)
    registry = _registry(StatisticsCollector(mpx, server, client, namespace=namespace))
    httpd, thread = await trio.to_thread.run_sync(
        lambda: start_http_server(port, host, registry=registry)
    )
    try:
        bound_port = httpd.server_address[1]
        shown = f"[{host}]" if ":" in host else host
        task_status.started(f"http://{shown}:{bound_port}/metrics")
        await trio.sleep_forever()
    finally:
        with trio.CancelScope(shield=True):
            await trio.to_thread.run_sync(httpd.shutdown)
            httpd.server_close()
            await trio.to_thread.run_sync(thread.join, 5.0)


def _address(url: str) -> tuple[str, int]:
    """``(host, port)`` of a metrics URL."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        port = None
        parts = None
    if (
        parts is None
        or parts.scheme != "http"
        or not parts.hostname
        or port is None
        or parts.path not in ("", "/", "/metrics")
        or parts.query
    ):
        raise ValueError(f"a metrics URL is http://HOST:PORT[/metrics], not {url!r}")
    return parts.hostname, port
