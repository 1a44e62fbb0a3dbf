"""``python -m benchmarks.resume`` at a tiny size: its tables and JSON have their shape, its
cuts resume with every frame checked, and a lost, repeated or damaged frame fails it.
No timing is asserted: the figures are the benchmark's business."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import trio

import chanserv_trio as cs
from benchmarks import _trees as trees
from benchmarks.resume import (
    RESUME_TIMEOUT,
    Delivery,
    DeliveryError,
    measure_cuts,
    serve_ticks,
    tick,
)


def test_delivery_takes_each_frame_once_in_order() -> None:
    delivery = Delivery()
    for seq in range(3):
        delivery.take(tick(seq))
    with pytest.raises(DeliveryError, match="expected frame 3, got frame 2 \\(repeated\\)"):
        delivery.take(tick(2))
    with pytest.raises(DeliveryError, match="expected frame 3, got frame 5 \\(2 lost\\)"):
        delivery.take(tick(5))
    damaged = bytearray(tick(3))
    damaged[-1] ^= 1
    with pytest.raises(DeliveryError, match="frame 3 damaged"):
        delivery.take(bytes(damaged))
    with pytest.raises(DeliveryError, match="frame 3: 63 bytes"):
        delivery.take(tick(3)[:-1])
    delivery.take(tick(3))
    delivery.finish(4)
    with pytest.raises(DeliveryError, match="the server sent 5 frames, 4 arrived"):
        delivery.finish(5)


async def test_cuts_resume_and_every_frame_is_checked() -> None:
    async with cs.Multiplexer(resume_timeout=RESUME_TIMEOUT) as server:
        await serve_ticks(server)
        address = await server.listen("tcp://127.0.0.1:0")
        with trio.fail_after(60):
            cuts = await measure_cuts(address, 4, seed=1)
    summary = cuts.summary()
    assert summary["cuts"] == summary["resumptions"] == 4
    assert len(cuts.redial) == 4 and summary["exactly_once"] is True
    assert summary["frames"] > 4 * 20  # at least the gap before each cut
    assert 0 <= summary["redial_p50_ms"] <= summary["redial_p99_ms"]
    assert 0 < summary["delivery_p50_ms"] <= summary["delivery_p99_ms"]
    assert summary["delivery_p99_ms"] <= summary["delivery_max_ms"]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda seq, size: tick(seq + (seq >= 30), size), "got frame 31 \\(1 lost\\)"),
        (lambda seq, size: tick(seq - (seq >= 30), size), "got frame 29 \\(repeated\\)"),
        (lambda seq, size: tick(seq, size)[:-1] + b"!", "frame 0 damaged"),
    ],
)
async def test_a_frame_lost_repeated_or_damaged_fails_the_run(
    make: Callable[[int, int], bytes], message: str
) -> None:
    async with cs.Multiplexer(resume_timeout=RESUME_TIMEOUT) as server:
        await serve_ticks(server, make)
        address = await server.listen("tcp://127.0.0.1:0")
        with trio.fail_after(60), pytest.raises(DeliveryError, match=message):
            await measure_cuts(address, 2, seed=1)


@pytest.mark.slow
def test_the_command_prints_both_tables_and_writes_the_figures(tmp_path: Path) -> None:
    output = tmp_path / "resume.json"
    tiny = ["--quick", "--runs", "1", "--flood-frames", "2", "--scenarios", "flood", "--cuts", "3"]
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.resume", *tiny, "--json", str(output)],
        cwd=trees.ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert "| scenario | figure | resumption off | resumption on | on/off | target |" in lines
    (flood,) = [line for line in lines if line.startswith("| flood |")]
    assert flood.endswith("x | >= 0.90x |")
    (cut_row,) = [line for line in lines if line.startswith("| 3 |")]
    assert "| yes |" in cut_row and cut_row.count(" ms") == 4
    assert any(line.startswith("load average (1 min):") for line in lines)
    content = json.loads(output.read_text())
    assert content["peers"] == ["on", "off"]
    peers = content["scenarios"]["flood"]["peers"]
    assert {peers[side]["status"] for side in ("on", "off")} == {"ok"}
    assert len(peers["on"]["runs"]) == len(peers["off"]["runs"]) == 1
    # Not calibrated: both sides ran the very same requests.
    assert (
        peers["on"]["params"]
        == peers["off"]["params"]
        == {
            "sources": 1000,
            "frames": 2,
            "size": 64,
        }
    )
    assert content["scenarios"]["flood"]["ratios"]["frames_per_s"]["on/off"] > 0
    latency = content["latency"]
    assert latency["cuts"] == latency["resumptions"] == 3
    assert latency["exactly_once"] is True and latency["frames"] > 3 * 20
