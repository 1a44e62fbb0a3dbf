"""A node's statistics as one JSON-able snapshot, and the ``chanserv_trio.stats`` service.

:func:`snapshot` gathers what a :class:`~chanserv_trio.Multiplexer` (and optionally a
:class:`~chanserv_trio.Server` and a :class:`~chanserv_trio.Client` on it) counts into
plain dicts, lists, strings and numbers. :func:`serve_stats` offers those snapshots to
every linked peer as a service; :func:`open_stats` and :func:`fetch_stats` read them
from one; :func:`format_snapshot` renders one as text and :func:`print_stats` is what
``chanserv-trio stats URL [--watch]`` runs. docs/operations.md specifies the format.
"""

from __future__ import annotations

import json
import math
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any, Final, TextIO

import attrs
import trio

from ..node._multiplexer import Multiplexer
from ._client import Client, RemoteSource
from ._server import Server, Source

__all__ = [
    "STATS_FORMAT",
    "STATS_SERVICE",
    "fetch_stats",
    "format_snapshot",
    "open_stats",
    "print_stats",
    "serve_stats",
    "snapshot",
]

#: The name :func:`serve_stats` offers its snapshots under.
STATS_SERVICE: Final = "chanserv_trio.stats"
#: The ``format`` of every snapshot, and of the stats source's header; a reader checks
#: it (a later incompatible layout gets another number).
STATS_FORMAT: Final = "chanserv_trio.stats/1"
#: The shortest ``interval`` the service accepts (a shorter one is raised to it).
MIN_INTERVAL: Final = 0.1


def snapshot(
    mpx: Multiplexer, server: Server | None = None, client: Client | None = None
) -> dict[str, Any]:
    """Everything ``mpx`` counts now, as a JSON-able dict (layout in docs/operations.md):
    the node, its cumulative ``totals`` (:meth:`Multiplexer.totals`), its current
    ``statistics`` (:meth:`Multiplexer.statistics`), each live link with its peer's
    services and counters, which peers offer each service, and ``server`` and
    ``client`` statistics (None when not given)."""
    links = mpx.links
    offered: dict[str, list[str]] = {name: ["local"] for name in mpx.services}
    link_rows = []
    for link in links:
        for name in link.peer_services:
            offered.setdefault(name, []).append(link.node_key)
        link_rows.append(
            {
                "node_key": link.node_key,
                "remote_addr": link.remote_addr,
                "local_addr": link.local_addr,
                "joined_url": link.joined_url,
                "going_away": link.going_away,
                "peer_services": sorted(link.peer_services),
                "peer_relayed": sorted(link.peer_relayed),
                "statistics": attrs.asdict(link.statistics()),
            }
        )
    return {
        "format": STATS_FORMAT,
        "time": time.time(),
        "node": {
            "id": mpx.node_id,
            "router": mpx.router,
            "closing": mpx.closing,
            "listening": mpx.listening,
            "joined": mpx.joined,
            "services": sorted(mpx.services),
        },
        "totals": attrs.asdict(mpx.totals()),
        "statistics": attrs.asdict(mpx.statistics()),
        "links": link_rows,
        "services": {name: offered[name] for name in sorted(offered)},
        "server": None if server is None else attrs.asdict(server.statistics()),
        "client": None if client is None else attrs.asdict(client.statistics()),
    }


def _options(body: bytes) -> tuple[float, int | None]:
    """``(interval, count)`` from a stats request body (docs/operations.md)."""
    if not body.strip():
        return 1.0, 1
    try:
        options = json.loads(body)
    except (UnicodeDecodeError, ValueError):
        raise ValueError("a stats request body is a JSON object or empty") from None
    if not isinstance(options, dict) or options.keys() - {"interval", "count"}:
        raise ValueError('a stats request body is {"interval": SECONDS, "count": N}')
    interval = options.get("interval", 1.0)
    if (
        isinstance(interval, bool)
        or not isinstance(interval, int | float)
        or not math.isfinite(interval)
        or interval < 0
    ):
        raise ValueError(f"interval must be a number of seconds, not {interval!r}")
    count = options.get("count", None if "interval" in options else 1)
    if count is not None and (isinstance(count, bool) or not isinstance(count, int) or count < 1):
        raise ValueError(f"count must be a whole number above 0 or null, not {count!r}")
    return max(float(interval), MIN_INTERVAL), count


