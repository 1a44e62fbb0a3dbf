"""What resumption costs and how fast it heals: flood and heavy with resumption on beside
off, and the time from a cut to resumed delivery.

Run as ``python -m benchmarks.resume [--quick] [--runs N] [--budget S] [--scenarios a,b]
[--buffer-size B ...] [--cuts N] [--seed N] [--json PATH]`` (benchmarks/README.md).

- **On beside off**: the main suite's flood and heavy scenarios (``server_ours`` and
  ``client_ours``, the same processes and workload as the main table), once as they are
  and once with ``--resume-timeout`` on both ends, so that both multiplexers agree on
  resumption; the runs of the two are taken in turns. The client checks that its link is
  resumable exactly when asked to be. ``--buffer-size B`` adds a side with resumption on
  and ``resume_buffer_size=B``, in the same turns.
- **Cut to resumed delivery**: a server in its own process (``--serve``) offers
  ``ticks``, one source whose frames carry their sequence number and go out at a steady
  rate; this process joins it through a relay of its own on TCP loopback and, while the
  frames flow, cuts the relayed connection (closes both sides) ``--cuts`` times, each at a
  random frame once the previous cut has healed. For each cut it measures the time until
  the relay accepted the client's new connection (redial) and until the first frame
  delivered to the application after the link resumed (resumed delivery). Every frame is
  checked on arrival: each sequence number once, in order, its bytes intact, and as many
  as the server says it sent; anything else fails the run.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import random
import socket
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import attrs
import trio

import chanserv_trio as cs

from . import _trees as trees
from ._report import RESULTS, document, load_average, spread, write_json
from ._report import ratio as median_ratio
from ._runner import Outcome, Peer, run_suite
from ._scenarios import SCENARIOS, Settings, number, percentile

#: The scenarios measured with resumption on beside off.
THROUGHPUT_SCENARIOS = ("flood", "heavy")
#: ``resume_timeout`` of both ends when on (long enough never to expire in a run).
RESUME_TIMEOUT = 30.0


def peer_table(buffer_sizes: list[int] | None = None) -> dict[str, Peer]:
    """The main suite's ``ours`` with resumption on (``on``) and off (``off``), and on
    with each of ``buffer_sizes`` as ``resume_buffer_size`` (``on-<size>``), in the
    order their runs take turns."""
    resume = ("--resume-timeout", f"{RESUME_TIMEOUT:g}")
    peers = [Peer("on", "ours", resume)]
    for size in buffer_sizes or []:
        name = f"on-{size_name(size)}"
        peers.append(Peer(name, "ours", (*resume, "--resume-buffer-size", str(size))))
    peers.append(Peer("off", "ours"))
    return {peer.name: peer for peer in peers}


def size_name(size: int) -> str:
    """``16MiB``, ``512KiB``, or bytes."""
    for shift, unit in ((20, "MiB"), (10, "KiB")):
        if size >= 1 << shift and size % (1 << shift) == 0:
            return f"{size >> shift}{unit}"
    return f"{size}B"


#: The largest slowdown the issue allows resumption (on / off of a rate).
TARGET = 0.90
#: Frames per source of every request (not calibrated: each side runs the same ones):
#: flood 1,000 sources x 100 x 64 B, heavy 10 sources x 100 x 1 MiB.
FRAMES = {"flood": 100, "heavy": 100}
QUICK_FRAMES = {"flood": 10, "heavy": 10}
#: Seconds a timed run may take beyond 30 s, times four (the runner's bound).
RUN_BOUND = 15.0

#: The service of the latency server, and the one that stops its ticks.
TICKS = "ticks"
STOP = "ticks-stop"
#: Frames of the latency run: one every INTERVAL seconds, FRAME_SIZE bytes each.
INTERVAL = 0.001
FRAME_SIZE = 64
#: Frames delivered between the healing of one cut and the next cut (drawn uniformly).
GAP = (20, 60)
#: The most frames a ticks source sends (a bound, should the client never stop it).
MAX_FRAMES = 10_000_000
_SEQ = struct.Struct(">Q")


def tick(seq: int, size: int = FRAME_SIZE) -> bytes:
    """Frame ``seq`` of a ticks source: its number, then a byte that depends on it."""
    return _SEQ.pack(seq) + bytes([seq % 251]) * (size - _SEQ.size)


class DeliveryError(AssertionError):
    """A frame was lost, repeated, reordered or damaged."""


@attrs.define
class Delivery:
    """Checks the frames of one ticks source as they arrive: each once, in order, intact."""

    size: int = FRAME_SIZE
    #: Frames taken so far (the next sequence number expected).
    count: int = 0

    def take(self, frame: bytes) -> None:
        """Check the next frame; DeliveryError if it is not frame :attr:`count`, intact."""
        if len(frame) != self.size:
            raise DeliveryError(f"frame {self.count}: {len(frame)} bytes, not {self.size}")
        (seq,) = _SEQ.unpack_from(frame)
        if seq != self.count:
            what = "repeated" if seq < self.count else f"{seq - self.count} lost"
            raise DeliveryError(f"expected frame {self.count}, got frame {seq} ({what})")
        if frame != tick(seq, self.size):
            raise DeliveryError(f"frame {seq} damaged")
        self.count += 1

    def finish(self, sent: int) -> None:
        """The source ended: DeliveryError unless every one of the ``sent`` frames came."""
        if self.count != sent:
            raise DeliveryError(f"the server sent {sent} frames, {self.count} arrived")


# ---------------------------------------------------------------- the latency server


async def serve_ticks(mpx: cs.Multiplexer, make: Callable[[int, int], bytes] = tick) -> None:
    """Offer ``ticks`` on ``mpx``: one source of frames ``make(seq, size)`` at a steady
    rate, until a ``ticks-stop`` request, whose source's header says how many were sent."""
    stop = trio.Event()
    finished = trio.Event()
    sent = 0

    async def ticks_fn(request: bytes) -> AsyncIterator[cs.Source]:
        asked = json.loads(request)
        interval, size = float(asked["interval"]), int(asked["size"])

        async def frames() -> AsyncIterator[bytes]:
            nonlocal sent
            began = trio.current_time()
            try:
                for seq in range(MAX_FRAMES):
                    if stop.is_set():
                        return
                    # On a steady schedule: frames due while the link is detached are sent
                    # (queued for replay) as soon as their time comes.
                    await trio.sleep_until(began + seq * interval)
                    yield make(seq, size)
                    sent = seq + 1
            finally:
                finished.set()

        yield cs.Source(b"ticks", frames())

    async def stop_fn(request: bytes) -> AsyncIterator[cs.Source]:
        stop.set()
        await finished.wait()
        yield cs.Source(json.dumps({"sent": sent}).encode())

    server = cs.Server(mpx)
    await server.listen_and_serve(TICKS, ticks_fn)
    await server.listen_and_serve(STOP, stop_fn)


