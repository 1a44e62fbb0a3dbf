"""What ``chanserv-trio serve`` adds to a node for its operators: the stats service
(:func:`~chanserv_trio.serve_stats`, read by ``chanserv-trio stats URL``) and, with
``--metrics URL``, the Prometheus endpoint (:func:`~chanserv_trio.serve_metrics`).
The command line only calls :func:`serve_operations`; the logic lives here."""

from __future__ import annotations

import sys
from typing import TextIO

import trio

from ..node._multiplexer import Multiplexer
from ._metrics import serve_metrics
from ._server import Server
from ._stats import serve_stats

__all__ = ["serve_operations"]


async def serve_operations(
    mpx: Multiplexer,
    server: Server | None = None,
    *,
    metrics: str | None = None,
    stats: bool = True,
    out: TextIO | None = None,
    task_status: trio.TaskStatus[str | None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Offer the stats service through ``server`` (one of its own when None: a router
    serves nothing else) when ``stats``, and serve metrics at ``metrics`` when given,
    saying where on ``out``. Use it with ``nursery.start``: it reports the metrics page's
    URL (None without one) and then runs until cancelled while it serves metrics."""
    out = sys.stdout if out is None else out
    if stats:
        server = server or Server(mpx)
        await serve_stats(mpx, server)
    if metrics is None:
        task_status.started(None)
        return
    async with trio.open_nursery() as nursery:
        page: str = await nursery.start(serve_metrics, metrics, mpx, server)
        print(f"metrics on {page}", file=out, flush=True)
        task_status.started(page)
