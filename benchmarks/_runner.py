"""Runs each scenario against each peer, server and client in separate processes.

For every (scenario, peer) the runner starts ``python -m benchmarks.server_<peer> --port 0``,
reads the bound port from its first line of output, then runs
``python -m benchmarks.client_<peer>`` against it, which reports JSON events a line at a time.
Both stay on 127.0.0.1. A peer whose server cannot start (for instance because its library
does not import) is skipped for the rest of the invocation, with the reason.
"""

from __future__ import annotations

import json
import os
import queue
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Literal

import attrs

from ._scenarios import SCENARIOS, Settings, number


@attrs.frozen
class Peer:
    """How to start one peer's server and client, and which scenarios it runs."""

    name: str
    module: str
    arguments: tuple[str, ...] = ()
    scenarios: frozenset[str] | None = None

    def runs(self, scenario: str) -> bool:
        return self.scenarios is None or scenario in self.scenarios


#: Over WebSocket links only flood and heavy are measured, as the issue asks.
_OVER_WEBSOCKET = frozenset({"flood", "heavy"})
PEERS: dict[str, Peer] = {
    peer.name: peer
    for peer in (
        Peer("ours", "ours"),
        Peer("ceiling", "ceiling"),
        Peer("grpc", "grpc"),
        Peer("ours-ws", "ours", ("--scheme", "ws"), _OVER_WEBSOCKET),
        Peer("ceiling-ws", "ceiling_ws", (), _OVER_WEBSOCKET),
    )
}
#: The project root, so ``python -m benchmarks...`` finds the package from the subprocesses.
ROOT = Path(__file__).resolve().parent.parent
SERVER_START_TIMEOUT = 30.0

Progress = Callable[[str], None]
Status = Literal["ok", "skipped", "failed"]


class PeerUnavailable(Exception):
    """A peer's server did not start; the message says why."""


@attrs.define
class Outcome:
    """What one peer did in one scenario."""

    status: Status
    message: str = ""
    params: dict[str, Any] = attrs.Factory(dict)
    runs: list[dict[str, float | None]] = attrs.Factory(list)
    details: list[dict[str, Any]] = attrs.Factory(list)
    seconds: float = 0.0


def _tail(path: Path, lines: int = 12) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def _last_line(text: str) -> str:
    lines = text.strip().splitlines()
    return lines[-1] if lines else "(no output)"


def _command(module: str, *args: str) -> list[str]:
    return [sys.executable, "-m", f"benchmarks.{module}", *args]


def _environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH", "")])])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextmanager
def running_server(peer: Peer, workdir: Path) -> Iterator[int]:
    """Start ``peer``'s server; yield its port; stop it afterwards."""
    errors = workdir / f"server_{peer.name}.err"
    with errors.open("wb") as stderr:
        process = subprocess.Popen(
            _command(f"server_{peer.module}", "--port", "0", *peer.arguments),
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=_environment(),
        )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], SERVER_START_TIMEOUT)
        line = process.stdout.readline().decode().strip() if ready else ""
        if not line.isdigit():
            _stop(process)
            reason = _last_line(_tail(errors)) if line == "" else f"printed {line!r}"
            if not ready:
                reason = f"no port within {SERVER_START_TIMEOUT:.0f} s"
            raise PeerUnavailable(f"server_{peer.module} did not start: {reason}")
        yield int(line)
    finally:
        _stop(process)


