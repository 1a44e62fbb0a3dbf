"""What the sans-IO layer costs per DATA frame: two wire ``Connection`` objects in one process.

Run as ``python -m benchmarks.wire [--frames N] [--runs R] [--baseline PATH]``. A dialing
and an accepting :class:`~chanserv_trio.wire._connection.Connection` shake hands in memory;
the dialing one sends N 64-byte messages (one DATA frame each) round the streams of one
shape with ``try_send_message``, as a driver's writer would queue them. Every 64 KiB queued
is one "write": the bytes are joined and fed to the other side's ``receive_data``, which
acknowledges every ``MessageReceived`` at once (``acknowledge(stream, credit, 1)``, the
credit path a reader takes); whatever that queues (WINDOW frames: stream and connection
credit, and on a resumable link the received position) is fed back to the sender. So each
frame pays for encode, decode, flow control both ways, the memory budget's accounting and,
with resumption on, the resume buffer and its confirmations.

Shapes: one stream, or many (1,000 by default) taken in turn; resumption off, or on
(``ResumeOptions(timeout=30)`` on both sides). A figure is microseconds per frame of the
whole exchange, both sides together: median of the runs, then ``(min..max)``. Times are
this process's CPU time (``time.process_time``), not wall-clock: on a shared machine the
other processes' load then stretches a run much less (it still costs caches).

With ``--baseline PATH`` each run goes to a process of its own, this tree's and PATH's in
turns (see ``_trees``), and the ratio ``ours/base`` is shown (under 1 is faster).
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from chanserv_trio.wire._connection import Connection
from chanserv_trio.wire._events import MessageReceived
from chanserv_trio.wire._resume import ResumeOptions

from . import _trees as trees

#: Bytes queued before they are "written" to the peer: one write a batch.
WRITE_SIZE = 64 << 10
#: Payload of every message.
PAYLOAD = bytes(64)


def _shapes(streams: int) -> list[tuple[str, int, bool]]:
    return [
        ("1 stream", 1, False),
        (f"{streams:,} streams", streams, False),
        ("1 stream, resumable", 1, True),
        (f"{streams:,} streams, resumable", streams, True),
    ]


def _transfer(source: Connection, target: Connection) -> list[object]:
    chunks = source.take_outgoing()
    if not chunks:
        return []
    return list(target.receive_data(b"".join(chunks)))


def connected_pair(resume: bool) -> tuple[Connection, Connection]:
    """A dialing and an accepting connection through their handshake."""
    options = ResumeOptions(timeout=30) if resume else None
    sender = Connection(initiator=True, resume=options)
    receiver = Connection(initiator=False, resume=options)
    for _ in range(4):
        _transfer(sender, receiver)
        _transfer(receiver, sender)
    assert sender.handshake_done and receiver.handshake_done
    assert sender.resumable == resume and receiver.resumable == resume
    return sender, receiver


def run(frames: int, streams: int, resume: bool) -> float:
    """Push ``frames`` messages round ``streams`` streams; microseconds per frame."""
    sender, receiver = connected_pair(resume)
    ids = [sender.open_stream("bench", b"", remote_open=False) for _ in range(streams)]
    _transfer(sender, receiver)
    send = sender.try_send_message
    take = sender.take_outgoing
    feed = receiver.receive_data
    acknowledge = receiver.acknowledge
    payload = PAYLOAD
    received = 0

    def deliver() -> int:
        count = 0
        for event in feed(b"".join(take())):
            if type(event) is MessageReceived:
                acknowledge(event.stream_id, event.credit, 1)
                count += 1
        back = receiver.take_outgoing()
        if back:
            sender.receive_data(b"".join(back))
        return count

    order = ids * (frames // streams) + ids[: frames % streams]
    start = time.process_time()
    for stream_id in order:
        while not send(stream_id, payload):
            received += deliver()
        if sender.outgoing_size >= WRITE_SIZE:
            received += deliver()
    received += deliver()
    elapsed = time.process_time() - start
    if received != frames:
        raise SystemExit(f"{received} messages arrived of {frames}")
    for stream_id in ids:
        sender.end_stream(stream_id)
    _transfer(sender, receiver)
    if receiver.held_bytes != 0 or receiver.open_stream_count:
        raise SystemExit(f"the receiver still holds {receiver.held_bytes} bytes")
    return elapsed / frames * 1e6


def one_run(frames: int, streams: int) -> dict[str, float]:
    """Every shape once (after a short warm-up): microseconds per frame by shape."""
    out = {}
    for name, count, resume in _shapes(streams):
        run(min(frames, 20_000), count, resume)
        gc.collect()
        out[name] = run(frames, count, resume)
    return out


def _summary(values: list[float]) -> str:
    return f"{statistics.median(values):.2f} ({min(values):.2f}..{max(values):.2f})"


def _loadavg() -> str:
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return "n/a"


def _run_in(tree: Path | None, scratch: Path, frames: int, streams: int) -> dict[str, float]:
    report = trees.run_report(
        tree, scratch, "benchmarks.wire", "--frames", str(frames), "--streams", str(streams)
    )
    figures: dict[str, float] = report["figures"]
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200_000, help="frames per run")
    parser.add_argument("--streams", type=int, default=1000, help="streams of the many shape")
    parser.add_argument("--runs", type=int, default=5, help="timed runs per shape")
    parser.add_argument(
        "--baseline",
        metavar="PATH",
        help="also measure the chanserv_trio of another source tree, in turns with this one's",
    )
    parser.add_argument("--report", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.report:
        figures = one_run(args.frames, args.streams)
        print(json.dumps({"package": trees.imported_package(), "figures": figures}))
        return
    baseline = None
    if args.baseline is not None:
        try:
            baseline = trees.source_tree(args.baseline)
        except ValueError as error:
            parser.error(f"--baseline: {error}")
    names = [name for name, _, _ in _shapes(args.streams)]
    ours: dict[str, list[float]] = {name: [] for name in names}
    base: dict[str, list[float]] = {name: [] for name in names}
    load_before = _loadavg()
    with tempfile.TemporaryDirectory(prefix="chanserv-wire-") as scratch:
        for index in range(args.runs):
            if baseline is None:
                figures = one_run(args.frames, args.streams)
            else:
                figures = _run_in(None, Path(scratch), args.frames, args.streams)
                other = _run_in(baseline, Path(scratch), args.frames, args.streams)
                for name in names:
                    base[name].append(other[name])
            for name in names:
                ours[name].append(figures[name])
            print(f"run {index + 1}/{args.runs} done", file=sys.stderr)
    load_after = _loadavg()
    print(
        f"{args.frames:,} DATA frames of {len(PAYLOAD)} bytes a run, {args.runs} runs, "
        f"us per frame (median (min..max)); load average {load_before} -> {load_after}"
    )
    print(f"ours: {trees.expected_package(None)}")
    if baseline is None:
        for name in names:
            print(f"  {name:28} {_summary(ours[name])}")
        return
    print(f"base: {trees.expected_package(baseline)}")
    print(f"  {'':28} {'ours':>22} {'base':>22}  ours/base")
    for name in names:
        ratio = statistics.median(ours[name]) / statistics.median(base[name])
        print(f"  {name:28} {_summary(ours[name]):>22} {_summary(base[name]):>22}  {ratio:.2f}x")


if __name__ == "__main__":
    main()
