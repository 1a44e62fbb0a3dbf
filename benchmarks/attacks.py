"""What a hostile peer can make a server hold: its RSS growth beside the link's budget.

Run as ``python -m benchmarks.attacks [--only NAME ...]``. For each attack a fresh
server (a ``Multiplexer`` with default settings and budget, LZ4 asked for, a chanserv
``Server`` and a handler that never reads) runs in its own process; this process
attacks it over TCP loopback with a raw peer built from the wire ``Connection``, lets it
settle, reads the server's ``VmRSS`` from ``/proc/<pid>/status`` and asks it for its
links' ``bytes_held`` and ``memory_budget`` (``LinkStatistics``). A well-behaved client
then posts a request to the same server and checks every frame of the answer while the
attacker's link is still up. The "today" column is the figure the hardening issue
measured on the tree before the budget.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import attrs
import trio
import trio.lowlevel

import chanserv_trio as cs
from chanserv_trio.chanserv._envelope import SOURCE_WINDOW_TAG, Request, encode_request
from chanserv_trio.link._options import LinkOptions
from chanserv_trio.wire._codec import ErrorCode, FrameType, encode_frame
from chanserv_trio.wire._compression import lz4_available
from chanserv_trio.wire._connection import Connection
from chanserv_trio.wire._events import ConnectionTerminated, Event, StreamReset

SERVICE = "chanserv"
SINK = "sink"
MIB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


# -------------------------------------------------------------------- the server


async def serve() -> None:
    """The server process: serve until stdin closes; answer ``stats`` lines."""

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        if request == b"slow":  # a request that takes its time: its master stays open
            await trio.sleep_forever()

        async def frames() -> AsyncIterator[bytes]:
            yield request
            yield b"done"

        yield cs.Source(b"answer", frames())

    async def sink(stream: cs.LinkStream) -> None:
        await trio.sleep_forever()

    async with cs.Multiplexer(shutdown_grace=0) as mpx:
        server = cs.Server(mpx, compression=lz4_available())
        await server.listen_and_serve(SERVICE, source_fn)
        mpx.handle(SINK, sink)
        address = await mpx.listen("tcp://127.0.0.1:0")
        peak = {"held": 0, "budget": 0}

        async def sample() -> None:
            # The most any link held, sampled every few milliseconds.
            while True:
                for link in mpx.links:
                    stats = link.statistics()
                    peak["held"] = max(peak["held"], stats.bytes_held)
                    peak["budget"] = stats.memory_budget
                await trio.sleep(0.005)

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            print(address, flush=True)
            while True:
                line = await trio.to_thread.run_sync(sys.stdin.readline)
                if not line:
                    nursery.cancel_scope.cancel()
                    return
                print(json.dumps(peak), flush=True)


# ------------------------------------------------------------------ the attacker


@attrs.define
class Peer:
    """A raw peer: a bare ``Connection`` over a TCP stream."""

    conn: Connection
    stream: trio.SocketStream
    events: list[Event] = attrs.Factory(list)

    async def flush(self) -> None:
        data = b"".join(self.conn.take_outgoing())
        if data:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.stream.send_all(data)

    async def pump(self) -> None:
        """Read what the server sends (never consuming its messages)."""
        with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            while True:
                data = await self.stream.receive_some()
                if not data:
                    return
                try:
                    self.events.extend(self.conn.receive_data(data))
                except cs.RemoteProtocolError:
                    return
                await self.flush()

    def outcome(self) -> str:
        closed = [e for e in self.events if isinstance(e, ConnectionTerminated)]
        resets = [e for e in self.events if isinstance(e, StreamReset)]
        if closed and closed[0].code:
            return f"closed with {ErrorCode(closed[0].code).name}"
        if resets:
            names = ", ".join(sorted({ErrorCode(e.status.code).name for e in resets}))
            return f"{len(resets)} streams reset ({names})"
        return "up, back-pressure"


async def connect(
    address: str, nursery: trio.Nursery, *, compression: bool = False, reading: bool = True
) -> Peer:
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    settings = cs.Settings(compression=compression)
    peer = Peer(Connection(initiator=True, settings=settings), stream)
    await peer.flush()
    data = await stream.receive_some()
    peer.events.extend(peer.conn.receive_data(data))
    await peer.flush()
    if reading:
        nursery.start_soon(peer.pump)
    return peer


def request(window: int | None = None, body: bytes = b"attack") -> bytes:
    tags = {} if window is None else {SOURCE_WINDOW_TAG: str(window)}
    return encode_request(Request(body, None, tags))


async def fill(peer: Peer, streams: list[int], *, more: bool, per_stream: int, chunk: int) -> int:
    """Send on ``streams`` as far as their windows let, up to ``per_stream`` bytes each,
    until no window opens for a while; returns the bytes sent (as DATA payload)."""
    sent = dict.fromkeys(streams, 0)
    quiet = 0
    while quiet < 20:
        progressed = False
        for sid in streams:
            size = min(peer.conn.send_window(sid), chunk, per_stream - sent[sid])
            if size > 0 and (more or size == chunk):
                peer.conn.send_data(sid, bytes(size), more=more)
                sent[sid] += size
                progressed = True
        await peer.flush()
        if progressed:
            quiet = 0
            await trio.lowlevel.checkpoint()
        else:
            quiet += 1
            await trio.sleep(0.05)
    return sum(sent.values())


async def lz4_bomb_on_requests(address: str, nursery: trio.Nursery) -> tuple[Peer, str]:
    peer = await connect(address, nursery, compression=True)
    masters = [peer.conn.open_stream(SERVICE, request(body=b"slow")) for _ in range(3)]
    sent = await fill(peer, masters, more=True, per_stream=99 * MIB, chunk=MIB)
    return peer, f"{sent / MIB:.0f} MiB claimed in {peer.conn.bytes_sent / MIB:.1f} MiB"


async def lz4_bomb_on_unread_streams(address: str, nursery: trio.Nursery) -> tuple[Peer, str]:
    peer = await connect(address, nursery, compression=True)
    streams = [peer.conn.open_stream(SINK, b"") for _ in range(8)]
    sent = await fill(peer, streams, more=True, per_stream=99 * MIB, chunk=MIB)
    return peer, f"{sent / MIB:.0f} MiB claimed in {peer.conn.bytes_sent / MIB:.1f} MiB"


async def unfinished_on_masters(address: str, nursery: trio.Nursery) -> tuple[Peer, str]:
    peer = await connect(address, nursery)
    masters = [peer.conn.open_stream(SERVICE, request(body=b"slow")) for _ in range(3)]
    sent = await fill(peer, masters, more=True, per_stream=64 * MIB, chunk=MIB)
    finished = [peer.conn.open_stream(SERVICE, request(window=4)) for _ in range(4)]
    await peer.flush()
    await trio.sleep(0.5)
    children = 0
    for index in range(40):
        parent = finished[index % 4]
        if peer.conn.is_open(parent):
            peer.conn.open_stream("", b"", parent=parent)
            children += 1
    await peer.flush()
    return peer, f"{sent / MIB:.1f} MiB sent, {children} children opened"


async def unread_messages(address: str, nursery: trio.Nursery) -> tuple[Peer, str]:
    peer = await connect(address, nursery)
    streams = [peer.conn.open_stream(SINK, b"") for _ in range(200)]
    sent = await fill(peer, streams, more=False, per_stream=MIB, chunk=256 << 10)
    return peer, f"{sent / MIB:.0f} MiB of whole messages sent of 200 MiB"


async def ping_flood(address: str, nursery: trio.Nursery) -> tuple[Peer, str]:
    peer = await connect(address, nursery, reading=False)
    batch = encode_frame(FrameType.PING, 0, 0, bytes(8)) * 4096
    sent = 0

    async def flood() -> None:
        nonlocal sent
        while sent < 30 * MIB:
            await peer.stream.send_all(batch)
            sent += len(batch)

    with trio.move_on_after(3):
        await flood()
    return peer, f"{sent / MIB:.1f} MiB of PINGs taken of 30"


async def unread_requests(address: str, nursery: trio.Nursery) -> tuple[Peer, str]:
    peer = await connect(address, nursery)
    for _ in range(30):
        for _ in range(100):
            peer.conn.open_stream(SERVICE, request(window=1))
        await peer.flush()
        await trio.sleep(0.01)
    return peer, "3,000 requests opened"


async def trickle(address: str, nursery: trio.Nursery) -> tuple[Peer, str]:
    peer = await connect(address, nursery)
    sid = peer.conn.open_stream(SINK, b"")
    await peer.flush()
    frame = encode_frame(FrameType.DATA, 0, sid, bytes(MIB))
    size = 256 << 10
    for index in range(size):
        await peer.stream.send_all(frame[index : index + 1])
        if index % 64 == 0:
            await trio.lowlevel.checkpoint()
    return peer, f"{size >> 10} KiB trickled in 1-byte writes"


#: name, what the peer does, the issue's figure, the attack.
ATTACKS: list[tuple[str, str, str, Callable[[str, trio.Nursery], Awaitable[tuple[Peer, str]]]]] = [
    (
        "lz4-requests",
        "LZ4 bomb (1 MiB of zeros a chunk, MORE) on 3 requests",
        "1.1 MiB pins +272 MiB",
        lz4_bomb_on_requests,
    ),
    (
        "lz4-unread",
        "LZ4 bomb on 8 streams of a handler that never reads",
        "(as above)",
        lz4_bomb_on_unread_streams,
    ),
    (
        "masters",
        "3 requests, 64 MiB unfinished on each master; 40 children",
        "+196 MiB; 40 children stay open",
        unfinished_on_masters,
    ),
    (
        "unread",
        "whole messages on 200 streams nobody reads",
        "(200 MiB by the windows)",
        unread_messages,
    ),
    ("pings", "floods PINGs and stops reading", "21 MB queued, +86 MiB", ping_flood),
    (
        "requests",
        "opens 3,000 requests and never reads",
        "13.4 KiB a request",
        unread_requests,
    ),
    (
        "trickle",
        "trickles an incomplete frame in 1-byte writes",
        "44x its size",
        trickle,
    ),
]


def rss(pid: int, field: str = "VmRSS") -> int:
    """The process's resident set size (``VmHWM``: its peak so far), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


