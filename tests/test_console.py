"""The console: its page and files over HTTP (hypercorn), the statistics it streams over
the protocol, its copy of the JavaScript client, and the page itself in a headless
Chromium showing the links, the services and a post's sources."""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tomllib
from collections.abc import AsyncIterator
from fnmatch import fnmatch
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

import chanserv_trio as cs
from chanserv_trio._cli import _parser, run_serve
from chanserv_trio.chanserv._console import STATIC, console_bind, run_console, serve_console
from chanserv_trio.chanserv._stats import STATS_SERVICE, open_stats

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "js"
NODE = shutil.which("node")
NPM = shutil.which("npm")
CHROMIUM = os.environ.get("CHANSERV_CHROMIUM", "/usr/bin/chromium")


async def parts(request: bytes) -> AsyncIterator[cs.Source]:
    """Source i of the answer to ``abc`` is headed ``part i of abc`` and has i+1 frames."""

    async def frames(index: int) -> AsyncIterator[bytes]:
        for each in range(index + 1):
            yield b"frame %d of part %d" % (each, index)

    for index in range(len(request)):
        yield cs.Source(b"part %d of %s" % (index, request), frames(index))


@pytest.fixture
async def served() -> AsyncIterator[str]:
    """A node serving ``parts`` on TCP loopback; its URL."""
    async with cs.Multiplexer() as mpx:
        address = await mpx.listen("tcp://127.0.0.1:0")
        await cs.Server(mpx).listen_and_serve("parts", parts)
        yield address


@pytest.fixture
async def console(served: str, nursery: trio.Nursery) -> str:
    """``chanserv-trio console --join <served> --listen http://127.0.0.1:0``; its URL."""
    url: str = await nursery.start(run_console, [served], "http://127.0.0.1:0")
    return url


async def test_the_console_serves_its_page_and_files_and_nothing_else(console: str) -> None:
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=console, trust_env=False) as http:
            page = await http.get("/")
            assert page.status_code == 200
            assert page.headers["content-type"].startswith("text/html")
            assert '<script type="module" src="/console.js">' in page.text
            script = await http.get("/console.js")
            assert script.headers["content-type"].startswith("text/javascript")
            assert 'from "./client/index.js"' in script.text
            client = await http.get("/client/index.js")
            assert client.content == (JS / "src" / "index.js").read_bytes()
            assert (await http.get("/console.css")).headers["content-type"].startswith("text/css")
            head = await http.head("/console.js")
            assert head.status_code == 200 and head.content == b""
            for missing in ("/nothing.js", "/../pyproject.toml", "/client/../../_console.py"):
                assert (await http.get(missing)).status_code == 404, missing
            post = await http.post("/", content=b"x")
            assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"
            config = (await http.get("/config.json")).json()
    assert config["stats"] == STATS_SERVICE
    assert config["ws"].startswith("ws://127.0.0.1:")


async def test_the_page_s_websocket_reaches_the_stats_and_the_joined_services(
    console: str, served: str
) -> None:
    """What the page does, from Python: link to the WebSocket the config names, read a
    snapshot with a link to the joined node, and post through the console to it."""
    with trio.fail_after(10):
        async with httpx.AsyncClient(base_url=console, trust_env=False) as http:
            ws = (await http.get("/config.json")).json()["ws"]
        async with cs.Multiplexer() as mpx:
            await mpx.join(ws)
            client = cs.Client(mpx, dial_timeout=5.0)
            async with open_stats(client, interval=0.1, count=None) as snapshots:
                async for snapshot in snapshots:
                    if any(link["node_key"] == served for link in snapshot["links"]):
                        break
            joined = next(link for link in snapshot["links"] if link["node_key"] == served)
            assert joined["peer_services"] == ["parts"]
            assert snapshot["services"]["parts"] == [served]
            assert snapshot["node"]["router"] and snapshot["node"]["joined"] == [served]
            headers = []
            async with client.lookup_and_post("parts", b"ab") as sources:
                async for source in sources:
                    headers.append((source.header, [frame async for frame in source]))
    assert headers == [
        (b"part 0 of ab", [b"frame 0 of part 0"]),
        (b"part 1 of ab", [b"frame 0 of part 1", b"frame 1 of part 1"]),
    ]


async def test_serve_console_adds_the_page_to_a_running_node(nursery: trio.Nursery) -> None:
    """``serve --console``: the node's own ws:// listener is the page's, stats are served."""
    async with cs.Multiplexer() as mpx:
        ws = await mpx.listen("ws://127.0.0.1:0/chanserv")
        with trio.fail_after(10):
            url: str = await nursery.start(serve_console, mpx, "http://127.0.0.1:0")
            async with httpx.AsyncClient(base_url=url, trust_env=False) as http:
                assert (await http.get("/config.json")).json()["ws"] == ws
        assert STATS_SERVICE in mpx.services
        nursery.cancel_scope.cancel()


