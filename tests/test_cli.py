"""The command line as an operator meets it, and the library's logging.

The ``chanserv-trio`` command runs for real in subprocesses (``python -m chanserv_trio``
from the repository, so it is this checkout's code; loopback and port 0 only, each wait
bounded): exit statuses, one-line errors, signals and graceful shutdown, ``post``'s
bodies and output formats. Each log event of the library is checked with caplog, and a
program that configures no logging must print nothing.
"""

from __future__ import annotations

import base64
import json
import logging
import os
import signal
import ssl
import subprocess
import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
import trustme
from helpers import wait_until

import chanserv_trio as cs
from chanserv_trio.wire._codec import Status
from chanserv_trio.wire._connection import Connection

ROOT = Path(__file__).resolve().parent.parent
#: At most this many command processes at once (the machine is shared).
PROCESSES = trio.CapacityLimiter(4)


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT / "tests")  # for cli_sources; the checkout comes first
    return env


def command(*args: str) -> list[str]:
    return [sys.executable, "-m", "chanserv_trio", *args]


async def run_cli(*args: str, stdin: bytes = b"") -> subprocess.CompletedProcess[bytes]:
    async with PROCESSES:
        with trio.fail_after(20):
            return await trio.run_process(
                command(*args),
                stdin=stdin,
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                cwd=ROOT,
                env=_env(),
            )


def error_lines(result: subprocess.CompletedProcess[bytes]) -> list[str]:
    return result.stderr.decode().splitlines()


def assert_one_line_error(result: subprocess.CompletedProcess[bytes], *words: str) -> None:
    assert result.returncode == 1, result
    [line] = error_lines(result)
    assert line.startswith("chanserv-trio: error: "), line
    for word in words:
        assert word in line, line


async def _collect(stream: trio.abc.ReceiveStream | None, into: bytearray) -> None:
    assert stream is not None
    try:
        while chunk := await stream.receive_some():
            into += chunk
    except trio.ClosedResourceError:
        pass  # the test closed it


async def wait_for(condition: Callable[[], bool]) -> None:
    with trio.fail_after(15):
        await wait_until(condition)


@attrs.define
class Process:
    """A command running in the background, its output collected as it comes."""

    process: trio.Process
    out: bytearray
    err: bytearray

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)

    async def wait(self) -> int:
        with trio.fail_after(15):
            return await self.process.wait()

    async def said(self, text: str) -> None:
        """Wait until the process wrote ``text`` to stdout or stderr."""
        data = text.encode()
        await wait_for(lambda: data in self.out or data in self.err)


@asynccontextmanager
async def background(*args: str) -> AsyncIterator[Process]:
    process = await trio.lowlevel.open_process(
        command(*args),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        cwd=ROOT,
        env=_env(),
    )
    try:
        async with trio.open_nursery() as nursery:
            running = Process(process, bytearray(), bytearray())
            nursery.start_soon(_collect, process.stdout, running.out)
            nursery.start_soon(_collect, process.stderr, running.err)
            try:
                yield running
            finally:
                if process.returncode is None:
                    process.kill()
                with trio.CancelScope(shield=True):
                    await process.wait()
    finally:
        if process.returncode is None:  # pragma: no cover - only if the above failed
            process.kill()


@asynccontextmanager
async def serving(*args: str) -> AsyncIterator[tuple[Process, str]]:
    """``serve cli_sources:sources`` on a loopback port; yields it and its URL, read
    from its first line."""
    async with background(
        "serve", "cli_sources:sources", "--listen", "tcp://127.0.0.1:0", *args
    ) as server:
        await wait_for(lambda: b"\n" in server.out or server.process.returncode is not None)
        first = server.out.split(b"\n")[0].decode()
        assert first.startswith("serving 'chanserv' on tcp://"), (first, server.err)
        yield server, first.rsplit(" on ", 1)[1]


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


# ------------------------------------------------------- exit statuses, errors


