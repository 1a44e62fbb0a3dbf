"""The scenarios: what each one asks of a peer, what it measures, and how counts are scaled.

The driving code here awaits nothing but the peer client's own methods, so the same code runs
under trio (ours, the ceiling) and under asyncio (gRPC).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, Literal, Protocol

import attrs

from ._workload import Shape

#: Frame size of the open scenario ("one small frame").
OPEN_FRAME_SIZE = 16
#: Frame size of the slow-consumer scenario.
SLOW_FRAME_SIZE = 16 * 1024
#: How many sources the slow-consumer scenario posts; source 0 is the slow one.
SLOW_SOURCES = 10
#: The slow consumer reads at this fraction of the others' unthrottled per-source rate.
SLOW_FRACTION = 0.1


@attrs.frozen
class Metric:
    """One figure a scenario reports."""

    key: str
    label: str
    unit: str
    better: Literal["higher", "lower"]


@attrs.frozen
class ScenarioSpec:
    """A scenario's name, a one-line description and its figures."""

    name: str
    summary: str
    metrics: tuple[Metric, ...]


SCENARIOS: dict[str, ScenarioSpec] = {
    spec.name: spec
    for spec in (
        ScenarioSpec(
            "empty",
            "1 source x 1 frame x 0 bytes per request: round trip on a warm connection, "
            "and connect + first request from cold",
            (
                Metric("p50_ms", "warm request p50", "ms", "lower"),
                Metric("p99_ms", "warm request p99", "ms", "lower"),
                Metric("cold_ms", "connect + first request", "ms", "lower"),
            ),
        ),
        ScenarioSpec(
            "flood",
            "1,000 sources x N frames x 64 bytes in one request",
            (Metric("frames_per_s", "frames", "frames/s", "higher"),),
        ),
        ScenarioSpec(
            "heavy",
            "10 sources x M frames x 1 MiB in one request",
            (Metric("mb_per_s", "payload", "MB/s", "higher"),),
        ),
        ScenarioSpec(
            "open",
            "S sources x 1 frame x 16 bytes in one request (S up to 10,000)",
            (Metric("streams_per_s", "child streams", "streams/s", "higher"),),
        ),
        ScenarioSpec(
            "slow",
            "10 sources x F frames x 16 KiB; source 0 read at a tenth of the others' speed",
            (
                Metric("kept_pct", "others' rate kept", "%", "higher"),
                Metric("others_mb_per_s", "others' payload, throttled", "MB/s", "higher"),
                Metric("peak_buffered_bytes", "server peak buffered", "bytes", "lower"),
            ),
        ),
    )
}


@attrs.frozen
class Throttle:
    """Read source ``index`` no faster than ``frames_per_second``, and abandon it once every
    other source has ended."""

    index: int
    frames_per_second: float


@attrs.define
class Fetched:
    """What one request brought back."""

    frames: int
    payload_bytes: int
    #: Seconds from posting the request until the last awaited frame arrived.
    elapsed: float
    #: Per source index, seconds from posting until its end arrived (NaN if abandoned).
    done_at: list[float]


class PeerClient(Protocol):
    """What a peer's client offers the scenarios."""

    async def connect(self) -> None:
        """Open the warm connection the scenarios post on."""

    async def aclose(self) -> None:
        """Close the warm connection."""

    async def fetch(self, shape: Shape, throttle: Throttle | None = None) -> Fetched:
        """Post ``shape`` on the warm connection and consume every frame that comes back."""

    async def cold_fetch(self, shape: Shape) -> float:
        """Connect anew, post ``shape``, consume it; seconds until the last frame (the
        connection's teardown is not counted)."""

    async def begin_sampling(self) -> None:
        """Start tracking the server's peak buffered bytes, if this peer can tell."""

    async def end_sampling(self) -> int | None:
        """The server's peak buffered bytes since :meth:`begin_sampling`, or None."""


def check_complete(shape: Shape, fetched: Fetched) -> Fetched:
    """Fail loudly if a request that was read to the end lost or invented frames."""
    expected = shape.announced * shape.frames
    if fetched.frames != expected or fetched.payload_bytes != expected * shape.size:
        raise AssertionError(
            f"expected {expected} frames of {shape.size} bytes, "
            f"got {fetched.frames} frames, {fetched.payload_bytes} bytes"
        )
    return fetched


