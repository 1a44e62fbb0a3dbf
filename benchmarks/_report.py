"""Summaries of the runs: medians and spread, the ratios, the table and the JSON file."""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
from pathlib import Path
from typing import Any

import attrs

from ._runner import Outcome
from ._scenarios import SCENARIOS, Metric, Settings, number

RESULTS = Path(__file__).resolve().parent / "results"
#: The ratios reported, each as (numerator, denominator).
RATIOS = (
    ("ours", "base"),
    ("ours", "ceiling"),
    ("ours", "grpc"),
    ("ours", "zmq"),
    ("ours-ws", "base-ws"),
    ("ours-ws", "ceiling-ws"),
)


@attrs.frozen
class Spread:
    median: float
    low: float
    high: float

    def as_json(self) -> dict[str, float]:
        return {"median": self.median, "min": self.low, "max": self.high}


def spread(outcome: Outcome, metric: Metric) -> Spread | None:
    """Median, min and max of one figure over the runs, or None if it has no values."""
    values = [run[metric.key] for run in outcome.runs if run.get(metric.key) is not None]
    numbers = [float(value) for value in values if value is not None]
    if outcome.status != "ok" or not numbers:
        return None
    return Spread(statistics.median(numbers), min(numbers), max(numbers))


def ratio(results: dict[str, Outcome], metric: Metric, peer: str, baseline: str) -> float | None:
    """``peer`` / ``baseline`` on the medians, when both have one."""
    if peer not in results or baseline not in results:
        return None
    ours = spread(results[peer], metric)
    theirs = spread(results[baseline], metric)
    if ours is None or theirs is None or theirs.median == 0:
        return None
    return ours.median / theirs.median


def cell(outcome: Outcome | None, metric: Metric) -> str:
    if outcome is None:
        return "-"
    if outcome.status != "ok":
        return outcome.status
    figures = spread(outcome, metric)
    if figures is None:
        return "n/a"
    if figures.low == figures.high:
        return number(figures.median)
    return f"{number(figures.median)} ({number(figures.low)}..{number(figures.high)})"


def table(results: dict[str, dict[str, Outcome]], peers: list[str]) -> str:
    """The results as a plain-text table: median (min..max) per peer, then the ratios."""
    # Leave out peers that ran none of these scenarios (the -ws peers outside flood and heavy).
    peers = [peer for peer in peers if any(peer in by_peer for by_peer in results.values())]
    pairs = [(peer, base) for peer, base in RATIOS if peer in peers and base in peers]
    heading = ["scenario", "figure", "unit", "better", *peers]
    heading += [f"{peer}/{base}" for peer, base in pairs]
    rows = [heading]
    for scenario, by_peer in results.items():
        for metric in SCENARIOS[scenario].metrics:
            row = [scenario, metric.label, metric.unit, metric.better]
            row += [cell(by_peer.get(peer), metric) for peer in peers]
            for peer, base in pairs:
                value = ratio(by_peer, metric, peer, base)
                row.append("-" if value is None else f"{value:.2f}x")
            rows.append(row)
    widths = [max(len(row[column]) for row in rows) for column in range(len(heading))]
    lines = [
        "  ".join(text.ljust(width) for text, width in zip(row, widths, strict=True))
        for row in rows
    ]
    lines.insert(1, "  ".join("-" * width for width in widths))
    # One note per reason, naming the scenarios it applies to.
    reasons: dict[tuple[str, str, str], list[str]] = {}
    for scenario, by_peer in results.items():
        for peer, outcome in by_peer.items():
            if outcome.status != "ok":
                key = (peer, outcome.status, outcome.message)
                reasons.setdefault(key, []).append(scenario)
    if reasons:
        lines.append("")
        for (peer, status, message), scenarios in reasons.items():
            lines.append(f"{peer} {status} in {', '.join(scenarios)}: {message}")
    return "\n".join(line.rstrip() for line in lines)


def load_average() -> float | None:
    """The one-minute load average, where the platform has one."""
    try:
        return round(os.getloadavg()[0], 2)
    except (AttributeError, OSError):
        return None


def machine() -> dict[str, Any]:
    return {
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
    }


def document(
    results: dict[str, dict[str, Outcome]],
    peers: list[str],
    settings: Settings,
    started: datetime.datetime,
    load_before: float | None,
    baseline: Path | None = None,
) -> dict[str, Any]:
    """Everything measured, as one JSON-ready object."""
    scenarios: dict[str, Any] = {}
    for scenario, by_peer in results.items():
        spec = SCENARIOS[scenario]
        entry: dict[str, Any] = {"summary": spec.summary, "peers": {}, "ratios": {}}
        for peer, outcome in by_peer.items():
            summaries: dict[str, Any] = {}
            for metric in spec.metrics:
                figures = spread(outcome, metric)
                summaries[metric.key] = None if figures is None else figures.as_json()
            entry["peers"][peer] = {
                "status": outcome.status,
                "message": outcome.message,
                "params": outcome.params,
                "seconds": round(outcome.seconds, 3),
                "runs": outcome.runs,
                "details": outcome.details,
                "about": outcome.about,
                "summary": summaries,
            }
        for metric in spec.metrics:
            entry["ratios"][metric.key] = {
                f"{peer}/{base}": ratio(by_peer, metric, peer, base)
                for peer, base in RATIOS
                if peer in by_peer and base in by_peer
            }
        entry["metrics"] = {
            metric.key: {"label": metric.label, "unit": metric.unit, "better": metric.better}
            for metric in spec.metrics
        }
        scenarios[scenario] = entry
    return {
        "started": started.isoformat(timespec="seconds"),
        "finished": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "load_average_1min": {"before": load_before, "after": load_average()},
        "settings": attrs.asdict(settings),
        "peers": peers,
        "baseline": None if baseline is None else str(baseline),
        "scenarios": scenarios,
    }


def default_path(started: datetime.datetime) -> Path:
    return RESULTS / f"bench-{started:%Y%m%d-%H%M%S}.json"


def write_json(path: Path, content: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(content, indent=2) + "\n")
