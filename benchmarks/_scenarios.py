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
from contextlib import AbstractAsyncContextManager
from typing import Any, Literal, Protocol

import attrs

from ._server_cli import add_resume_arguments
from ._workload import Shape

#: Frame size of the open scenario ("one small frame").
OPEN_FRAME_SIZE = 16
#: Frame size of the slow-consumer scenario.
SLOW_FRAME_SIZE = 16 * 1024
#: How many sources the slow-consumer scenario posts; source 0 is the slow one.
SLOW_SOURCES = 10
#: The slow consumer reads at this fraction of the others' unthrottled per-source rate.
SLOW_FRACTION = 0.1


def number(value: float) -> str:
    """A figure in at most four significant digits, large ones with a k or M suffix."""
    magnitude = abs(value)
    if magnitude >= 10_000_000:
        return f"{value / 1e6:.1f}M"
    if magnitude >= 1_000_000:
        return f"{value / 1e6:.2f}M"
    if magnitude >= 100_000:
        return f"{value / 1e3:.0f}k"
    if magnitude >= 10_000:
        return f"{value / 1e3:.1f}k"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    if value == 0:
        return "0"
    return f"{value:.3f}"


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
                Metric("client_peak_buffered_bytes", "client peak buffered", "bytes", "lower"),
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


@attrs.frozen
class Buffered:
    """Peak bytes held in buffers by the library on each side; None where it cannot tell."""

    server: int | None = None
    client: int | None = None


class PeerClient(Protocol):
    """What a peer's client offers the scenarios."""

    def connected(self) -> AbstractAsyncContextManager[None]:
        """Open the warm connection the scenarios post on, for the block's duration."""

    async def fetch(self, shape: Shape, throttle: Throttle | None = None) -> Fetched:
        """Post ``shape`` on the warm connection and consume every frame that comes back."""

    async def cold_fetch(self, shape: Shape) -> float:
        """Connect anew, post ``shape``, consume it; seconds until the last frame (the
        connection's teardown is not counted)."""

    async def begin_sampling(self) -> None:
        """Start tracking the peak bytes buffered on each side, if this peer can tell."""

    async def end_sampling(self) -> Buffered:
        """The peak buffered bytes since :meth:`begin_sampling`, where the peer can tell."""


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
    #: flood and heavy: frames per source of every run, not calibrated (None: calibrated),
    #: so that peers compared run the very same requests.
    frames: int | None = None

    @property
    def per_run(self) -> float:
        return self.budget / self.runs


Emit = Callable[[dict[str, Any]], None]


@attrs.frozen
class Harness:
    """How a client talks to the runner."""

    #: Report an event.
    emit: Emit
    #: Wait until the runner says this client may do its next timed run (the runner takes the
    #: peers' runs in turns, so a change in the machine's load falls on all of them alike).
    turn: Callable[[], Awaitable[None]]


def emit_json(event: dict[str, Any]) -> None:
    """Report an event to the runner: one JSON object a line on stdout."""
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


@attrs.frozen
class Scale:
    """How big each timed run is: ``repeats`` requests of ``count`` (sources, frames...)."""

    count: int
    repeats: int = 1


async def calibrate(
    measure: Callable[[int], Awaitable[float]], start: int, cap: int, target: float
) -> Scale:
    """The count (and, at the cap, the number of requests) that make a run take ``target``
    seconds.

    Runs ``measure`` on growing counts until one takes a quarter of the target, scales
    linearly within ``[1, cap]``, then runs once more at that size and scales again from it:
    first runs are slower (allocation, caches), and these runs are the warm-up. A shape that
    is done sooner than the target even at the cap is repeated within a run instead.
    """
    count = min(start, cap)
    while True:
        elapsed = max(await measure(count), 1e-9)
        if elapsed >= target / 4 or count >= cap:
            break
        count = min(cap, count * (8 if elapsed < target / 32 else 2))
    count = max(1, min(cap, round(count * target / elapsed)))
    elapsed = max(await measure(count), 1e-9)
    scaled = round(count * target / elapsed)
    if scaled <= cap:
        return Scale(max(1, scaled))
    return Scale(cap, max(1, round(target / (elapsed * cap / count))))