async def serve_stats(
    mpx: Multiplexer,
    server: Server,
    *,
    client: Client | None = None,
    name: str = STATS_SERVICE,
) -> None:
    """Offer :func:`snapshot` of ``mpx`` (with ``server``'s and ``client``'s
    statistics) as service ``name`` through ``server``, to every peer linked to the node.

    A request's body is empty (one snapshot) or a JSON object ``{"interval": SECONDS,
    "count": N}``: ``count`` snapshots (``null``: until the client leaves; the default
    once ``interval`` is given), ``interval`` seconds apart (at least 0.1). The answer
    is one source with header ``{"format": "chanserv_trio.stats/1"}`` whose frames are
    the snapshots, one JSON object (UTF-8) each. A bad body fails the request with
    :class:`~chanserv_trio.RemoteError` of kind ``ValueError``.

    It exposes the node's links (peer addresses) and services to whoever can link to
    it: serve it only where those may see them.
    """

    async def frames(interval: float, count: int | None) -> AsyncIterator[bytes]:
        sent = 0
        while True:
            yield json.dumps(snapshot(mpx, server, client)).encode()
            sent += 1
            if count is not None and sent >= count:
                return
            await trio.sleep(interval)

    async def source_fn(request: bytes) -> AsyncIterator[Source]:
        interval, count = _options(request)
        header = json.dumps({"format": STATS_FORMAT}).encode()
        yield Source(header=header, frames=frames(interval, count))

    await server.listen_and_serve(name, source_fn)