async def test_serve_with_console_serves_the_page_beside_the_node(nursery: trio.Nursery) -> None:
    """``chanserv-trio serve ... --console URL``: run_serve starts the console too."""
    out = io.StringIO()
    with trio.fail_after(10):
        bound = await nursery.start(
            partial(
                run_serve,
                parts,
                ["ws://127.0.0.1:0/chanserv"],
                "parts",
                out,
                console="http://127.0.0.1:0",
            )
        )
        printed = re.search(r"console on (http://\S+)", out.getvalue())
        assert printed is not None, out.getvalue()
        async with httpx.AsyncClient(base_url=printed[1], trust_env=False) as http:
            assert (await http.get("/config.json")).json() == {
                "ws": bound[0],
                "stats": STATS_SERVICE,
            }
            assert (await http.get("/")).status_code == 200
    nursery.cancel_scope.cancel()


def test_the_console_listens_on_http_urls_with_a_port() -> None:
    assert console_bind("http://127.0.0.1:8080") == "127.0.0.1:8080"
    assert console_bind("http://[::1]:0/") == "[::1]:0"
    for bad in ("https://127.0.0.1:1", "tcp://127.0.0.1:1", "http://127.0.0.1", "http://h:1/x"):
        with pytest.raises(ValueError, match="console"):
            console_bind(bad)


async def test_run_console_needs_a_node_to_join() -> None:
    with pytest.raises(ValueError, match="--join"):
        await run_console([], "http://127.0.0.1:0")


def test_the_command_line_has_console_and_serve_console() -> None:
    args = _parser().parse_args(["console", "--join", "tcp://h:1", "--listen", "http://h:2"])
    assert (args.command_name, args.join, args.listen) == ("console", ["tcp://h:1"], "http://h:2")
    args = _parser().parse_args(
        ["serve", "m:f", "--listen", "tcp://h:1", "--console", "http://h:2"]
    )
    assert args.console == "http://h:2"


def test_the_console_s_client_is_a_copy_of_js_src() -> None:
    """The page loads the client from the package (js/ is not installed with it): the
    copy must be js/src as it is. Refresh it with ``nox -s console_client``."""
    source = {path.name: path.read_bytes() for path in (JS / "src").glob("*.js")}
    copy = {path.name: path.read_bytes() for path in (STATIC / "client").glob("*.js")}
    assert sorted(copy) == sorted(source), "stale console client: run nox -s console_client"
    stale = [name for name in source if copy[name] != source[name]]
    assert not stale, f"stale console client {stale}: run nox -s console_client"


def test_every_file_of_the_page_is_package_data() -> None:
    """An installed console finds its page: pyproject's package-data takes every file."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["chanserv_trio"]
    package = ROOT / "chanserv_trio"
    files = [path.relative_to(package).as_posix() for path in STATIC.rglob("*") if path.is_file()]
    assert {"chanserv/console_static/index.html", "chanserv/console_static/client/node.js"} <= set(
        files
    )
    missing = [name for name in files if not any(fnmatch(name, p) for p in patterns)]
    assert not missing, f"add to [tool.setuptools.package-data]: {missing}"


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The JavaScript package's development tools (playwright-core), from its lock file."""
    modules = JS / "node_modules"
    if not modules.is_dir():
        assert NPM is not None
        subprocess.run(
            [NPM, "ci", "--no-audit", "--no-fund"],
            cwd=JS,
            check=True,
            timeout=600,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    return modules


needs_node = pytest.mark.skipif(
    NODE is None or NPM is None,
    reason="node and npm are not installed: the console's page tests need Node 20 or later",
)


@needs_node
def test_the_page_s_script_type_checks(node_modules: Path) -> None:
    """console.js is JavaScript with checked JSDoc, against the client's own types."""
    assert NODE is not None
    result = subprocess.run(
        [NODE, str(node_modules / "typescript/bin/tsc"), "-p", "tsconfig.console.json"],
        cwd=JS,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout


@needs_node
@pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHANSERV_CHROMIUM)",
)
async def test_the_page_in_chromium_shows_links_services_and_a_post_s_sources(
    node_modules: Path, console: str, served: str
) -> None:
    assert NODE is not None
    with trio.fail_after(60):
        result = await trio.run_process(
            [NODE, "test/support/console_page.js", console + "/", served, "parts", "abc"],
            cwd=JS,
            env={**os.environ, "CHANSERV_CHROMIUM": CHROMIUM},
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    assert result.returncode == 0, result.stderr.decode()[-5000:]
    shown = json.loads(result.stdout)
    log = "\n".join(shown["log"])
    assert shown["status"] == "live", (shown["statusText"], log)
    rows = {row["peer"]: row for row in shown["links"]}
    assert served in rows, (rows, log)
    row = rows[served]
    # The console's link to the node carried the post's 1 + 2 + 3 frames in (the request
    # travels in OPEN, not as a frame out).
    assert int(row["cells"]["frames-in"]) >= 6, row
    assert row["cells"]["bytes-out"] != "0 B", row
    assert row["cells"]["rtt"].endswith(" ms"), row  # the console pings its links
    assert row["samples"] >= 1, row
    assert len(rows) == 2, rows  # the joined node and the page itself
    offered = {item["name"]: item["offeredBy"] for item in shown["services"]}
    assert offered["parts"] == f"offered by {served}"
    assert offered[STATS_SERVICE] == "offered by this node"
    assert shown["post"]["state"] == "done", (shown["post"], log)
    assert shown["cards"] == [
        {
            "header": f"part {index} of abc",
            "frames": index + 1,
            "done": "true",
            "items": [f"frame {each} of part {index}" for each in range(index + 1)],
        }
        for index in range(3)
    ], log