def _lines(stream: IO[bytes], into: queue.Queue[bytes | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


def run_client(
    peer: Peer,
    port: int,
    scenario: str,
    settings: Settings,
    timeout: float,
    workdir: Path,
    progress: Progress,
) -> Outcome:
    """Run ``peer``'s client for one scenario; collect its runs."""
    arguments = [
        *peer.arguments,
        "--port",
        str(port),
        "--scenario",
        scenario,
        "--runs",
        str(settings.runs),
        "--budget",
        str(settings.budget),
    ]
    if settings.quick:
        arguments.append("--quick")
    errors = workdir / f"client_{peer.name}_{scenario}.err"
    outcome = Outcome(status="failed")
    metrics = SCENARIOS[scenario].metrics
    deadline = time.monotonic() + timeout
    with errors.open("wb") as stderr:
        process = subprocess.Popen(
            _command(f"client_{peer.module}", *arguments),
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            cwd=ROOT,
            env=_environment(),
        )
    assert process.stdout is not None
    events: queue.Queue[bytes | None] = queue.Queue()
    threading.Thread(target=_lines, args=(process.stdout, events), daemon=True).start()
    done = False
    try:
        while True:
            try:
                line = events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                outcome.message = f"timed out after {timeout:.0f} s"
                break
            if line is None:
                break
            event = json.loads(line)
            kind = event.get("event")
            if kind == "calibrated":
                outcome.params = event["params"]
                shown = ", ".join(f"{key}={value}" for key, value in outcome.params.items())
                progress(f"warmed up; {shown}")
            elif kind == "run":
                outcome.runs.append(event["metrics"])
                outcome.details.append(event.get("detail", {}))
                first = metrics[0]
                value = event["metrics"].get(first.key)
                shown = "n/a" if value is None else f"{number(value)} {first.unit}"
                progress(f"run {event['index'] + 1}/{settings.runs}: {first.label} {shown}")
            elif kind == "done":
                done = True
    finally:
        _stop(process)
    if done and process.returncode == 0:
        outcome.status = "ok"
    elif not outcome.message:
        outcome.message = f"client exited {process.returncode}: {_last_line(_tail(errors))}"
    if outcome.status != "ok":
        tail = _tail(errors)
        if tail:
            progress("client stderr:\n    " + tail.replace("\n", "\n    "))
    return outcome


def run_suite(
    scenarios: list[str], peers: list[str], settings: Settings, progress: Progress
) -> dict[str, dict[str, Outcome]]:
    """Every scenario against every peer that runs it; a peer that cannot start is skipped,
    with its reason, for the rest of the suite."""
    unavailable: dict[str, str] = {}
    results: dict[str, dict[str, Outcome]] = {}
    # Calibration plus the timed runs come to a little over the budget; allow plenty more.
    timeout = 60.0 + 6 * settings.budget
    total = sum(PEERS[peer].runs(scenario) for scenario in scenarios for peer in peers)
    step = 0
    with tempfile.TemporaryDirectory(prefix="chanserv-bench-") as scratch:
        workdir = Path(scratch)
        for scenario in scenarios:
            results[scenario] = {}
            for peer in peers:
                if not PEERS[peer].runs(scenario):
                    continue
                step += 1
                prefix = f"[{step}/{total}] {scenario} / {peer}"

                def say(message: str, prefix: str = prefix) -> None:
                    progress(f"{prefix}: {message}")

                if peer in unavailable:
                    results[scenario][peer] = Outcome("skipped", unavailable[peer])
                    say(f"skipped ({unavailable[peer]})")
                    continue
                began = time.monotonic()
                try:
                    with running_server(PEERS[peer], workdir) as port:
                        say(f"server up on 127.0.0.1:{port}")
                        outcome = run_client(
                            PEERS[peer], port, scenario, settings, timeout, workdir, say
                        )
                except PeerUnavailable as error:
                    unavailable[peer] = str(error)
                    outcome = Outcome("skipped", str(error))
                    say(f"SKIPPED: {error}")
                outcome.seconds = time.monotonic() - began
                if outcome.status == "failed":
                    say(f"FAILED: {outcome.message}")
                    server_tail = _tail(workdir / f"server_{peer}.err")
                    if server_tail:
                        say("server stderr:\n    " + server_tail.replace("\n", "\n    "))
                elif outcome.status == "ok":
                    say(f"done in {outcome.seconds:.1f} s")
                results[scenario][peer] = outcome
    return results
