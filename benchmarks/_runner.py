"""Runs each scenario against each peer, server and client in separate processes.

For every (scenario, peer) the runner starts ``python -m benchmarks.server_<peer> --port 0``,
reads the bound port from its first line of output, then runs
``python -m benchmarks.client_<peer>`` against it, which reports JSON events a line at a time.
Both stay on 127.0.0.1. A peer whose server cannot start (for instance because its library
does not import) is skipped for the rest of the invocation, with the reason.
"""

from __future__ import annotations

import contextlib
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
        Peer("js-node", "js_node", (), _OVER_WEBSOCKET),
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


class ClientProcess:
    """One peer's client for one scenario. It warms up on its own, then takes each timed run
    when told to (a line on its stdin), so the runner can take the peers' runs in turns."""

    def __init__(
        self,
        peer: Peer,
        port: int,
        scenario: str,
        settings: Settings,
        workdir: Path,
        say: Progress,
    ) -> None:
        self.outcome = Outcome(status="failed")
        self._settings = settings
        self._metric = SCENARIOS[scenario].metrics[0]
        self._say = say
        self._done = False
        self._errors = workdir / f"client_{peer.name}_{scenario}.err"
        arguments = [
            *peer.arguments,
            *("--port", str(port), "--scenario", scenario, "--paced"),
            *("--runs", str(settings.runs), "--budget", str(settings.budget)),
        ]
        if settings.quick:
            arguments.append("--quick")
        with self._errors.open("wb") as stderr:
            self._process = subprocess.Popen(
                _command(f"client_{peer.module}", *arguments),
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.PIPE,
                cwd=ROOT,
                env=_environment(),
            )
        assert self._process.stdout is not None
        self._events: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(
            target=_lines, args=(self._process.stdout, self._events), daemon=True
        ).start()

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "calibrated":
            self.outcome.params = event["params"]
            shown = ", ".join(f"{key}={value}" for key, value in self.outcome.params.items())
            self._say(f"warmed up; {shown}")
        elif kind == "run":
            self.outcome.runs.append(event["metrics"])
            self.outcome.details.append(event.get("detail", {}))
            value = event["metrics"].get(self._metric.key)
            shown = "n/a" if value is None else f"{number(value)} {self._metric.unit}"
            runs = self._settings.runs
            self._say(f"run {event['index'] + 1}/{runs}: {self._metric.label} {shown}")
        elif kind == "done":
            self._done = True

    def _until(self, kind: str, timeout: float) -> bool:
        """Handle events until one of ``kind``; False if the client ended or timed out first."""
        began = time.monotonic()
        deadline = began + timeout
        try:
            while True:
                try:
                    line = self._events.get(timeout=max(0.0, deadline - time.monotonic()))
                except queue.Empty:
                    self.outcome.message = f"no progress within {timeout:.0f} s"
                    return False
                if line is None:
                    return False
                event = json.loads(line)
                self._handle(event)
                if event.get("event") == kind:
                    return True
        finally:
            self.outcome.seconds += time.monotonic() - began

    def warm_up(self, timeout: float) -> bool:
        """Wait for the client to connect, warm up and calibrate."""
        return self._until("calibrated", timeout)

    def run_once(self, timeout: float) -> bool:
        """Let the client take one timed run and wait for its figures."""
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(b"go\n")
            self._process.stdin.flush()
        except BrokenPipeError:
            return False
        return self._until("run", timeout)

    def finish(self, timeout: float) -> Outcome:
        """Let the client end, or stop it; the outcome says which."""
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError):
            self._process.stdin.close()
        if self.outcome.message == "" and self._until("done", timeout):
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._process.wait(timeout=timeout)
        self.stop()
        if self._done and self._process.returncode == 0:
            self.outcome.status = "ok"
            return self.outcome
        if not self.outcome.message:
            code = self._process.returncode
            self.outcome.message = f"client exited {code}: {_last_line(_tail(self._errors))}"
        tail = _tail(self._errors)
        if tail:
            self._say("client stderr:\n    " + tail.replace("\n", "\n    "))
        return self.outcome

    def stop(self) -> None:
        _stop(self._process)


def run_scenario(
    scenario: str,
    peers: list[str],
    settings: Settings,
    workdir: Path,
    unavailable: dict[str, str],
    says: dict[str, Progress],
) -> dict[str, Outcome]:
    """One scenario against ``peers``: each peer's server and client start and warm up in
    turn, then the timed runs go round the peers, one run each at a time, so that whatever
    else loads the machine meanwhile falls on every peer alike."""
    results: dict[str, Outcome] = {}
    warm_up_timeout = 60.0 + 2 * settings.budget
    run_timeout = 30.0 + 4 * settings.per_run
    with contextlib.ExitStack() as stack:
        clients: dict[str, ClientProcess] = {}
        for peer in peers:
            say = says[peer]
            if peer in unavailable:
                results[peer] = Outcome("skipped", unavailable[peer])
                say(f"skipped ({unavailable[peer]})")
                continue
            try:
                port = stack.enter_context(running_server(PEERS[peer], workdir))
            except PeerUnavailable as error:
                unavailable[peer] = str(error)
                results[peer] = Outcome("skipped", str(error))
                say(f"SKIPPED: {error}")
                continue
            say(f"server up on 127.0.0.1:{port}")
            client = ClientProcess(PEERS[peer], port, scenario, settings, workdir, say)
            stack.callback(client.stop)
            if client.warm_up(warm_up_timeout):
                clients[peer] = client
            else:
                results[peer] = client.finish(5.0)
        for _ in range(settings.runs):
            for peer, client in list(clients.items()):
                if not client.run_once(run_timeout):
                    results[peer] = client.finish(5.0)
                    del clients[peer]
        for peer, client in clients.items():
            results[peer] = client.finish(30.0)
        for peer, outcome in results.items():
            if outcome.status == "failed":
                says[peer](f"FAILED: {outcome.message}")
                server_tail = _tail(workdir / f"server_{peer}.err")
                if server_tail:
                    says[peer]("server stderr:\n    " + server_tail.replace("\n", "\n    "))
            elif outcome.status == "ok":
                says[peer](f"done; {outcome.seconds:.1f} s of client time")
    return {peer: results[peer] for peer in peers if peer in results}


def _labelled(progress: Progress, label: str) -> Progress:
    def say(message: str) -> None:
        progress(f"{label}: {message}")

    return say


def run_suite(
    scenarios: list[str], peers: list[str], settings: Settings, progress: Progress
) -> dict[str, dict[str, Outcome]]:
    """Every scenario against every peer that runs it; a peer that cannot start is skipped,
    with its reason, for the rest of the suite."""
    unavailable: dict[str, str] = {}
    results: dict[str, dict[str, Outcome]] = {}
    with tempfile.TemporaryDirectory(prefix="chanserv-bench-") as scratch:
        for index, scenario in enumerate(scenarios, 1):
            running = [peer for peer in peers if PEERS[peer].runs(scenario)]
            prefix = f"[{index}/{len(scenarios)}] {scenario}"
            says = {peer: _labelled(progress, f"{prefix} / {peer}") for peer in running}
            results[scenario] = run_scenario(
                scenario, running, settings, Path(scratch), unavailable, says
            )
    return results