SERVE = ("serve", "--listen", "tcp://127.0.0.1:0")


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (("post", "tcp://127.0.0.1:1"), ["URL NAME"]),
        (("demo", "--transport", "carrier-pigeon"), ["carrier-pigeon"]),
        (("demo", "--transport", "tls", "--listen", "tcp://127.0.0.1:0"), ["--transport tls"]),
        (("serve", "cli_sources:sources", "--listen", "tls://127.0.0.1:0"), ["--certfile"]),
        (SERVE, ["serve needs"]),
        ((*SERVE, "cli_sources:sources", "--grace", "-1"), ["--grace"]),
        ((*SERVE, "cli_sources"), ["MODULE:FUNCTION"]),
    ],
    ids=[
        "post-one-word",
        "transport",
        "transport-vs-listen",
        "tls-no-cert",
        "idle",
        "grace",
        "spec",
    ],
)
def test_usage_errors_exit_2(
    argv: tuple[str, ...], words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from chanserv_trio import _cli

    assert _cli.main(argv) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("usage: chanserv-trio"), lines
    assert lines[-1].startswith("chanserv-trio") and ": error: " in lines[-1], lines
    assert all(word in lines[-1] for word in words), lines
    assert "ssl_context" not in lines[-1]  # no library terms


@pytest.mark.parametrize(
    ("target", "words"),
    [
        ("cli_sources:NOT_CALLABLE", ["int, not a function"]),
        ("cli_sources:two_arguments", ["one argument", "(request: 'bytes', extra"]),
        ("cli_sources:coroutine", ["yield"]),
        ("no_such_module_here:fn", ["cannot import", "no_such_module_here"]),
        ("cli_sources:missing", ["no attribute", "missing"]),
    ],
)
def test_serve_says_what_is_wrong_with_its_target(
    target: str, words: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    from chanserv_trio import _cli

    assert _cli.main([*SERVE, target]) == 1
    [line] = capsys.readouterr().err.splitlines()
    assert line.startswith("chanserv-trio: error: ") and all(word in line for word in words)


async def test_failures_print_one_line_and_exit_1(tmp_path: Path) -> None:
    dead = f"tcp://127.0.0.1:{free_port()}"
    results: dict[str, subprocess.CompletedProcess[bytes]] = {}
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        busy = f"tcp://127.0.0.1:{taken.getsockname()[1]}"
        cases = {
            "version": ("--version",),
            "missing certificate": (
                "serve",
                "cli_sources:sources",
                "--listen",
                "tls://127.0.0.1:0",
                "--certfile",
                str(tmp_path / "missing.pem"),
            ),
            "port in use": ("serve", "cli_sources:sources", "--listen", busy),
            "nobody there": ("post", dead, "chanserv"),
            "no body file": ("post", dead, "chanserv", f"@{tmp_path / 'body'}"),
            "traceback asked": ("post", "--traceback", dead, "chanserv"),
        }

        async def one(name: str, args: tuple[str, ...]) -> None:
            results[name] = await run_cli(*args)

        async with trio.open_nursery() as nursery:
            for name, args in cases.items():
                nursery.start_soon(one, name, args)

    assert results["version"].returncode == 0
    assert results["version"].stdout.decode() == f"chanserv-trio {cs.__version__}\n"
    assert_one_line_error(results["missing certificate"], "missing.pem", "No such file")
    assert_one_line_error(results["port in use"], f"cannot listen on {busy}", "in use")
    assert_one_line_error(results["nobody there"], "cannot join", dead)
    assert_one_line_error(results["no body file"], "body", "No such file")
    traced = results["traceback asked"]
    assert traced.returncode == 1 and "Traceback" in traced.stderr.decode()
    assert error_lines(traced)[-1].startswith("chanserv-trio: error: cannot join")


async def test_demo_into_a_pipe_closed_early_exits_quietly() -> None:
    # chanserv-trio demo | head -1
    async with background("demo") as demo:
        await wait_for(lambda: b"\n" in demo.out)
        assert demo.process.stdout is not None
        await demo.process.stdout.aclose()
        assert await demo.wait() == 1
    assert demo.err == b""


# ------------------------------------------------------------- serve and post


async def test_post_bodies_outputs_errors_and_signals(tmp_path: Path) -> None:
    (tmp_path / "body").write_bytes(b"from a file")
    async with serving() as (server, url):
        results: dict[str, subprocess.CompletedProcess[bytes]] = {}

        async def post(name: str, *args: str, stdin: bytes = b"") -> None:
            results[name] = await run_cli("post", url, "chanserv", *args, stdin=stdin)

        async def interrupted(signum: int) -> None:
            async with background("post", url, "chanserv", "slow forever") as client:
                await client.said("frame 1: started")
                client.signal(signum)
                results[signal.Signals(signum).name] = subprocess.CompletedProcess(
                    [], await client.wait(), bytes(client.out), bytes(client.err)
                )

        async with trio.open_nursery() as nursery:
            nursery.start_soon(post, "raises", "boom")
            nursery.start_soon(post, "json", "binary", "--output", "json")
            nursery.start_soon(post, "text", "binary")
            nursery.start_soon(post, "raw", "binary", "--output", "raw")
            nursery.start_soon(partial(post, "stdin", "-", stdin=b"from stdin"))
            nursery.start_soon(post, "file", f"@{tmp_path / 'body'}")
            nursery.start_soon(post, "json logs", "hello", "-v", "--log-format", "json")
            nursery.start_soon(interrupted, signal.SIGINT)
            nursery.start_soon(interrupted, signal.SIGTERM)

        server.signal(signal.SIGTERM)
        assert await server.wait() == 0

    # A raising source function: one line for the client, the traceback in the log.
    assert_one_line_error(results["raises"], "the service failed: ValueError: boom")
    log = server.err.decode()
    assert "ERROR chanserv_trio.server: source function of 'chanserv' raised" in log
    assert "Traceback" in log and "ValueError: boom" in log
    assert "INFO chanserv_trio.link: link up: tcp://127.0.0.1:" in log
    assert "INFO chanserv_trio.cli: SIGTERM: shutting down gracefully" in log

    objects = [json.loads(line) for line in results["json"].stdout.decode().splitlines()]
    assert objects[0] == {
        "type": "source",
        "source": 0,
        "header": "bin\x00ary",
        "encoding": "utf-8",
        "remote": url,
    }
    assert objects[1:] == [
        {"type": "frame", "source": 0, "frame": 1, "data": "//4=", "encoding": "base64"},
        {"type": "frame", "source": 0, "frame": 2, "data": "\x1b[31mred", "encoding": "utf-8"},
        {"type": "end", "source": 0, "frames": 2},
    ]
    assert base64.b64decode(objects[1]["data"]) == b"\xff\xfe"

    text = results["text"].stdout.decode()
    assert "[bin\\x00ary] frame 1: \\xff\\xfe\n" in text
    assert "[bin\\x00ary] frame 2: \\x1b[31mred\n" in text
    assert "\x1b" not in text and "\x00" not in text
    assert results["raw"].stdout == b"\xff\xfe\x1b[31mred"
    assert "[echo] frame 1: from stdin" in results["stdin"].stdout.decode()
    assert "[echo] frame 1: from a file" in results["file"].stdout.decode()
    records = [json.loads(line) for line in error_lines(results["json logs"])]
    assert {"time", "level", "logger", "message"} <= records[0].keys()
    assert any(r["message"].startswith("link up: ") for r in records), records

    for name, status in (("SIGINT", 130), ("SIGTERM", 143)):
        assert results[name].returncode == status, results[name]
        assert b"Traceback" not in results[name].stderr


async def test_sigterm_lets_requests_in_flight_finish_then_cuts_off_the_rest(
    tmp_path: Path,
) -> None:
    socket_path = tmp_path / "serve.sock"
    async with serving("--listen", f"unix://{socket_path}", "--grace", "1.5") as (server, url):
        assert socket_path.exists()
        async with (
            background("post", url, "chanserv", "slow 0.5") as finishing,
            background("post", url, "chanserv", "slow forever") as endless,
        ):
            await finishing.said("frame 1: started")
            await endless.said("frame 1: started")
            server.signal(signal.SIGTERM)
            assert await finishing.wait() == 0
            assert "[slow] frame 2: finished" in finishing.out.decode()
            assert await endless.wait() == 1
            assert await server.wait() == 0
    [line] = endless.err.decode().splitlines()
    assert line.startswith("chanserv-trio: error: ") and "shutting down" in line, line
    assert not socket_path.exists()
    log = server.err.decode()
    assert "still open after 1.5 s of grace" in log


async def test_a_second_signal_stops_serve_at_once() -> None:
    async with (
        serving("--grace", "60") as (server, url),
        background("post", url, "chanserv", "slow forever") as client,
    ):
        await client.said("frame 1: started")
        server.signal(signal.SIGINT)
        await server.said("SIGINT: shutting down gracefully")
        server.signal(signal.SIGINT)
        with trio.fail_after(5):  # not the 60 s of grace
            assert await server.wait() == 130
        assert await client.wait() == 1
    assert "SIGINT again: stopping at once" in server.err.decode()
    assert "shutting down" in client.err.decode()


async def test_quiet_serve_logs_warnings_only() -> None:
    async with serving("-q") as (server, url):
        assert (await run_cli("post", url, "chanserv", "hello")).returncode == 0
        server.signal(signal.SIGTERM)
        assert await server.wait() == 0
    assert b"INFO" not in server.err


# --------------------------------------------------------------- the log events


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.DEBUG, logger="chanserv_trio")
    return caplog


def records(
    caplog: pytest.LogCaptureFixture, logger: str, level: int, start: str
) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.name == logger and r.levelno == level and r.getMessage().startswith(start)
    ]


