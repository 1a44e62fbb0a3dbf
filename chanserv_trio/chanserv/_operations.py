"""What ``chanserv-trio serve`` adds to a node for its operators: the stats service
(:func:`~chanserv_trio.serve_stats`, read by ``chanserv-trio stats URL``) and, with
``--metrics URL``, the Prometheus endpoint (:func:`~chanserv_trio.serve_metrics`).
The command line only calls the functions here: :func:`add_metrics_option` and
:func:`serve_operations` for ``serve``, :func:`add_stats_parser` and
:func:`stats_command` for ``stats``."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO

import trio

from ..node._multiplexer import Multiplexer
from ._metrics import serve_metrics
from ._server import Server
from ._stats import print_stats, serve_stats

__all__ = ["add_metrics_option", "add_stats_parser", "serve_operations", "stats_command"]


def add_metrics_option(serve: argparse.ArgumentParser) -> None:
    """``serve --metrics URL``."""
    serve.add_argument(
        "--metrics",
        metavar="URL",
        help="serve Prometheus metrics at http://HOST:PORT/metrics (e.g. http://127.0.0.1:9100)",
    )


def add_stats_parser(commands: Any, **options: Any) -> argparse.ArgumentParser:
    """Register ``stats URL [--watch] [--interval SECONDS] [--json]`` on the
    subcommands ``commands``; ``options`` go to ``add_parser`` (``parents=``...)."""
    stats: argparse.ArgumentParser = commands.add_parser(
        "stats", help="print a node's statistics (--watch: refresh them in place)", **options
    )
    stats.add_argument("url", metavar="URL", help="the node to join and ask")
    stats.add_argument("--watch", action="store_true", help="refresh every --interval seconds")
    stats.add_argument(
        "--interval", type=float, default=1.0, metavar="SECONDS", help="default: 1 (0.1 at least)"
    )
    stats.add_argument("--json", action="store_true", help="each snapshot as one line of JSON")
    stats.add_argument("--dial-timeout", type=float, default=5.0, metavar="SECONDS")
    return stats


async def stats_command(args: argparse.Namespace, run: object = None) -> int:
    """Run ``stats`` as parsed by :func:`add_stats_parser`; returns the exit status."""
    if not args.interval > 0:
        raise ValueError(f"--interval must be a number of seconds above 0, not {args.interval}")
    await print_stats(
        args.url,
        watch=args.watch,
        interval=args.interval,
        as_json=args.json,
        dial_timeout=args.dial_timeout,
    )
    return 0


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
