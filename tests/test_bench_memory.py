"""``python -m benchmarks.memory`` at a tiny size: each figure it subtracts is measured, and
the whole run reports every side. No size is asserted beyond what must hold for any build:
the figures are the benchmark's business."""

from __future__ import annotations

import tracemalloc
from pathlib import Path

import trio

from benchmarks.memory import SIDES, measure_tasks, measure_tree


def test_the_generator_share_is_what_driving_it_adds_to_a_bare_task() -> None:
    tracemalloc.start()
    try:
        driving = trio.run(measure_tasks, 200, True)
        waiting = trio.run(measure_tasks, 200, False)
    finally:
        tracemalloc.stop()
    # A task that only waits still holds its coroutine and its wait; driving the
    # application's generator holds that generator (and its Source) on top.
    assert waiting > 200 * 100
    assert driving > waiting


def test_a_run_reports_each_side_and_the_package_it_measured(tmp_path: Path) -> None:
    # (run_report also checks the process imported this tree's package.)
    report = measure_tree(None, 50, tmp_path)
    for side in SIDES:
        assert report[side] > 0, side
    assert report["server"] > report["generator"]