async def _forever(request: bytes) -> AsyncIterator[cs.Source]:
    async def frames() -> AsyncIterator[bytes]:
        yield b"first"
        await trio.sleep_forever()

    yield cs.Source(header=b"forever", frames=frames())


async def _raises(request: bytes) -> AsyncIterator[cs.Source]:
    async def frames() -> AsyncIterator[bytes]:
        yield b"one"
        raise KeyError("the frames broke")

    if request == b"source":
        raise ValueError("the source function broke")
    yield cs.Source(header=b"h", frames=frames())


async def test_links_up_and_down_and_shutdowns_are_logged(logs: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(10):
        async with cs.Multiplexer() as server:
            address = await server.listen("tcp://127.0.0.1:0")
            await cs.Server(server).listen_and_serve("forever", _forever)
            async with cs.Multiplexer() as client:
                link = await client.join(address, redial=False)
                async with cs.Client(client).lookup_and_post("forever") as sources:
                    source = await sources.receive()
                    assert await source.receive() == b"first"
                    await server.shutdown(0.05)
                    with pytest.raises(cs.ServerShuttingDown):
                        await source.receive()
    [listening] = records(logs, "chanserv_trio.node", logging.INFO, "listening on ")
    assert address in listening.getMessage()
    ups = records(logs, "chanserv_trio.link", logging.INFO, "link up: ")
    assert {u.getMessage().split()[2] for u in ups} == {link.remote_addr, link.local_addr}
    downs = records(logs, "chanserv_trio.link", logging.INFO, "link down: ")
    assert len(downs) == 2
    assert any("server is shutting down" in d.getMessage() for d in downs)
    assert records(logs, "chanserv_trio.node", logging.INFO, "shutting down: 1 links")
    [cut] = records(logs, "chanserv_trio.link", logging.WARNING, "1 streams on the link")
    assert "still open after 0.05 s of grace" in cut.getMessage()


async def test_failed_handshakes_are_warnings_beside_on_error(
    logs: pytest.LogCaptureFixture,
) -> None:
    errors: list[BaseException] = []
    authority = trustme.CA()
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    authority.issue_cert("127.0.0.1").configure_cert(server_context)
    with trio.fail_after(10):
        async with cs.Multiplexer(on_error=errors.append) as server:
            plain = await server.listen("tcp://127.0.0.1:0")
            tls = await server.listen("tls://127.0.0.1:0", ssl_context=server_context)
            # An HTTP probe on the plain port.
            host, port = plain.removeprefix("tcp://").rsplit(":", 1)
            async with await trio.open_tcp_stream(host, int(port)) as http:
                await http.send_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
                while await http.receive_some():
                    pass
            # A TLS client that does not trust the server's certificate.
            async with cs.Multiplexer() as stranger:
                with pytest.raises(cs.ConnectionLost):
                    await stranger.join(tls, redial=False)
            await wait_until(lambda: len(errors) >= 2)
    # One line each; on_error hears of the probe twice, as before (from the link that
    # failed, and from the listener whose link never came up).
    probe, untrusted = records(logs, "chanserv_trio.node", logging.WARNING, "handshake failed: ")
    assert "HTTP request" in probe.getMessage()
    assert "TLS" in untrusted.getMessage()
    assert {r.getMessage() for r in (probe, untrusted)} == {
        f"handshake failed: {e}" for e in errors
    }


async def test_source_function_and_frame_errors_are_logged_with_tracebacks(
    logs: pytest.LogCaptureFixture,
) -> None:
    errors: list[BaseException] = []
    with trio.fail_after(10):
        async with cs.Multiplexer() as server, cs.Multiplexer() as client:
            address = await server.listen("tcp://127.0.0.1:0")
            await cs.Server(server, on_error=errors.append).listen_and_serve("svc", _raises)
            await client.join(address)
            for body in (b"source", b"frames"):
                with pytest.raises(cs.RemoteError):
                    async with cs.Client(client).lookup_and_post("svc", body) as sources:
                        async for source in sources:
                            async for _ in source:
                                pass
    [source_fn] = records(logs, "chanserv_trio.server", logging.ERROR, "source function of 'svc'")
    [frames] = records(logs, "chanserv_trio.server", logging.ERROR, "frames of source b'h'")
    assert source_fn.exc_info is not None and source_fn.exc_info[0] is ValueError
    assert frames.exc_info is not None and frames.exc_info[0] is KeyError
    assert "the source function broke" in logs.text  # the traceback's last line
    assert [type(e) for e in errors] == [ValueError, KeyError]  # on_error as before


async def test_redials_are_logged(logs: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(10):
        async with cs.Multiplexer(redial_backoff=(0.05, 1.0, 0.05)) as client:
            async with cs.Multiplexer() as server:
                address = await server.listen("tcp://127.0.0.1:0")
                await client.join(address)
            # The server is gone: the client redials and fails, again and again.
            await wait_until(
                lambda: bool(records(logs, "chanserv_trio.node", logging.WARNING, "redial of "))
            )
    [redialing] = records(logs, "chanserv_trio.node", logging.INFO, f"redialing {address}")
    assert "connection closed by peer" in redialing.getMessage()
    failed = records(logs, "chanserv_trio.node", logging.WARNING, f"redial of {address} failed")
    assert "cannot connect" in failed[0].getMessage()


async def test_limit_breaches_are_logged(logs: pytest.LogCaptureFixture) -> None:
    with trio.fail_after(10):
        async with cs.Multiplexer(max_links=1, reset_burst=2, reset_rate=0.001) as server:
            server.handle("svc", _hold)
            address = await server.listen("tcp://127.0.0.1:0")
            async with cs.Multiplexer() as first, cs.Multiplexer() as second:
                await first.join(address, redial=False)
                with pytest.raises(cs.ProtocolError):
                    await second.join(address, redial=False)
            await wait_until(lambda: not server.links)
            # A peer that opens and resets streams faster than the budget allows.
            host, port = address.removeprefix("tcp://").rsplit(":", 1)
            async with await trio.open_tcp_stream(host, int(port)) as stream:
                conn = Connection(initiator=True)
                await stream.send_all(b"".join(conn.take_outgoing()))
                conn.receive_data(await stream.receive_some())
                for _ in range(5):
                    sid = conn.open_stream("svc", b"", local_open=False)
                    conn.reset_stream(sid, Status(cs.ErrorCode.CANCEL))
                await stream.send_all(b"".join(conn.take_outgoing()))
                while await stream.receive_some():
                    pass
    [refused] = records(logs, "chanserv_trio.node", logging.WARNING, "refused a link from ")
    assert "max_links" in refused.getMessage()
    [calm] = [
        r
        for r in records(logs, "chanserv_trio.link", logging.WARNING, "link down: ")
        if "ENHANCE_YOUR_CALM" in r.getMessage()
    ]
    assert "reset more than 2 of its streams" in calm.getMessage()


async def _hold(stream: cs.LinkStream) -> None:
    await trio.sleep_forever()


def test_the_library_prints_nothing_when_the_application_configures_no_logging() -> None:
    # Warnings and errors are logged on each path below; with no handler configured,
    # Python's last-resort handler would print them, unless the library's NullHandler
    # is there.
    program = """
import trio, chanserv_trio as cs

async def broken(request):
    raise ValueError("broken")
    yield

async def main():
    async with cs.Multiplexer() as server:
        address = await server.listen("tcp://127.0.0.1:0")
        await cs.Server(server).listen_and_serve("svc", broken)
        host, port = address.removeprefix("tcp://").rsplit(":", 1)
        async with await trio.open_tcp_stream(host, int(port)) as probe:
            await probe.send_all(b"GET / HTTP/1.1\\r\\n\\r\\n")
            while await probe.receive_some():
                pass
        async with cs.Multiplexer() as client:
            await client.join(address)
            try:
                async with cs.Client(client).lookup_and_post("svc") as sources:
                    async for source in sources:
                        pass
            except cs.RemoteError:
                print("ok")

trio.run(main)
"""
    result = subprocess.run(
        [sys.executable, "-c", program], cwd=ROOT, capture_output=True, timeout=20, check=False
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, b"ok\n", b"")
