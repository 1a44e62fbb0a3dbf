"""Runs each scenario against each peer, server and client in separate processes.

For every (scenario, peer) the runner starts ``python -m benchmarks.server_<peer> --port 0``,
reads the bound port from its first line of output, then runs
``python -m benchmarks.client_<peer>`` against it, which reports JSON events a line at a time.
Both stay on 127.0.0.1. A peer whose server cannot start (for instance because its library
does not import) is skipped for the rest of the invocation, with the reason. The ``base``
peers run another source tree's chanserv_trio under this tree's benchmark code (``_trees``).
"""

from __future__ import annotations

import contextlib
import json
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

from . import _trees as trees
from ._scenarios import SCENARIOS, Settings, number
from ._zmq_service import NO_SLOW


@attrs.frozen
class Peer:
    """How to start one peer's server and client, and which scenarios it runs."""

    name: str
    module: str
    arguments: tuple[str, ...] = ()
    scenarios: frozenset[str] | None = None
    #: Scenarios the peer is listed in but does not run, each with the reason the table shows.
    skips: tuple[tuple[str, str], ...] = ()
    #: The source tree its processes import chanserv_trio from; None for this tree.
    tree: Path | None = None

    def runs(self, scenario: str) -> bool:
        return self.scenarios is None or scenario in self.scenarios

    def skip_reason(self, scenario: str) -> str | None:
        return dict(self.skips).get(scenario)

    @property
    def imports_package(self) -> bool:
        """Whether its processes import chanserv_trio (and report which one)."""
        return self.module == "ours"


#: Over WebSocket links only flood and heavy are measured, as the issue asks.
_OVER_WEBSOCKET = frozenset({"flood", "heavy"})
#: Every peer's name, in the order of the table's columns when all run.
PEER_NAMES = (
    "ours",
    "base",
    "ceiling",
    "grpc",
    "zmq",
    "ours-ws",
    "base-ws",
    "ceiling-ws",
    "js-node",
)
#: The peers that run the ``--baseline`` tree, by the peer of this tree they stand beside.
BASELINE_OF = {"ours": "base", "ours-ws": "base-ws"}


def peer_table(baseline: Path | None = None) -> dict[str, Peer]:
    """Every peer there is; the ``base`` peers only with a baseline tree to run."""
    peers = [
        Peer("ours", "ours"),
        Peer("ceiling", "ceiling"),
        Peer("grpc", "grpc"),
        Peer("zmq", "zmq", skips=(("slow", NO_SLOW),)),
        Peer("ours-ws", "ours", ("--scheme", "ws"), _OVER_WEBSOCKET),
        Peer("ceiling-ws", "ceiling_ws", (), _OVER_WEBSOCKET),
        Peer("js-node", "js_node", (), _OVER_WEBSOCKET),
    ]
    if baseline is not None:
        # The same as ours and ours-ws, run on the other tree's package.
        peers += [
            attrs.evolve(peer, name=BASELINE_OF[peer.name], tree=baseline)
            for peer in peers
            if peer.name in BASELINE_OF
        ]
    by_name = {peer.name: peer for peer in peers}
    return {name: by_name[name] for name in PEER_NAMES if name in by_name}


def choose_peers(requested: list[str] | None, baseline: bool) -> list[str]:
    """The peers to run, in column order: ``requested`` (None: all), and with a baseline,
    ``base`` right after ``ours`` and ``base-ws`` after ``ours-ws`` unless named already.
    ValueError if a base peer is asked for without a baseline."""
    if requested is None:
        requested = [name for name in PEER_NAMES if name not in BASELINE_OF.values()]
    if not baseline:
        stray = [name for name in requested if name in BASELINE_OF.values()]
        if stray:
            raise ValueError(f"{', '.join(stray)} run(s) the --baseline tree: give --baseline")
        return list(requested)
    chosen: list[str] = []
    for name in requested:
        if name not in chosen:
            chosen.append(name)
        base = BASELINE_OF.get(name)
        if base is not None and base not in requested:
            chosen.append(base)
    return chosen


#: The peers of this tree (the ``base`` peers need ``--baseline``).
PEERS = peer_table()
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
    #: What the server and the client said of themselves (libraries, where they came from).
    about: dict[str, dict[str, str]] = attrs.Factory(dict)


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


def described(about: dict[str, str]) -> str:
    """What a process said of itself, for a progress line."""
    return ", ".join(f"{key} {value}" for key, value in about.items())


def package_mismatch(peer: Peer, side: str, about: dict[str, str]) -> str | None:
    """Why ``about`` shows the wrong chanserv_trio for ``peer``, or None if it is right."""
    if not peer.imports_package:
        return None
    expected = str(trees.expected_package(peer.tree))
    imported = about.get(trees.PACKAGE)
    if imported == expected:
        return None
    return f"{side} imported {trees.PACKAGE} from {imported or '(not said)'}, not {expected}"