async def fixed_or_calibrated(
    measure: Callable[[int], Awaitable[float]],
    settings: Settings,
    start: int,
    cap: int,
) -> Scale:
    """``settings.frames`` if set, after two warm-up requests of that size; else
    :func:`calibrate` to a run of ``settings.per_run`` seconds."""
    if settings.frames is None:
        return await calibrate(measure, start, cap, settings.per_run)
    for _ in range(2):
        await measure(settings.frames)
    return Scale(settings.frames)


def percentile(samples: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``samples``."""
    ordered = sorted(samples)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


async def run_empty(client: PeerClient, settings: Settings, harness: Harness) -> None:
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
    scale = await calibrate(measure, 50, 200_000, settings.per_run * 0.8)
    count = scale.count * scale.repeats
    harness.emit(
        {"event": "calibrated", "params": {"requests": count, "cold_connects": cold_count}}
    )
    for index in range(settings.runs):
        await harness.turn()
        latencies = await requests(count)
        colds = [await client.cold_fetch(shape) for _ in range(cold_count)]
        harness.emit(
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


async def run_flood(client: PeerClient, settings: Settings, harness: Harness) -> None:
    def shape(frames: int) -> Shape:
        return Shape(sources=1_000, frames=frames, size=64)

    async def measure(frames: int) -> float:
        return check_complete(shape(frames), await client.fetch(shape(frames))).elapsed

    scale = await fixed_or_calibrated(measure, settings, 1, 5_000)
    harness.emit({"event": "calibrated", "params": _params(shape(scale.count), scale)})
    for index in range(settings.runs):
        await harness.turn()
        fetched = await fetch_repeated(client, shape(scale.count), scale.repeats)
        harness.emit(
            {
                "event": "run",
                "index": index,
                "metrics": {"frames_per_s": fetched.frames / fetched.elapsed},
            }
        )


async def run_heavy(client: PeerClient, settings: Settings, harness: Harness) -> None:
    def shape(frames: int) -> Shape:
        return Shape(sources=10, frames=frames, size=1 << 20)

    async def measure(frames: int) -> float:
        return check_complete(shape(frames), await client.fetch(shape(frames))).elapsed

    scale = await fixed_or_calibrated(measure, settings, 1, 500)
    harness.emit({"event": "calibrated", "params": _params(shape(scale.count), scale)})
    for index in range(settings.runs):
        await harness.turn()
        fetched = await fetch_repeated(client, shape(scale.count), scale.repeats)
        harness.emit(
            {
                "event": "run",
                "index": index,
                "metrics": {"mb_per_s": fetched.payload_bytes / fetched.elapsed / 1e6},
            }
        )


async def run_open(client: PeerClient, settings: Settings, harness: Harness) -> None:
    def shape(sources: int) -> Shape:
        return Shape(sources=sources, frames=1, size=OPEN_FRAME_SIZE)

    async def measure(sources: int) -> float:
        return check_complete(shape(sources), await client.fetch(shape(sources))).elapsed

    scale = await calibrate(measure, 100, 10_000, settings.per_run)
    harness.emit({"event": "calibrated", "params": _params(shape(scale.count), scale)})
    for index in range(settings.runs):
        await harness.turn()
        fetched = await fetch_repeated(client, shape(scale.count), scale.repeats)
        harness.emit(
            {
                "event": "run",
                "index": index,
                "metrics": {"streams_per_s": fetched.frames / fetched.elapsed},
            }
        )


async def fetch_repeated(client: PeerClient, shape: Shape, repeats: int) -> Fetched:
    """``repeats`` complete requests one after the other, added up."""
    total = Fetched(0, 0, 0.0, [])
    for _ in range(repeats):
        fetched = check_complete(shape, await client.fetch(shape))
        total.frames += fetched.frames
        total.payload_bytes += fetched.payload_bytes
        total.elapsed += fetched.elapsed
    return total


def _params(shape: Shape, scale: Scale) -> dict[str, Any]:
    params: dict[str, Any] = {"sources": shape.sources, "frames": shape.frames, "size": shape.size}
    if scale.repeats > 1:
        params["requests_per_run"] = scale.repeats
    return params


def _others(fetched: Fetched, slow: int) -> float:
    """Seconds until the last source other than ``slow`` ended."""
    return max(at for index, at in enumerate(fetched.done_at) if index != slow)


async def run_slow(client: PeerClient, settings: Settings, harness: Harness) -> None:
    slow = 0
    others = SLOW_SOURCES - 1

    def shape(frames: int) -> Shape:
        return Shape(sources=SLOW_SOURCES, frames=frames, size=SLOW_FRAME_SIZE)

    async def measure(frames: int) -> float:
        return check_complete(shape(frames), await client.fetch(shape(frames))).elapsed

    # A run is one unthrottled request and one throttled request of the same shape.
    frames = (await calibrate(measure, 4, 100_000, settings.per_run / 2)).count
    harness.emit(
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
        await harness.turn()
        free = check_complete(shape(frames), await client.fetch(shape(frames)))
        free_rate = others_bytes / _others(free, slow)
        per_source_fps = frames / free.done_at[slow]
        throttle = Throttle(slow, per_source_fps * SLOW_FRACTION)
        await client.begin_sampling()
        held = await client.fetch(shape(frames), throttle)
        peaks = await client.end_sampling()
        if held.frames < others * frames:
            raise AssertionError(f"the other sources lost frames: {held.frames} arrived")
        held_rate = others_bytes / _others(held, slow)
        harness.emit(
            {
                "event": "run",
                "index": index,
                "metrics": {
                    "kept_pct": 100.0 * held_rate / free_rate,
                    "others_mb_per_s": held_rate / 1e6,
                    "peak_buffered_bytes": peaks.server,
                    "client_peak_buffered_bytes": peaks.client,
                },
                "detail": {
                    "unthrottled_others_mb_per_s": free_rate / 1e6,
                    "slow_frames_per_s": throttle.frames_per_second,
                    "slow_frames_read": held.frames - others * frames,
                },
            }
        )


DRIVERS: dict[str, Callable[[PeerClient, Settings, Harness], Awaitable[None]]] = {
    "empty": run_empty,
    "flood": run_flood,
    "heavy": run_heavy,
    "open": run_open,
    "slow": run_slow,
}


async def drive(client: PeerClient, scenario: str, settings: Settings, harness: Harness) -> None:
    """Run one scenario on ``client``: connect, warm up and calibrate, then the timed runs."""
    async with client.connected():
        await DRIVERS[scenario](client, settings, harness)
    harness.emit({"event": "done"})


@attrs.frozen
class ClientArguments:
    """The command line of every ``benchmarks.client_<peer>`` module."""

    port: int
    scenario: str
    settings: Settings
    #: Transport, for peers that have more than one (ours: tcp or ws).
    scheme: str
    #: Wait for a line on stdin before each timed run.
    paced: bool
    #: ours: ``Multiplexer(resume_timeout=...)``, seconds (None: resumption off).
    resume_timeout: float | None = None
    #: ours: ``Multiplexer(resume_buffer_size=...)`` (None: the default).
    resume_buffer_size: int | None = None


def client_arguments(argv: list[str] | None = None) -> ClientArguments:
    """Parse a client module's command line (the runner writes it)."""
    parser = argparse.ArgumentParser(description="One peer's benchmark client.")
    parser.add_argument("--port", type=int, required=True, help="the server's port on 127.0.0.1")
    parser.add_argument("--scenario", choices=sorted(DRIVERS), required=True)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=float, default=10.0, help="seconds for all timed runs")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--scheme", choices=("tcp", "ws"), default="tcp", help="transport")
    parser.add_argument(
        "--paced", action="store_true", help="wait for a line on stdin before each timed run"
    )
    parser.add_argument(
        "--frames",
        type=int,
        default=None,
        metavar="N",
        help="flood and heavy: N frames per source in every run, after two warm-up requests "
        "(default: calibrated to the budget)",
    )
    add_resume_arguments(parser)
    args = parser.parse_args(argv)
    return ClientArguments(
        port=args.port,
        scenario=args.scenario,
        settings=Settings(
            runs=args.runs, budget=args.budget, quick=args.quick, frames=args.frames
        ),
        scheme=args.scheme,
        paced=args.paced,
        resume_timeout=args.resume_timeout,
        resume_buffer_size=args.resume_buffer_size,
    )