async def serve(resume_timeout: float) -> None:
    """The latency server's process: serve ``ticks`` until stdin closes."""
    async with cs.Multiplexer(resume_timeout=resume_timeout) as mpx:
        await serve_ticks(mpx)
        address = await mpx.listen("tcp://127.0.0.1:0")
        print(address, flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


# ------------------------------------------------------------------------ the relay


class CuttingRelay:
    """Relays every connection it accepts to ``target`` on TCP loopback; :meth:`cut`
    closes every connection relayed at that moment, on both sides (a FIN each way)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        #: ``time.perf_counter()`` at each connection accepted.
        self.accepted: list[float] = []
        self._pairs: list[tuple[trio.SocketStream, trio.SocketStream]] = []

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
        async with listener, trio.open_nursery() as nursery:
            task_status.started(f"tcp://127.0.0.1:{listener.socket.getsockname()[1]}")
            while True:
                client = await listener.accept()
                self.accepted.append(time.perf_counter())
                nursery.start_soon(self._relay, client)

    async def _relay(self, client: trio.SocketStream) -> None:
        sock = trio.socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            await sock.connect(self.target)
        except BaseException:
            sock.close()
            client.socket.close()
            raise
        server = trio.SocketStream(sock)
        pair = (client, server)
        self._pairs.append(pair)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, client, server)
                nursery.start_soon(self._pump, server, client)
        finally:
            client.socket.close()
            server.socket.close()
            with contextlib.suppress(ValueError):
                self._pairs.remove(pair)

    async def _pump(self, source: trio.SocketStream, sink: trio.SocketStream) -> None:
        try:
            while data := await source.receive_some(65536):
                await sink.send_all(data)
            await sink.send_eof()
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            source.socket.close()
            sink.socket.close()

    def cut(self) -> int:
        """Close every connection relayed now; how many there were."""
        pairs = list(self._pairs)
        for client, server in pairs:
            client.socket.close()
            server.socket.close()
        return len(pairs)


# ------------------------------------------------------------------ cuts, measured


@attrs.define
class Cuts:
    """What the cuts of one latency run measured."""

    #: Seconds from each cut to the relay accepting the client's new connection.
    redial: list[float] = attrs.Factory(list)
    #: Seconds from each cut to the first frame delivered after the link resumed.
    delivery: list[float] = attrs.Factory(list)
    frames: int = 0
    resumptions: int = 0
    detached_seconds: float = 0.0

    def summary(self) -> dict[str, Any]:
        def ms(samples: list[float], fraction: float) -> float:
            return percentile(samples, fraction) * 1e3

        return {
            "cuts": len(self.delivery),
            "frames": self.frames,
            "exactly_once": True,
            "resumptions": self.resumptions,
            "detached_seconds": self.detached_seconds,
            "redial_p50_ms": ms(self.redial, 0.50),
            "redial_p99_ms": ms(self.redial, 0.99),
            "delivery_p50_ms": ms(self.delivery, 0.50),
            "delivery_p99_ms": ms(self.delivery, 0.99),
            "delivery_max_ms": max(self.delivery) * 1e3,
        }


async def measure_cuts(address: str, count: int, seed: int) -> Cuts:
    """Cut the link to the ticks server at ``address`` ``count`` times while its frames
    flow; every frame is checked. DeliveryError if one was lost, repeated or damaged,
    or if the link did not resume every time."""
    try:
        return await _measure_cuts(address, count, seed)
    except BaseExceptionGroup as group:
        # Raised in a task: the first DeliveryError in the group, if there is one.
        found: BaseException | None = group.subgroup(DeliveryError)
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        if found is None:
            raise
        raise found from group


async def _measure_cuts(address: str, count: int, seed: int) -> Cuts:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    relay = CuttingRelay((host, int(port)))
    rng = random.Random(seed)
    cuts = Cuts()
    delivery = Delivery()
    arrived = trio.Event()  # set (and replaced) on each frame
    async with trio.open_nursery() as nursery:
        url = await nursery.start(relay.run)
        async with cs.Multiplexer(resume_timeout=RESUME_TIMEOUT) as mpx:
            link = await mpx.join(url)
            if not link.conn.resumable:
                raise DeliveryError("the link did not agree on resumption")
            client = cs.Client(mpx)
            cut_at = 0.0
            healed = trio.Event()
            healed.set()

            async def read() -> None:
                nonlocal arrived
                request = json.dumps({"interval": INTERVAL, "size": FRAME_SIZE}).encode()
                async with client.lookup_and_post(TICKS, request) as sources:
                    async for source in sources:
                        async for frame in source:
                            now = time.perf_counter()
                            delivery.take(frame)
                            if not healed.is_set() and link.statistics().resumptions > len(
                                cuts.delivery
                            ):
                                cuts.delivery.append(now - cut_at)
                                healed.set()
                            arrived.set()
                            arrived = trio.Event()

            async def frames_after(frames: int) -> None:
                target = delivery.count + frames
                while delivery.count < target:
                    await arrived.wait()

            async with trio.open_nursery() as readers:
                readers.start_soon(read)
                with trio.fail_after(60):
                    await frames_after(GAP[1])  # warm: the source is flowing
                for index in range(count):
                    with trio.fail_after(60):
                        await frames_after(rng.randint(*GAP))
                    healed = trio.Event()
                    accepted = len(relay.accepted)
                    cut_at = time.perf_counter()
                    if relay.cut() != 1:
                        raise DeliveryError(f"cut {index + 1}: not one connection relayed")
                    with trio.fail_after(RESUME_TIMEOUT):
                        await healed.wait()
                    if len(relay.accepted) != accepted + 1:
                        raise DeliveryError(f"cut {index + 1}: the link was not redialed once")
                    cuts.redial.append(relay.accepted[accepted] - cut_at)
                with trio.fail_after(60):
                    await frames_after(GAP[1])
                    async with client.lookup_and_post(STOP, b"") as sources:
                        sent = json.loads((await sources.receive()).header)["sent"]
            delivery.finish(sent)
            stats = link.statistics()
            if mpx.links != [link] or stats.resumptions != count:
                raise DeliveryError(
                    f"{stats.resumptions} resumptions of {count} cuts, links {mpx.links}"
                )
            cuts.frames = delivery.count
            cuts.resumptions = stats.resumptions
            cuts.detached_seconds = stats.detached_seconds
        nursery.cancel_scope.cancel()
    return cuts


def latency_run(count: int, seed: int) -> dict[str, Any]:
    """A ticks server in its own process (this tree's package), cut ``count`` times."""
    cwd, env = trees.launch(None, Path(tempfile.gettempdir()))
    with subprocess.Popen(
        [sys.executable, "-m", "benchmarks.resume", "--serve"],
        cwd=cwd,
        env=env,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as server:
        assert server.stdin is not None and server.stdout is not None
        try:
            address = server.stdout.readline().strip()
            if not address:
                raise DeliveryError("the ticks server did not start")
            return trio.run(measure_cuts, address, count, seed).summary()
        finally:
            server.stdin.close()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()


# --------------------------------------------------------------------------- output


def _label(peer: str) -> str:
    if peer == "off":
        return "resumption off"
    if peer == "on":
        return "resumption on"
    return f"on, {peer.removeprefix('on-')} buffer"


def throughput_table(results: dict[str, dict[str, Outcome]], peers: list[str]) -> str:
    """Per scenario: each peer's median (min..max), then each ``on`` peer / ``off``."""
    columns = ["off", *(peer for peer in peers if peer != "off")]
    ons = columns[1:]
    heading = ["scenario", "figure", *map(_label, columns)]
    heading += [f"{peer}/off" for peer in ons] + ["target"]
    lines = ["| " + " | ".join(heading) + " |", "|" + " --- |" * len(heading)]
    for scenario, by_peer in results.items():
        metric = SCENARIOS[scenario].metrics[0]
        row = [scenario, f"{metric.label} ({metric.unit})"]
        for peer in columns:
            outcome = by_peer.get(peer)
            figures = None if outcome is None else spread(outcome, metric)
            if figures is None:
                row.append(outcome.status if outcome is not None else "-")
            else:
                low, high = number(figures.low), number(figures.high)
                row.append(f"{number(figures.median)} ({low}..{high})")
        for peer in ons:
            value = median_ratio(by_peer, metric, peer, "off")
            row.append("-" if value is None else f"{value:.2f}x")
        row.append(f">= {TARGET:.2f}x")
        lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


def latency_table(figures: dict[str, Any]) -> str:
    return "\n".join(
        [
            "| cuts | frames | every frame once, in order | redial p50 / p99 "
            "| cut to resumed delivery p50 | p99 | max |",
            "| --- | --- | --- | --- | --- | --- | --- |",
            f"| {figures['cuts']} | {figures['frames']:,} "
            f"| {'yes' if figures['exactly_once'] else 'NO'} "
            f"| {figures['redial_p50_ms']:.2f} / {figures['redial_p99_ms']:.2f} ms "
            f"| {figures['delivery_p50_ms']:.2f} ms | {figures['delivery_p99_ms']:.2f} ms "
            f"| {figures['delivery_max_ms']:.2f} ms |",
        ]
    )


def progress(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {message}\n")
    sys.stderr.flush()


def _scenarios(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in THROUGHPUT_SCENARIOS]
    if unknown:
        raise argparse.ArgumentTypeError(f"unknown scenario(s): {', '.join(unknown)}")
    return names


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.resume", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--quick", action="store_true", help="a short smoke run")
    parser.add_argument("--runs", type=int, default=None, help="timed runs (default 7; quick 3)")
    for scenario in THROUGHPUT_SCENARIOS:
        parser.add_argument(
            f"--{scenario}-frames",
            type=int,
            default=None,
            metavar="N",
            help=f"frames per source of every {scenario} request, on every side (default "
            f"{FRAMES[scenario]}; quick {QUICK_FRAMES[scenario]})",
        )
    parser.add_argument(
        "--scenarios",
        type=_scenarios,
        default=list(THROUGHPUT_SCENARIOS),
        help="on beside off in these, from flood,heavy (default both; '' for none)",
    )
    parser.add_argument("--cuts", type=int, default=None, help="cuts (default 200; quick 20)")
    parser.add_argument("--seed", type=int, default=0, help="seeds the frames cuts fall on")
    parser.add_argument(
        "--buffer-size",
        type=int,
        action="append",
        default=[],
        metavar="BYTES",
        help="also run resumption on with this resume_buffer_size (repeatable), beside the "
        "default's",
    )
    parser.add_argument("--json", type=Path, default=None, help="where the results go")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.serve:
        trio.run(serve, RESUME_TIMEOUT)
        return 0
    runs = args.runs or (3 if args.quick else 7)
    frames = {
        scenario: getattr(args, f"{scenario}_frames")
        or (QUICK_FRAMES if args.quick else FRAMES)[scenario]
        for scenario in THROUGHPUT_SCENARIOS
    }
    cuts = args.cuts if args.cuts is not None else (20 if args.quick else 200)
    if runs < 1 or cuts < 1 or min(frames.values()) < 1:
        parser.error("--runs, --cuts and the frames must be positive")
    # Every side runs the same requests (no calibration); the budget only bounds how long
    # the runner waits for a run (30 s + 4 x budget / runs).
    settings = Settings(runs=runs, budget=RUN_BOUND * runs, quick=args.quick)
    started = datetime.datetime.now(datetime.UTC)
    load_before = load_average()
    progress(f"load average (1 min) {load_before} on {os.cpu_count()} CPUs")
    results: dict[str, dict[str, Outcome]] = {}
    peers = peer_table(args.buffer_size)
    turns = list(peers)
    if args.scenarios:
        progress(
            f"{', '.join(args.scenarios)}: resumption on beside off, {settings.runs} runs each "
            "in turns, the same requests on every side"
        )
        for scenario in args.scenarios:
            fixed = attrs.evolve(settings, frames=frames[scenario])
            results.update(run_suite([scenario], turns, fixed, progress, peers))
    progress(f"latency: {cuts} cuts, a frame of {FRAME_SIZE} B every {INTERVAL * 1e3:g} ms")
    failure = ""
    latency: dict[str, Any] = {}
    try:
        latency = latency_run(cuts, args.seed)
    except DeliveryError as error:
        failure = f"cut to resumed delivery FAILED: {error}"
    load_after = load_average()
    content = document(results, turns, settings, started, load_before)
    for scenario, by_peer in results.items():
        metric = SCENARIOS[scenario].metrics[0]
        content["scenarios"][scenario]["ratios"][metric.key] = {
            f"{peer}/off": median_ratio(by_peer, metric, peer, "off")
            for peer in turns
            if peer != "off"
        }
    content["latency"] = latency or {"failed": failure}
    path = args.json or RESULTS / f"resume-{started:%Y%m%d-%H%M%S}.json"
    write_json(path, content)
    if results:
        print("Resumption on beside off (median (min..max) of the runs):\n")
        print(throughput_table(results, turns))
        print()
    if latency:
        print(
            f"Cut to resumed delivery on TCP loopback ({FRAME_SIZE} B frames every "
            f"{INTERVAL * 1e3:g} ms):\n"
        )
        print(latency_table(latency))
    if failure:
        print(failure)
    print(
        f"\nload average (1 min): {load_before} before, {load_after} after, {os.cpu_count()} CPUs"
    )
    print(f"\nresults: {path}")
    failed = any(o.status == "failed" for by_peer in results.values() for o in by_peer.values())
    return 1 if failed or failure else 0


if __name__ == "__main__":
    sys.exit(main())