def _stop(process: subprocess.Popen[Any]) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@attrs.frozen
class Server:
    port: int
    #: What the server said of itself after its port (see ``_server_cli.announce``).
    about: dict[str, str]


@contextmanager
def running_server(peer: Peer, workdir: Path) -> Iterator[Server]:
    """Start ``peer``'s server; yield its port and what it said of itself; stop it
    afterwards. PeerUnavailable if it does not start, or imported the wrong chanserv_trio."""
    errors = workdir / f"server_{peer.name}.err"
    cwd, env = trees.launch(peer.tree, workdir)
    with errors.open("wb") as stderr:
        process = subprocess.Popen(
            _command(f"server_{peer.module}", "--port", "0", *peer.arguments),
            stdout=subprocess.PIPE,
            stderr=stderr,
            stdin=subprocess.DEVNULL,
            cwd=cwd,
            env=env,
        )
    try:
        assert process.stdout is not None
        ready, _, _ = select.select([process.stdout], [], [], SERVER_START_TIMEOUT)
        line = process.stdout.readline().decode().strip() if ready else ""
        port, _, rest = line.partition(" ")
        if not port.isdigit():
            _stop(process)
            reason = _last_line(_tail(errors)) if line == "" else f"printed {line!r}"
            if not ready:
                reason = f"no port within {SERVER_START_TIMEOUT:.0f} s"
            raise PeerUnavailable(f"server_{peer.module} did not start: {reason}")
        about = json.loads(rest) if rest else {}
        mismatch = package_mismatch(peer, "server", about)
        if mismatch is not None:
            raise PeerUnavailable(mismatch)
        yield Server(int(port), about)
    finally:
        _stop(process)


def _lines(stream: IO[bytes], into: queue.Queue[bytes | None]) -> None:
    for line in stream:
        into.put(line)
    into.put(None)


class _WrongPackage(Exception):
    """The client imported another chanserv_trio than its peer's."""


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
        self._peer = peer
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
        if settings.frames is not None:
            arguments += ["--frames", str(settings.frames)]
        cwd, env = trees.launch(peer.tree, workdir)
        with self._errors.open("wb") as stderr:
            self._process = subprocess.Popen(
                _command(f"client_{peer.module}", *arguments),
                stdout=subprocess.PIPE,
                stderr=stderr,
                stdin=subprocess.PIPE,
                cwd=cwd,
                env=env,
            )
        assert self._process.stdout is not None
        self._events: queue.Queue[bytes | None] = queue.Queue()
        threading.Thread(
            target=_lines, args=(self._process.stdout, self._events), daemon=True
        ).start()

    def _handle(self, event: dict[str, Any]) -> None:
        kind = event.get("event")
        if kind == "about":
            about = self.outcome.about["client"] = event["about"]
            self._say(f"client: {described(about)}")
            mismatch = package_mismatch(self._peer, "client", about)
            if mismatch is not None:
                raise _WrongPackage(mismatch)
        elif kind == "calibrated":
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
                try:
                    self._handle(event)
                except _WrongPackage as error:
                    self.outcome.message = str(error)
                    return False
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
    table: dict[str, Peer],
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
            reason = table[peer].skip_reason(scenario)
            if reason is not None:
                results[peer] = Outcome("skipped", reason)
                say(f"skipped ({reason})")
                continue
            if peer in unavailable:
                results[peer] = Outcome("skipped", unavailable[peer])
                say(f"skipped ({unavailable[peer]})")
                continue
            try:
                server = stack.enter_context(running_server(table[peer], workdir))
            except PeerUnavailable as error:
                unavailable[peer] = str(error)
                results[peer] = Outcome("skipped", str(error))
                say(f"SKIPPED: {error}")
                continue
            shown = f"; {described(server.about)}" if server.about else ""
            say(f"server up on 127.0.0.1:{server.port}{shown}")
            client = ClientProcess(table[peer], server.port, scenario, settings, workdir, say)
            client.outcome.about["server"] = server.about
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
    scenarios: list[str],
    peers: list[str],
    settings: Settings,
    progress: Progress,
    table: dict[str, Peer] = PEERS,
) -> dict[str, dict[str, Outcome]]:
    """Every scenario against every peer of ``table`` named in ``peers`` that runs it; a peer
    that cannot start is skipped, with its reason, for the rest of the suite."""
    unavailable: dict[str, str] = {}
    results: dict[str, dict[str, Outcome]] = {}
    with tempfile.TemporaryDirectory(prefix="chanserv-bench-") as scratch:
        for index, scenario in enumerate(scenarios, 1):
            running = [peer for peer in peers if table[peer].runs(scenario)]
            prefix = f"[{index}/{len(scenarios)}] {scenario}"
            says = {peer: _labelled(progress, f"{prefix} / {peer}") for peer in running}
            results[scenario] = run_scenario(
                scenario, running, settings, Path(scratch), unavailable, says, table
            )
    return results
