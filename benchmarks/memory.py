"""What an idle open source costs in memory, on each side of a link.

Run as ``python -m benchmarks.memory [--sources N] [--baseline PATH]``. One side runs in this
process under ``tracemalloc``, the other in a child process, over TCP loopback; then the roles
swap. A source is *idle and open* when the server has announced it and its producer
waits for its next frame, and the client holds the ``RemoteSource`` without reading.
The server's figure includes the per-source producer task and the application's
waiting async generator; the client's is the library's alone. The generator's share is
measured apart (bare trio tasks driving the same generators, less bare tasks waiting on the
same Event) and shown subtracted; the bare task's own cost is shown for scale. With
``--baseline PATH``, this tree's chanserv_trio and PATH's are each measured the same way in
processes of their own (see ``_trees``), one after the other, and shown side by side.
"""

from __future__ import annotations

import argparse
import gc
import json
import subprocess
import sys
import tempfile
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import trio
import trio.testing

import chanserv_trio as cs

from . import _trees as trees

SERVICE = "idle"
#: What :func:`measure` reports: each side, the application's generator (part of the
#: server's figure) and a bare trio task waiting on an Event (for scale).
SIDES = ("client", "server", "generator", "task")


def idle_source_fn(release: trio.Event) -> cs.SourceFunction:
    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        async def frames() -> AsyncIterator[bytes]:
            await release.wait()
            yield b"done"

        for index in range(int(request)):
            yield cs.Source(b"%d" % index, frames())

    return source_fn


async def serve() -> None:
    """Serve idle sources until stdin closes (the child process's role as a server)."""
    async with cs.Multiplexer() as mpx:
        address = await mpx.listen("tcp://127.0.0.1:0")
        await cs.Server(mpx).listen_and_serve(SERVICE, idle_source_fn(trio.Event()))
        print(address, flush=True)
        await trio.to_thread.run_sync(sys.stdin.read)


async def hold(address: str, count: int, measure: bool) -> int:
    """Open ``count`` idle sources from ``address``; return the bytes they cost here."""
    async with cs.Multiplexer() as mpx:
        await mpx.join(address)
        client = cs.Client(mpx)
        async with client.lookup_and_post(SERVICE, b"1") as sources:  # warm up
            async for _ in sources:
                pass
        gc.collect()
        base = tracemalloc.get_traced_memory()[0] if measure else 0
        held = []
        async with client.lookup_and_post(SERVICE, str(count).encode()) as sources:
            async for source in sources:
                held.append(source)
            await trio.sleep(0.5)
            gc.collect()
            used = tracemalloc.get_traced_memory()[0] - base if measure else 0
            if not measure:
                print("held", flush=True)
                await trio.to_thread.run_sync(sys.stdin.read)
        return used