async def well_behaved(address: str) -> bool:
    async with cs.Multiplexer(shutdown_grace=0) as mpx:
        await mpx.join(address, redial=False)
        client = cs.Client(mpx)
        async with client.lookup_and_post(SERVICE, b"hello") as sources:
            frames = [frame async for source in sources async for frame in source]
        return frames == [b"hello", b"done"]


def start_server() -> subprocess.Popen[str]:
    """A fresh server process (this tree's package: it runs from the tree's root)."""
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.attacks", "--serve"],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def stop_server(server: subprocess.Popen[str]) -> None:
    assert server.stdin is not None
    server.stdin.close()
    try:
        server.wait(5)
    except subprocess.TimeoutExpired:
        server.kill()
        server.wait()


async def run_one(
    server: subprocess.Popen[str],
    attack: Callable[[str, trio.Nursery], Awaitable[tuple[Peer, str]]],
) -> dict[str, object]:
    assert server.stdin is not None and server.stdout is not None
    stdin, stdout = server.stdin, server.stdout

    def stats() -> dict[str, int]:
        stdin.write("stats\n")
        stdin.flush()
        result: dict[str, int] = json.loads(stdout.readline())
        return result

    address = (await trio.to_thread.run_sync(stdout.readline)).strip()
    served_before = await well_behaved(address)  # warm up: the same code paths
    await trio.sleep(0.3)
    base = rss(server.pid)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(120):
            peer, note = await attack(address, nursery)
        await trio.sleep(1.5)
        grown = rss(server.pid) - base
        peak = rss(server.pid, "VmHWM") - base
        held = await trio.to_thread.run_sync(stats)
        served = False
        with trio.move_on_after(20):
            served = served_before and await well_behaved(address)
        outcome = peer.outcome()
        nursery.cancel_scope.cancel()
    return {
        "growth": grown,
        "peak": peak,
        "held": held["held"],
        "budget": held["budget"] or LinkOptions().budget(),
        "served": served,
        "outcome": outcome,
        "note": note,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--only", nargs="*", help="attacks to run (default: all)")
    args = parser.parse_args()
    if args.serve:
        trio.run(serve)
        return
    print(
        "| what the peer does | today | server RSS growth: peak / settled "
        "| link held, peak (stats) | budget | outcome | client served |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name, what, today, attack in ATTACKS:
        if args.only and name not in args.only:
            continue
        server = start_server()
        try:
            result = trio.run(run_one, server, attack)
        finally:
            stop_server(server)
        growth = int(result["growth"])  # type: ignore[call-overload]
        peak = int(result["peak"])  # type: ignore[call-overload]
        held = int(result["held"])  # type: ignore[call-overload]
        budget = int(result["budget"])  # type: ignore[call-overload]
        print(
            f"| {what} ({result['note']}) | {today} "
            f"| {peak / MIB:+.1f} / {growth / MIB:+.1f} MiB "
            f"| {held / MIB:.1f} MiB | {budget / MIB:.0f} MiB | {result['outcome']} "
            f"| {'yes' if result['served'] else 'NO'} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
