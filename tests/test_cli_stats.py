"""``chanserv-trio serve --metrics URL`` and ``chanserv-trio stats URL [--watch]``."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

import chanserv_trio as cs
from chanserv_trio import _cli as cli

ROOT = Path(__file__).resolve().parent.parent
#: The command, run from this tree (cwd first on the path).
STATS = [sys.executable, "-m", "chanserv_trio", "stats"]


async def hello(request: bytes) -> AsyncIterator[cs.Source]:
    yield cs.Source(header=b"hello")


def test_cli_parses_stats_and_metrics() -> None:
    args = cli._parser().parse_args(["stats", "tcp://127.0.0.1:1", "--watch", "--interval", "2"])
    assert (args.command_name, args.url, args.watch, args.interval, args.json) == (
        "stats",
        "tcp://127.0.0.1:1",
        True,
        2.0,
        False,
    )
    args = cli._parser().parse_args(["serve", "m:f", "--metrics", "http://127.0.0.1:9100"])
    assert args.metrics == "http://127.0.0.1:9100"


async def test_serve_offers_stats_and_metrics_and_stats_prints_them() -> None:
    out = io.StringIO()
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            (address,) = await nursery.start(
                partial(
                    cli.run_serve,
                    hello,
                    ["tcp://127.0.0.1:0"],
                    "hello",
                    out,
                    metrics="http://127.0.0.1:0",
                )
            )
            (page,) = [
                line.removeprefix("metrics on ")
                for line in out.getvalue().splitlines()
                if line.startswith("metrics on ")
            ]
            async with cs.Multiplexer() as mpx:
                await mpx.join(address)
                client = cs.Client(mpx)
                async with client.lookup_and_post("hello") as sources:
                    async for _ in sources:
                        pass
                snapshot = await cs.fetch_stats(client)
            assert snapshot["node"]["services"] == ["chanserv_trio.stats", "hello"]
            assert snapshot["server"]["services"]["hello"]["outcomes"]["ok"] == 1
            async with httpx.AsyncClient(trust_env=False) as http:
                text = (await http.get(page)).text
            ok = 'chanserv_requests_total{outcome="ok",service="hello",side="server"} 1.0'
            assert ok in text

            # The command itself, in a process of its own.
            done = await trio.run_process(
                [*STATS, address],
                capture_stdout=True,
                capture_stderr=True,
                cwd=ROOT,
            )
            shown = done.stdout.decode()
            assert shown.startswith("node "), done.stderr
            assert "hello: local" in shown
            assert "server: " in shown
            nursery.cancel_scope.cancel()


async def test_stats_watch_redraws_until_interrupted() -> None:
    with trio.fail_after(30):
        async with cs.Multiplexer() as mpx:
            address = await mpx.listen("tcp://127.0.0.1:0")
            await cs.serve_stats(mpx, cs.Server(mpx))
            process = await trio.lowlevel.open_process(
                [*STATS, address, "--watch", "--json", "--interval", "0.1"],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=ROOT,
            )
            try:
                assert process.stdout is not None
                received = b""
                while received.count(b"\n") < 3:
                    chunk = await process.stdout.receive_some()
                    assert chunk, "stats --watch ended on its own"
                    received += chunk
                lines = received.splitlines()[:3]
                assert all(json.loads(line)["node"]["id"] == mpx.node_id for line in lines)
            finally:
                process.kill()
                await process.wait()


def test_stats_refuses_an_interval_not_above_zero(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["stats", "tcp://127.0.0.1:1", "--watch", "--interval", "0"]) == 1
    assert "--interval must be a number of seconds above 0" in capsys.readouterr().err


async def test_post_says_at_once_that_nobody_offers_a_name() -> None:
    # The joined node sent its whole advertisement: no need to wait dial_timeout.
    with trio.fail_after(10):
        async with cs.Multiplexer() as mpx:
            address = await mpx.listen("tcp://127.0.0.1:0")
            await cs.Server(mpx).listen_and_serve("hello", hello)
            with pytest.raises(cs.ServiceNotFound, match="advertised all it offers"):
                await cli.run_post(address, "nobody", b"", 600.0, io.StringIO())