async def measure_server(count: int) -> int:
    release = trio.Event()
    async with cs.Multiplexer() as mpx:
        address = await mpx.listen("tcp://127.0.0.1:0")
        await cs.Server(mpx).listen_and_serve(SERVICE, idle_source_fn(release))
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        child = await trio.lowlevel.open_process(
            [sys.executable, "-m", "benchmarks.memory", "--hold", address, str(count)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        assert child.stdout is not None and child.stdin is not None
        line = b""
        with trio.fail_after(120):
            while not line.endswith(b"\n"):
                line += await child.stdout.receive_some(1)
        await trio.sleep(0.5)
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        await child.stdin.aclose()
        await child.wait()
        release.set()
        return used


async def measure_tasks(count: int, drive_generator: bool) -> int:
    """Bytes ``count`` bare trio tasks cost, each waiting in the application's idle
    generator (``drive_generator``) or on the same Event directly: no chanserv_trio at all.
    The difference is the application's generator alone; the second is the floor of any
    design that gives each source a task of its own."""
    release = trio.Event()
    sources = idle_source_fn(release)

    async def drive(source: cs.Source) -> None:  # holding the Source, as the server does
        async for _ in source.frames:
            pass

    async def wait() -> None:
        await release.wait()

    async with trio.open_nursery() as nursery:
        gc.collect()
        base = tracemalloc.get_traced_memory()[0]
        async for source in sources(b"%d" % count):
            if drive_generator:
                nursery.start_soon(drive, source, name="drive")
            else:
                nursery.start_soon(wait, name="wait")
        await trio.testing.wait_all_tasks_blocked()
        gc.collect()
        used = tracemalloc.get_traced_memory()[0] - base
        release.set()
    return used


def measure_client(count: int) -> int:
    with subprocess.Popen(
        [sys.executable, "-m", "benchmarks.memory", "--serve"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as child:
        assert child.stdout is not None and child.stdin is not None
        address = child.stdout.readline().strip()
        used = trio.run(hold, address, count, True)
        child.stdin.close()
        child.wait(timeout=30)
    return used


def measure(count: int) -> dict[str, int]:
    """Bytes ``count`` idle open sources cost on each side, with this process's package."""
    tracemalloc.start()
    client = measure_client(count)
    server = trio.run(measure_server, count)
    driving = trio.run(measure_tasks, count, True)
    task = trio.run(measure_tasks, count, False)
    tracemalloc.stop()
    return {"client": client, "server": server, "generator": driving - task, "task": task}


def measure_tree(tree: Path | None, count: int, scratch: Path) -> dict[str, int]:
    """:func:`measure` in a process of its own that imports chanserv_trio from ``tree``."""
    report = trees.run_report(tree, scratch, "benchmarks.memory", "--sources", str(count))
    return {side: int(report[side]) for side in SIDES}


def compare(baseline: Path, count: int) -> None:
    with tempfile.TemporaryDirectory(prefix="chanserv-memory-") as scratch:
        ours = measure_tree(None, count, Path(scratch))
        base = measure_tree(baseline, count, Path(scratch))
    rows = [
        ("client", "client"),
        ("server", "server"),
        ("server, beyond the application's generator", "own"),
    ]
    for figures in (ours, base):
        figures["own"] = figures["server"] - figures["generator"]
    width = max(len(label) for label, _ in rows)
    print(f"{count:,} idle open sources, bytes per source:")
    print(f"  {'':{width}}  {'ours':>8}  {'base':>8}  ours/base")
    for label, key in rows:
        print(
            f"  {label:{width}}  {ours[key] / count:8,.0f}  {base[key] / count:8,.0f}  "
            f"{ours[key] / base[key]:.2f}x"
        )
    print(
        f"(the generator: {ours['generator'] / count:,.0f} B; a bare trio task waiting on "
        f"an Event: {ours['task'] / count:,.0f} B)"
    )
    print(f"ours: {trees.expected_package(None)}; base: {trees.expected_package(baseline)}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sources", type=int, default=10_000)
    parser.add_argument(
        "--baseline",
        metavar="PATH",
        help="also measure the chanserv_trio of another source tree, beside this one's",
    )
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--hold", nargs=2, metavar=("URL", "N"), help=argparse.SUPPRESS)
    parser.add_argument("--report", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        trio.run(serve)
        return
    if args.hold:
        trio.run(hold, args.hold[0], int(args.hold[1]), False)
        return
    count = args.sources
    if args.baseline is not None:
        try:
            baseline = trees.source_tree(args.baseline)
        except ValueError as error:
            parser.error(f"--baseline: {error}")
        compare(baseline, count)
        return
    used = measure(count)
    if args.report:
        print(json.dumps({"package": trees.imported_package(), **used}))
        return
    client, server, generator = used["client"], used["server"], used["generator"]
    print(f"{count:,} idle open sources ({trees.PACKAGE} of {trees.imported_package()}):")
    print(f"  client: {client / 1e6:.1f} MB, {client / count:,.0f} B per source")
    print(f"  server: {server / 1e6:.1f} MB, {server / count:,.0f} B per source")
    print(f"  server, beyond the application's generator: {(server - generator) / count:,.0f} B")
    print(
        f"  (the generator: {generator / count:,.0f} B; a bare trio task waiting on an "
        f"Event: {used['task'] / count:,.0f} B)"
    )


if __name__ == "__main__":
    main()
