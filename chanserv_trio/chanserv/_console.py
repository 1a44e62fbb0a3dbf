"""The console: a web page that shows a node at work, served over HTTP by hypercorn.

The page (``console_static/``: HTML, CSS and a script built on the JavaScript client,
whose modules are copied into ``console_static/client/``) links to the node over a
WebSocket of its own, reads the node's live statistics from the ``chanserv_trio.stats``
service, and posts to any service the node serves or relays.

- :func:`serve_console` adds the console to a running :class:`Multiplexer` (what
  ``serve --console URL`` does): a ``ws://`` listener for the page when the node has
  none, the statistics service when it does not serve it yet, and the HTTP server.
- :func:`run_console` is ``chanserv-trio console --join URL --listen URL``: a router
  node of its own that joins the given nodes and serves the console about itself, so
  the page shows its links to them and posts through them.

HTTP is hypercorn's (``pip install chanserv-trio[console]``); the application here only
picks which of a few files answers a GET.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Awaitable, Callable, MutableMapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TextIO, cast
from urllib.parse import urlsplit

import trio

from .._errors import ChanservError
from ..node._backoff import Backoff
from ..node._multiplexer import Multiplexer
from ._server import Server
from ._stats import STATS_SERVICE, serve_stats

__all__ = ["STATIC", "ConsoleApp", "console_bind", "run_console", "serve_console"]

#: The folder of the page's files (package data).
STATIC = Path(__file__).resolve().parent / "console_static"

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
}


def _files(root: Path) -> dict[str, Path]:
    """The URL path of every file of the page (and nothing else is ever served)."""
    files = {
        "/" + path.relative_to(root).as_posix(): path
        for path in root.rglob("*")
        if path.is_file() and path.suffix in _TYPES
    }
    files["/"] = root / "index.html"
    return files


class ConsoleApp:
    """The ASGI application of the console: the page's files, and ``/config.json``
    telling the page where the node's WebSocket listener is and which service serves
    its statistics. Anything else is 404; methods other than GET and HEAD are 405."""

    def __init__(self, ws_url: str, *, stats_service: str = STATS_SERVICE) -> None:
        self.config = {"ws": ws_url, "stats": stats_service}
        self.files = _files(STATIC)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":  # a WebSocket to this port: the page links elsewhere
            await send({"type": "websocket.close", "code": 1008})
            return
        method = scope["method"]
        path = scope["path"]
        if method not in ("GET", "HEAD"):
            await _respond(send, 405, b"method not allowed\n", "text/plain", method, GET_HEAD)
        elif path == "/config.json":
            body = json.dumps(self.config).encode()
            await _respond(send, 200, body, "application/json", method)
        elif path in self.files:
            file = self.files[path]
            body = await trio.Path(file).read_bytes()
            await _respond(send, 200, body, _TYPES[file.suffix], method)
        else:
            await _respond(send, 404, b"not found\n", "text/plain", method)


GET_HEAD = [(b"allow", b"GET, HEAD")]


async def _respond(
    send: Send,
    status: int,
    body: bytes,
    content_type: str,
    method: str,
    extra: list[tuple[bytes, bytes]] | None = None,
) -> None:
    headers = [
        (b"content-type", content_type.encode()),
        (b"content-length", b"%d" % len(body)),
        (b"cache-control", b"no-store"),
        (b"x-content-type-options", b"nosniff"),
        *(extra or []),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": b"" if method == "HEAD" else body})


def console_bind(url: str) -> str:
    """``http://HOST:PORT`` (the console's ``--listen``) as hypercorn's ``HOST:PORT``."""
    parts = urlsplit(url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"the console listens on http://HOST:PORT, not {url!r}")
    if parts.port is None:
        raise ValueError(f"the console's URL needs a port (0 picks a free one): {url!r}")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{parts.port}"


def _page_ws_url(mpx: Multiplexer) -> str | None:
    return next((url for url in mpx.listening if url.startswith("ws://")), None)


async def serve_console(
    mpx: Multiplexer,
    url: str,
    *,
    ws_url: str | None = None,
    ping_interval: float | None = 1.0,
    out: TextIO = sys.stdout,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the console of ``mpx`` on ``url`` (``http://HOST:PORT``, port 0 for a free
    one) until cancelled; ``task_status`` gets the bound ``http://`` URL.

    The page links to the node over WebSocket: at ``ws_url`` when given (the node
    listens there), else on the node's first ``ws://`` listener, else on a new one at
    ``ws://HOST:0/chanserv``. The node serves :data:`STATS_SERVICE` if it does not yet.
    While the console runs, every ``ping_interval`` seconds (None: never) each link
    with no PING awaiting its answer is pinged, so the page shows live round trips.
    """
    try:
        from hypercorn.config import Config
        from hypercorn.trio import serve
    except ImportError as exc:
        raise ImportError(
            "the console needs hypercorn: pip install 'chanserv-trio[console]'"
        ) from exc
    bind = console_bind(url)
    if ws_url is not None:
        page_url = await mpx.listen(ws_url)
    else:
        page_url = _page_ws_url(mpx) or await mpx.listen(
            f"ws://{bind.rpartition(':')[0]}:0/chanserv"
        )
    if STATS_SERVICE not in mpx.services:
        await serve_stats(mpx, Server(mpx, on_error=_report))
    app = cast(Any, ConsoleApp(page_url))
    config = Config()
    config.bind = [bind]
    config.accesslog = None
    config.errorlog = None
    config.graceful_timeout = 1.0
    async with trio.open_nursery() as nursery:
        if ping_interval is not None:
            nursery.start_soon(_ping_links, mpx, ping_interval)
        bound: list[str] = await nursery.start(
            # hypercorn types the scope and messages as TypedDicts; the app reads them
            # as plain mappings.
            lambda task_status: serve(app, config, task_status=task_status)
        )
        address = bound[0]
        print(f"console on {address} (the page links to {page_url})", file=out, flush=True)
        task_status.started(address)


async def run_console(
    joins: Sequence[str],
    url: str,
    *,
    ws_url: str | None = None,
    out: TextIO = sys.stdout,
    task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED,
) -> None:
    """``chanserv-trio console``: a router node that joins every URL in ``joins``
    (retrying in the background until each answers) and serves its console on ``url``
    until cancelled; ``task_status`` gets the console's bound ``http://`` URL.

    The page shows this node's links (one to each joined node, one for the page) and
    posts through it to every service the joined nodes offer.
    """
    if not joins:
        raise ValueError("the console needs at least one --join URL")
    console_bind(url)  # a bad URL fails before anything starts
    async with Multiplexer(router=True) as mpx, trio.open_nursery() as nursery:
        for each in joins:
            nursery.start_soon(_join_eventually, mpx, each, out)
        address = await nursery.start(partial(serve_console, mpx, url, ws_url=ws_url, out=out))
        task_status.started(address)
        await trio.sleep_forever()


async def _ping_links(mpx: Multiplexer, interval: float) -> None:
    while True:
        for link in mpx.links:
            if link.statistics().pings_outstanding == 0:
                link.ping()
        await trio.sleep(interval)


def _report(exc: BaseException) -> None:
    print(f"console: stats service error: {exc!r}", file=sys.stderr)


async def _join_eventually(mpx: Multiplexer, url: str, out: TextIO) -> None:
    for delay in Backoff(*mpx.redial_backoff).delays():
        try:
            await mpx.join(url)
        except (ChanservError, OSError) as exc:
            print(f"cannot join {url} yet ({exc}); retrying in {delay:.2g} s", file=sys.stderr)
            await trio.sleep(delay)
            continue
        print(f"joined {url}", file=out, flush=True)
        return