@attrs.frozen
class Settings:
    """How long and how often to measure."""

    runs: int
    #: Seconds the timed runs of one scenario take together, for one peer.
    budget: float
    quick: bool

    @property
    def per_run(self) -> float:
        return self.budget / self.runs


Emit = Callable[[dict[str, Any]], None]


def emit_json(event: dict[str, Any]) -> None:
    """Report an event to the runner: one JSON object a line on stdout."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


async def calibrate(
    measure: Callable[[int], Awaitable[float]], start: int, cap: int, target: float
) -> int:
    """The count that makes ``measure`` take about ``target`` seconds.

    Runs ``measure`` on growing counts until one takes a quarter of the target (these runs are
    the warm-up), then scales linearly, within ``[1, cap]``.
    """
    count = min(start, cap)
    while True:
        elapsed = await measure(count)
        if elapsed >= target / 4 or count >= cap:
            break
        count = min(cap, count * (8 if elapsed < target / 32 else 2))
    return max(1, min(cap, round(count * target / max(elapsed, 1e-9))))


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``samples``."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


async def run_empty(client: PeerClient, settings: Settings, emit: Emit) -> None:
    shape = Shape(sources=1, frames=1, size=0)
    cold_count = 5 if settings.quick else 20

    async def requests(count: int) -> list[float]:
        latencies = []
        for _ in range(count):
            began = time.perf_counter()
            check_complete(shape, await client.fetch(shape))
            latencies.append(time.perf_counter() - began)
        return latencies

    async def measure(count: int) -> float:
        return sum(await requests(count))

    # The cold connects take their share of the run too; leave them a fifth of it.
    count = await calibrate(measure, 50, 200_000, settings.per_run * 0.8)
    emit({"event": "calibrated", "params": {"requests": count, "cold_connects": cold_count}})
    for index in range(settings.runs):
        latencies = await requests(count)
        colds = [await client.cold_fetch(shape) for _ in range(cold_count)]
        emit(
            {
                "event": "run",
                "index": index,
                "metrics": {
                    "p50_ms": percentile(latencies, 0.50) * 1e3,
                    "p99_ms": percentile(latencies, 0.99) * 1e3,
                    "cold_ms": statistics.median(colds) * 1e3,
                },
            }
        )


async def run_flood(client: PeerClient, settings: Settings, emit: Emit) -> None:
    def shape(frames: int) -> Shape:
        return Shape(sources=1_000, frames=frames, size=64)

    async def measure(frames: int) -> float:
        return check_complete(shape(frames), await client.fetch(shape(frames))).elapsed

    frames = await calibrate(measure, 1, 5_000, settings.per_run)
    emit({"event": "calibrated", "params": {"sources": 1_000, "frames": frames, "size": 64}})
    for index in range(settings.runs):
        fetched = check_complete(shape(frames), await client.fetch(shape(frames)))
        emit(
            {
                "event": "run",
                "index": index,
                "metrics": {"frames_per_s": fetched.frames / fetched.elapsed},
            }
        )


async def run_heavy(client: PeerClient, settings: Settings, emit: Emit) -> None:
    size = 1 << 20

    def shape(frames: int) -> Shape:
        return Shape(sources=10, frames=frames, size=size)

    async def measure(frames: int) -> float:
        return check_complete(shape(frames), await client.fetch(shape(frames))).elapsed

    frames = await calibrate(measure, 1, 500, settings.per_run)
    emit({"event": "calibrated", "params": {"sources": 10, "frames": frames, "size": size}})
    for index in range(settings.runs):
        fetched = check_complete(shape(frames), await client.fetch(shape(frames)))
        emit(
            {
                "event": "run",
                "index": index,
                "metrics": {"mb_per_s": fetched.payload_bytes / fetched.elapsed / 1e6},
            }
        )


async def run_open(client: PeerClient, settings: Settings, emit: Emit) -> None:
    def shape(sources: int) -> Shape:
        return Shape(sources=sources, frames=1, size=OPEN_FRAME_SIZE)

    async def measure(sources: int) -> float:
        return check_complete(shape(sources), await client.fetch(shape(sources))).elapsed

    sources = await calibrate(measure, 100, 10_000, settings.per_run)
    emit(
        {
            "event": "calibrated",
            "params": {"sources": sources, "frames": 1, "size": OPEN_FRAME_SIZE},
        }
    )
    for index in range(settings.runs):
        fetched = check_complete(shape(sources), await client.fetch(shape(sources)))
        emit(
            {
                "event": "run",
                "index": index,
                "metrics": {"streams_per_s": sources / fetched.elapsed},
            }
        )


def _others(fetched: Fetched, slow: int) -> float:
    """Seconds until the last source other than ``slow`` ended."""
    return max(at for index, at in enumerate(fetched.done_at) if index != slow)


async def run_slow(client: PeerClient, settings: Settings, emit: Emit) -> None:
    slow = 0
    others = SLOW_SOURCES - 1

    def shape(frames: int) -> Shape:
        return Shape(sources=SLOW_SOURCES, frames=frames, size=SLOW_FRAME_SIZE)

    async def measure(frames: int) -> float:
        return check_complete(shape(frames), await client.fetch(shape(frames))).elapsed

    # A run is one unthrottled request and one throttled request of the same shape.
    frames = await calibrate(measure, 4, 100_000, settings.per_run / 2)
    emit(
        {
            "event": "calibrated",
            "params": {
                "sources": SLOW_SOURCES,
                "frames": frames,
                "size": SLOW_FRAME_SIZE,
                "slow_fraction": SLOW_FRACTION,
            },
        }
    )
    others_bytes = others * frames * SLOW_FRAME_SIZE
    for index in range(settings.runs):
        free = check_complete(shape(frames), await client.fetch(shape(frames)))
        free_rate = others_bytes / _others(free, slow)
        per_source_fps = frames / free.done_at[slow]
        throttle = Throttle(slow, per_source_fps * SLOW_FRACTION)
        await client.begin_sampling()
        held = await client.fetch(shape(frames), throttle)
        peak = await client.end_sampling()
        held_rate = others_bytes / _others(held, slow)
        emit(
            {
                "event": "run",
                "index": index,
                "metrics": {
                    "kept_pct": 100.0 * held_rate / free_rate,
                    "others_mb_per_s": held_rate / 1e6,
                    "peak_buffered_bytes": peak,
                },
                "detail": {
                    "unthrottled_others_mb_per_s": free_rate / 1e6,
                    "slow_frames_per_s": throttle.frames_per_second,
                    "slow_frames_read": held.frames - others * frames,
                },
            }
        )


DRIVERS: dict[str, Callable[[PeerClient, Settings, Emit], Awaitable[None]]] = {
    "empty": run_empty,
    "flood": run_flood,
    "heavy": run_heavy,
    "open": run_open,
    "slow": run_slow,
}


async def drive(client: PeerClient, scenario: str, settings: Settings, emit: Emit) -> None:
    """Run one scenario on ``client``: connect, warm up and calibrate, then the timed runs."""
    await client.connect()
    try:
        await DRIVERS[scenario](client, settings, emit)
    finally:
        await client.aclose()
    emit({"event": "done"})


@attrs.frozen
class ClientArguments:
    """The command line of every ``benchmarks.client_<peer>`` module."""

    port: int
    scenario: str
    settings: Settings


def client_arguments(argv: list[str] | None = None) -> ClientArguments:
    """Parse a client module's command line (the runner writes it)."""
    parser = argparse.ArgumentParser(description="One peer's benchmark client.")
    parser.add_argument("--port", type=int, required=True, help="the server's port on 127.0.0.1")
    parser.add_argument("--scenario", choices=sorted(DRIVERS), required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=10.0, help="seconds for all timed runs")
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args(argv)
    return ClientArguments(
        port=args.port,
        scenario=args.scenario,
        settings=Settings(runs=args.runs, budget=args.budget, quick=args.quick),
    )
