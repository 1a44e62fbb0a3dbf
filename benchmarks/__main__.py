"""``python -m benchmarks``: run the scenarios against the peers, print the table, save JSON."""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import time
from pathlib import Path

from ._report import default_path, document, load_average, table, write_json
from ._runner import PEER_NAMES, choose_peers, peer_table, run_suite
from ._scenarios import SCENARIOS, Settings
from ._trees import expected_package, source_tree


def _names(text: str, known: tuple[str, ...], what: str) -> list[str]:
    # Each name once, in the order given.
    names = list(dict.fromkeys(name.strip() for name in text.split(",") if name.strip()))
    unknown = [name for name in names if name not in known]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"unknown {what}: {', '.join(unknown) or '(none given)'}; known: {', '.join(known)}"
        )
    return names


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Benchmark chanserv_trio beside the raw trio ceiling, gRPC and pyzmq, server "
        "and client in separate processes on 127.0.0.1.",
    )
    scenarios = tuple(SCENARIOS)
    parser.add_argument(
        "--scenarios",
        type=lambda text: _names(text, scenarios, "scenario"),
        default=list(scenarios),
        help=f"comma-separated, from {','.join(scenarios)} (default: all)",
    )
    parser.add_argument(
        "--peers",
        type=lambda text: _names(text, PEER_NAMES, "peer"),
        default=None,
        help=f"comma-separated, from {','.join(PEER_NAMES)} (default: all; the -ws peers run "
        "flood and heavy only; base and base-ws need --baseline)",
    )
    parser.add_argument(
        "--baseline",
        metavar="PATH",
        default=None,
        help="another source tree of chanserv_trio (a checkout's root) to run as peers base "
        "and base-ws, under this tree's benchmark code, beside ours and ours-ws in the same "
        "turns",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a short smoke run: about a second of timed runs per scenario and peer",
    )
    parser.add_argument(
        "--runs", type=int, default=None, help="timed runs per scenario (default 5; quick: 3)"
    )
    parser.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds the timed runs of one scenario take, per peer (default 10; quick: 1)",
    )
    parser.add_argument(
        "--json",
        type=Path,
        default=None,
        help="where to write the results (default: benchmarks/results/bench-<time>.json)",
    )
    args = parser.parse_args(argv)
    if args.runs is not None and args.runs < 1:
        parser.error("--runs must be at least 1")
    if args.budget is not None and args.budget <= 0:
        parser.error("--budget must be positive")
    if args.baseline is not None:
        try:
            args.baseline = source_tree(args.baseline)
        except ValueError as error:
            parser.error(f"--baseline: {error}")
    try:
        args.peers = choose_peers(args.peers, args.baseline is not None)
    except ValueError as error:
        parser.error(str(error))
    return args


def progress(message: str) -> None:
    sys.stderr.write(f"{time.strftime('%H:%M:%S')} {message}\n")
    sys.stderr.flush()


def _trees_line(baseline: Path) -> str:
    return (
        f"ours runs {expected_package(None)}, base runs {expected_package(baseline)}, "
        "under the same benchmark code"
    )


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    settings = Settings(
        runs=args.runs or (3 if args.quick else 5),
        budget=args.budget or (1.0 if args.quick else 10.0),
        quick=args.quick,
    )
    started = datetime.datetime.now(datetime.UTC)
    load_before = load_average()
    cpus = os.cpu_count()
    progress(f"load average (1 min) {load_before} on {cpus} CPUs; other work skews the figures")
    progress(
        f"{len(args.scenarios)} scenario(s) x {len(args.peers)} peer(s); "
        f"{settings.runs} timed runs in about {settings.budget:g} s each time, after warm-up"
    )
    if args.baseline is not None:
        progress(f"A/B: {_trees_line(args.baseline)}; runs of the two alternate")
    peers = peer_table(args.baseline)
    results = run_suite(args.scenarios, args.peers, settings, progress, peers)
    path = args.json or default_path(started)
    write_json(path, document(results, args.peers, settings, started, load_before, args.baseline))
    print(table(results, args.peers))
    if args.baseline is not None:
        print(f"\n{_trees_line(args.baseline)}")
    print(f"\nload average (1 min): {load_before} before, {load_average()} after, {cpus} CPUs")
    print(f"\nresults: {path}")
    failed = any(
        outcome.status == "failed" for by_peer in results.values() for outcome in by_peer.values()
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