@asynccontextmanager
async def open_stats(
    client: Client,
    *,
    interval: float | None = None,
    count: int | None = 1,
    name: str = STATS_SERVICE,
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """Ask the node serving ``name`` for snapshots, and iterate them as dicts:
    ``count`` of them (None: until the block is left) ``interval`` seconds apart
    (None: the service's default, 1 s). Raises :class:`ValueError` if the answer is
    not in :data:`STATS_FORMAT`, and whatever ``lookup_and_post`` raises."""
    options: dict[str, Any] = {"count": count}
    if interval is not None:
        options["interval"] = interval
    async with client.lookup_and_post(name, json.dumps(options).encode()) as sources:
        source = await sources.receive()
        try:
            header = json.loads(source.header)
        except ValueError:
            header = None
        if not isinstance(header, dict) or header.get("format") != STATS_FORMAT:
            raise ValueError(f"{name!r} does not answer in {STATS_FORMAT}: {source.header!r}")
        yield _Snapshots(source)


class _Snapshots:
    """The frames of a stats source, decoded (a plain iterator: nothing to finalize
    when the reader stops early)."""

    def __init__(self, source: RemoteSource) -> None:
        self._source = source

    def __aiter__(self) -> _Snapshots:
        return self

    async def __anext__(self) -> dict[str, Any]:
        try:
            frame = await self._source.receive()
        except trio.EndOfChannel:
            raise StopAsyncIteration from None
        decoded: dict[str, Any] = json.loads(frame)
        return decoded


async def fetch_stats(client: Client, *, name: str = STATS_SERVICE) -> dict[str, Any]:
    """One snapshot from the node serving ``name`` (:func:`open_stats` with ``count=1``)."""
    async with open_stats(client, count=1, name=name) as snapshots:
        async for one in snapshots:
            return one
    raise ValueError(f"{name!r} ended its stats source without a snapshot")


def _size(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(count) < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")  # pragma: no cover


def _rtt(rtt: float | None) -> str:
    return "-" if rtt is None else f"{rtt * 1000:.2f} ms"


def _outcomes(outcomes: Mapping[str, int]) -> str:
    shown = [f"{name} {count}" for name, count in outcomes.items() if count]
    return ", ".join(shown) or "none finished"


def _requests(title: str, stats: Mapping[str, Any], sent: str) -> list[str]:
    lines = [
        f"{title}: {stats['requests']} requests ({stats['active_requests']} active; "
        f"{_outcomes(stats['outcomes'])}), {stats['sources']} sources, "
        f"{stats['frames']} frames {sent} ({_size(stats['bytes'])}), {stats['errors']} errors"
    ]
    for service, one in sorted(stats["services"].items()):
        lines.append(
            f"  {service}: {one['requests']} requests ({one['active']} active; "
            f"{_outcomes(one['outcomes'])}), {one['sources']} sources, "
            f"{one['frames']} frames ({_size(one['bytes'])}), {one['errors']} errors"
        )
    return lines


def format_snapshot(snap: Mapping[str, Any]) -> str:
    """A snapshot as lines of text, for people (what ``chanserv-trio stats`` prints)."""
    node, totals, now = snap["node"], snap["totals"], snap["statistics"]
    lines = [
        f"node {node['id']}{' (router)' if node['router'] else ''}"
        f"{' (closing)' if node['closing'] else ''}",
        f"  listening: {', '.join(node['listening']) or '-'}",
        f"  joined: {', '.join(node['joined']) or '-'}",
        f"links: {now['links']} up ({totals['links_opened']} opened, "
        f"{totals['links_closed']} closed, {now['links_refused']} refused), "
        f"streams: {now['open_streams']} open ({totals['streams_opened']} opened), "
        f"rtt {_rtt(now['rtt'])}",
        f"traffic: in {_size(totals['bytes_in'])} / {totals['messages_in']} messages, "
        f"out {_size(totals['bytes_out'])} / {totals['messages_out']} messages, "
        f"{totals['window_stalls']} window stalls, buffered {_size(now['bytes_buffered'])}, "
        f"queued {_size(now['bytes_queued'])}",
    ]
    for link in snap["links"]:
        stats = link["statistics"]
        lines.append(
            f"  {link['node_key']}: {stats['open_streams']} streams, "
            f"in {_size(stats['bytes_in'])}, out {_size(stats['bytes_out'])}, "
            f"rtt {_rtt(stats['rtt'])}, {len(link['peer_services'])} services"
            f"{', going away' if link['going_away'] else ''}"
        )
    lines.append("services:")
    for service, where in snap["services"].items():
        lines.append(f"  {service}: {', '.join(where)}")
    if snap.get("server") is not None:
        lines += _requests("server", snap["server"], "sent")
    if snap.get("client") is not None:
        lines += _requests("client", snap["client"], "received")
    return "\n".join(lines) + "\n"


#: Moves the cursor home and clears the screen: ``--watch`` redraws in place on a terminal.
_CLEAR: Final = "\x1b[H\x1b[2J"


async def print_stats(
    url: str,
    *,
    watch: bool = False,
    interval: float = 1.0,
    count: int | None = None,
    out: TextIO | None = None,
    dial_timeout: float = 5.0,
    as_json: bool = False,
    join_options: Mapping[str, Any] | None = None,
) -> None:
    """Join the node at ``url``, ask it for its statistics (:func:`serve_stats`) and
    print them to ``out`` (default: standard output): once, or with ``watch`` every
    ``interval`` seconds (``count`` times; None: until cancelled), redrawn in place
    when ``out`` is a terminal. ``as_json`` prints each snapshot as one line of JSON.
    ``join_options`` go to :meth:`Multiplexer.join` (``ssl_context=``)."""
    out = sys.stdout if out is None else out
    async with Multiplexer() as mpx:
        await mpx.join(url, redial=False, **dict(join_options or {}))
        client = Client(mpx, dial_timeout=dial_timeout)
        wanted = count if watch else 1
        clear = watch and not as_json and out.isatty()
        async with open_stats(
            client, interval=interval if watch else None, count=wanted
        ) as snapshots:
            async for snap in snapshots:
                text = json.dumps(snap) + "\n" if as_json else format_snapshot(snap)
                if clear:
                    text = _CLEAR + text
                elif watch and not as_json:
                    text += "\n"
                out.write(text)
                out.flush()
