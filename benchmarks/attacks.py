"""What a hostile peer can make a server hold: its RSS growth beside the link's budget.

Run as ``python -m benchmarks.attacks [--only NAME ...]``. For each attack a fresh
server (a ``Multiplexer`` with default settings and budget, LZ4 asked for, a chanserv
``Server`` and a handler that never reads) runs in its own process, listening on TCP,
on TCP with ``accept_offers=True`` and on WebSocket; this process attacks it over
loopback with a raw peer built from the wire ``Connection`` (or wsproto), lets it
settle, reads the server's ``VmRSS`` from ``/proc/<pid>/status`` and asks it for its
links' ``bytes_held`` and ``memory_budget`` (``LinkStatistics``), the names they hold,
the requests it started, the resets it refused and its CPU time. The router attacks
run a router process in front of a backend process (the router dials it) and read the
router. A well-behaved client then posts a request to the same server and checks every
frame of the answer while the attacker's link is still up. The "today" column is the
figure the hardening issue measured on the tree before the budget.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Protocol

import attrs
import trio
import trio.lowlevel
import wsproto
import wsproto.events as wsevents
from wsproto.utilities import LocalProtocolError

import chanserv_trio as cs
from chanserv_trio.chanserv._envelope import SOURCE_WINDOW_TAG, Request, encode_request
from chanserv_trio.link._options import MAX_PEER_SERVICES, LinkOptions
from chanserv_trio.wire._codec import ErrorCode, FrameType, Status, encode_frame
from chanserv_trio.wire._compression import lz4_available
from chanserv_trio.wire._connection import Connection
from chanserv_trio.wire._events import (
    ConnectionTerminated,
    Event,
    PingAcknowledged,
    StreamReset,
)

SERVICE = "chanserv"
SINK = "sink"
MIB = 1 << 20
ROOT = Path(__file__).resolve().parent.parent


# -------------------------------------------------------------------- the server


async def serve(router: bool, backend: str | None, max_peer_services: int) -> None:
    """The server process: serve until stdin closes; answer ``stats`` lines.

    It listens on TCP (default settings), on TCP with ``accept_offers=True`` and on
    WebSocket, and prints the three addresses as one JSON line. As a router it serves
    nothing itself: it joins ``backend`` and relays what that node serves.
    """

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        if request == b"slow":  # a request that takes its time: its master stays open
            await trio.sleep_forever()

        async def frames() -> AsyncIterator[bytes]:
            yield request
            yield b"done"

        yield cs.Source(b"answer", frames())

    async def sink(stream: cs.LinkStream) -> None:
        await trio.sleep_forever()

    async with cs.Multiplexer(
        shutdown_grace=0, router=router, max_peer_services=max_peer_services
    ) as mpx:
        server: cs.Server | None = None
        if backend is None:
            server = cs.Server(mpx, compression=lz4_available())
            await server.listen_and_serve(SERVICE, source_fn)
            mpx.handle(SINK, sink)
        else:
            await mpx.join(backend)
            while not mpx.links_offering(SERVICE):  # noqa: ASYNC110 - the node's state
                await trio.sleep(0.01)
        addresses = {
            "tcp": await mpx.listen("tcp://127.0.0.1:0"),
            "trusted": await mpx.listen("tcp://127.0.0.1:0", accept_offers=True),
            "ws": await mpx.listen("ws://127.0.0.1:0/links"),
        }
        peak = {"held": 0, "budget": 0, "names": 0, "ignored": 0}

        async def sample() -> None:
            # The most any link held, sampled every few milliseconds.
            while True:
                ignored = 0
                for link in mpx.links:
                    stats = link.statistics()
                    peak["held"] = max(peak["held"], stats.bytes_held)
                    peak["budget"] = stats.memory_budget
                    peak["names"] = max(peak["names"], len(link.peer_services))
                    ignored += link.offers_ignored
                peak["ignored"] = max(peak["ignored"], ignored)
                await trio.sleep(0.005)

        def report() -> dict[str, object]:
            totals = mpx.totals()
            return {
                **peak,
                # Names this node relays to the links it dialed (a router's backends).
                "forwarded": sum(
                    sum(link.advertised.values()) for link in mpx.links if link.joined_url
                ),
                "requests": 0 if server is None else server.statistics().requests,
                "resets_refused": mpx.statistics().resets_refused,
                "links_opened": totals.links_opened,
                "links_closed": totals.links_closed,
                "cpu": time.process_time(),
            }

        async with trio.open_nursery() as nursery:
            nursery.start_soon(sample)
            print(json.dumps(addresses), flush=True)
            while True:
                line = await trio.to_thread.run_sync(sys.stdin.readline)
                if not line:
                    nursery.cancel_scope.cancel()
                    return
                print(json.dumps(report()), flush=True)


# ------------------------------------------------------------------ the attacker


@attrs.define
class Peer:
    """A raw peer: a bare ``Connection`` over a TCP stream."""

    conn: Connection
    stream: trio.SocketStream
    events: list[Event] = attrs.Factory(list)
    #: Set when the server closed the connection (or broke the protocol).
    closed: trio.Event = attrs.Factory(trio.Event)
    #: Set when the server answered one of our PINGs (or closed the connection).
    answered: trio.Event = attrs.Factory(trio.Event)
    #: The outcome while the link is up and nothing was reset.
    up: str = "up, back-pressure"

    async def flush(self) -> None:
        data = b"".join(self.conn.take_outgoing())
        if data:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError):
                await self.stream.send_all(data)

    async def pump(self) -> None:
        """Read what the server sends (never consuming its messages)."""
        try:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                while True:
                    data = await self.stream.receive_some()
                    if not data:
                        return
                    try:
                        events = self.conn.receive_data(data)
                    except cs.RemoteProtocolError:
                        return
                    self.events.extend(events)
                    if any(isinstance(event, PingAcknowledged) for event in events):
                        self.answered.set()
                    await self.flush()
        finally:
            self.closed.set()
            self.answered.set()

    def outcome(self) -> str:
        closed = [e for e in self.events if isinstance(e, ConnectionTerminated)]
        resets = [e for e in self.events if isinstance(e, StreamReset)]
        if closed and closed[0].code:
            return f"closed with {ErrorCode(closed[0].code).name}"
        if resets:
            names = ", ".join(sorted({ErrorCode(e.status.code).name for e in resets}))
            return f"{len(resets)} streams reset ({names})"
        return self.up


#: Where the churning attackers connect from: another loopback address than the
#: well-behaved client's (127.0.0.1), as a real attacker's differs from the clients'.
#: A client sharing the attacker's address shares its budget (and is refused with it).
CHURN_SOURCE = "127.0.0.2"


async def connect(
    address: str,
    nursery: trio.Nursery,
    *,
    compression: bool = False,
    reading: bool = True,
    source: str | None = None,
) -> Peer:
    """A raw peer linked to ``address`` (handshake done), read by a task of ``nursery``;
    from the local address ``source`` if given."""
    host, port = address.removeprefix("tcp://").rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port), local_address=source)
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


async def lz4_bomb_on_requests(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    peer = await connect(target.tcp, nursery, compression=True)
    masters = [peer.conn.open_stream(SERVICE, request(body=b"slow")) for _ in range(3)]
    sent = await fill(peer, masters, more=True, per_stream=99 * MIB, chunk=MIB)
    return peer, f"{sent / MIB:.0f} MiB claimed in {peer.conn.bytes_sent / MIB:.1f} MiB"


async def lz4_bomb_on_unread_streams(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    peer = await connect(target.tcp, nursery, compression=True)
    streams = [peer.conn.open_stream(SINK, b"") for _ in range(8)]
    sent = await fill(peer, streams, more=True, per_stream=99 * MIB, chunk=MIB)
    return peer, f"{sent / MIB:.0f} MiB claimed in {peer.conn.bytes_sent / MIB:.1f} MiB"


async def unfinished_on_masters(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    peer = await connect(target.tcp, nursery)
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


async def unread_messages(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    peer = await connect(target.tcp, nursery)
    streams = [peer.conn.open_stream(SINK, b"") for _ in range(200)]
    sent = await fill(peer, streams, more=False, per_stream=MIB, chunk=256 << 10)
    return peer, f"{sent / MIB:.0f} MiB of whole messages sent of 200 MiB"


async def ping_flood(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    peer = await connect(target.tcp, nursery, reading=False)
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


async def unread_requests(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    peer = await connect(target.tcp, nursery)
    for _ in range(30):
        for _ in range(100):
            peer.conn.open_stream(SERVICE, request(window=1))
        await peer.flush()
        await trio.sleep(0.01)
    return peer, "3,000 requests opened"


async def trickle(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    peer = await connect(target.tcp, nursery)
    sid = peer.conn.open_stream(SINK, b"")
    await peer.flush()
    frame = encode_frame(FrameType.DATA, 0, sid, bytes(MIB))
    size = 256 << 10
    for index in range(size):
        await peer.stream.send_all(frame[index : index + 1])
        if index % 64 == 0:
            await trio.lowlevel.checkpoint()
    return peer, f"{size >> 10} KiB trickled in 1-byte writes"


async def many_names(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    return await advertise_names(target.tcp, target.stats, nursery)


async def many_names_trusted(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    return await advertise_names(target.trusted, target.stats, nursery)


async def advertise_names(
    address: str, stats: Callable[[], Awaitable[dict[str, object]]], nursery: trio.Nursery
) -> tuple[Outcome, str]:
    """100,000 SERVICE frames, 5,000 at a time, until the server closes the link."""
    peer = await connect(address, nursery)
    peer.up = "up"
    sent = 0
    for start in range(0, 100_000, 5_000):
        if peer.closed.is_set():
            break
        for index in range(start, start + 5_000):
            peer.conn.advertise(f"service-{index:06d}")
        sent += 5_000
        await peer.flush()
        await trio.sleep(0.01)
    if not peer.closed.is_set():  # a PING behind the names: answered once all were read
        peer.conn.ping(b"names?!!")
        await peer.flush()
        with trio.move_on_after(60):
            await peer.answered.wait()
    await trio.sleep(0.1)  # (the server samples every 5 ms)
    ignored = int((await stats())["ignored"])  # type: ignore[call-overload]
    return peer, f"{sent:,} names sent, {ignored:,} ignored"


@attrs.define
class Crowd:
    """Many raw peers, one after another, from one address."""

    links: int = 0
    closed: collections.Counter[str] = attrs.Factory(collections.Counter)

    def outcome(self) -> str:
        if not self.closed:
            return "up"
        return "; ".join(f"{count} links {what}" for what, count in self.closed.most_common())


async def rst_churn(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    """33 links at a time from 127.0.0.2 (``CHURN_SOURCE``): each opens requests and
    resets them at once, 50 every 10 ms; a link closed for it is replaced a quarter of a
    second later. The last links stay up."""
    links_at_once, seconds, batch, redial = 33, 10.0, 50, 0.25
    crowd = Crowd()
    before = await target.stats()
    started = trio.current_time()

    async def attacker() -> None:
        while trio.current_time() - started < seconds:
            try:
                peer = await connect(target.tcp, nursery, source=CHURN_SOURCE)
            except (OSError, trio.BrokenResourceError, cs.ChanservError):
                crowd.closed["refused at connect"] += 1
                await trio.sleep(redial)
                continue
            crowd.links += 1
            closing = False
            while not closing and trio.current_time() - started < seconds:
                try:
                    for _ in range(batch):
                        sid = peer.conn.open_stream(SERVICE, request(body=b"slow"))
                        peer.conn.reset_stream(sid, Status(ErrorCode.CANCEL))
                except cs.LocalProtocolError:  # the server closed the connection
                    closing = True
                await peer.flush()
                await trio.sleep(0.01)
            if not closing and not peer.closed.is_set():
                return  # time is up: this link stays
            await peer.closed.wait()
            crowd.closed[peer.outcome()] += 1
            await trio.sleep(redial)

    async with trio.open_nursery() as attackers:
        for _ in range(links_at_once):
            attackers.start_soon(attacker)
    after = await target.stats()
    elapsed = trio.current_time() - started
    requests = int(after["requests"]) - int(before["requests"])  # type: ignore[call-overload]
    refused = int(after["resets_refused"]) - int(before["resets_refused"])  # type: ignore[call-overload]
    # The address's budget (host_reset_burst and host_reset_rate, by default) lets
    # through its burst, its rate, and the request on which each new link is closed.
    bound = 2000 + 200 * elapsed + crowd.links
    return crowd, (
        f"{crowd.links} links in {elapsed:.0f} s: {requests:,} requests started, "
        f"{requests / elapsed:,.0f}/s, bound {bound:,.0f}; "
        f"{refused} resets refused over the address"
    )


async def close_churn(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    """As ``rst_churn``, but resetting nothing: each link opens 100 requests and hangs
    up 50 ms later, and is replaced at once."""
    links_at_once, seconds, batch = 33, 10.0, 100
    crowd = Crowd()
    before = await target.stats()
    started = trio.current_time()

    async def attacker() -> None:
        while trio.current_time() - started < seconds:
            try:
                peer = await connect(target.tcp, nursery, source=CHURN_SOURCE)
            except (OSError, trio.BrokenResourceError, cs.ChanservError):
                crowd.closed["refused at connect"] += 1
                await trio.sleep(0.01)
                continue
            crowd.links += 1
            with contextlib.suppress(cs.LocalProtocolError):
                for _ in range(batch):
                    peer.conn.open_stream(SERVICE, request(body=b"slow"))
            await peer.flush()
            await trio.sleep(0.05)
            if trio.current_time() - started >= seconds:
                return  # time is up: this link stays
            if peer.closed.is_set():
                crowd.closed[peer.outcome()] += 1
            await peer.stream.aclose()

    async with trio.open_nursery() as attackers:
        for _ in range(links_at_once):
            attackers.start_soon(attacker)
    after = await target.stats()
    elapsed = trio.current_time() - started
    requests = int(after["requests"]) - int(before["requests"])  # type: ignore[call-overload]
    return crowd, (
        f"{crowd.links} links in {elapsed:.0f} s: {requests:,} requests started, "
        f"{requests / elapsed:,.0f}/s"
    )


async def router_names(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    return await names_to_router(target, target.tcp, nursery)


async def router_names_trusted(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    return await names_to_router(target, target.trusted, nursery)


async def router_names_at_limit(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    return await names_to_router(target, target.trusted, nursery, names=MAX_PEER_SERVICES)


async def names_to_router(
    target: Target, address: str, nursery: trio.Nursery, *, names: int = 3000
) -> tuple[Outcome, str]:
    """``names`` names, one SERVICE frame each and a PING behind them: the router's CPU
    time and the wall time until it answered the PING, and the names its backend
    heard."""
    peer = await connect(address, nursery)
    peer.up = "up"
    before = await target.stats()
    heard = int((await target.backend_stats())["ignored"])  # type: ignore[call-overload]
    started = trio.current_time()
    for index in range(names):
        peer.conn.advertise(f"offered-{index:04d}")
    peer.conn.ping(b"names?!!")
    await peer.flush()
    with trio.move_on_after(60):
        await peer.answered.wait()
    wall = trio.current_time() - started
    # The backend takes no offers from the router's link (it did not dial it): it
    # counts the names it heard as ignored.
    forwarded, quiet = heard, 0
    while quiet < 5:
        await trio.sleep(0.1)
        now = int((await target.backend_stats())["ignored"])  # type: ignore[call-overload]
        quiet = quiet + 1 if now == forwarded else 0
        forwarded = now
    after = await target.stats()
    cpu = float(after["cpu"]) - float(before["cpu"])  # type: ignore[arg-type]
    return peer, (
        f"router CPU {cpu:.2f} s, PING behind the names answered in {wall:.2f} s; "
        f"{forwarded - heard:,} names reached the backend"
    )


async def websocket_message(target: Target, nursery: trio.Nursery) -> tuple[Outcome, str]:
    """After the WebSocket and link handshakes, one binary message of 100 MiB in 64 KiB
    fragments, never finished."""
    host, port = target.ws.removeprefix("ws://").split("/")[0].rsplit(":", 1)
    stream = await trio.open_tcp_stream(host, int(port))
    stream.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    peer = WebSocketPeer(wsproto.WSConnection(wsproto.ConnectionType.CLIENT), stream)
    await stream.send_all(peer.ws.send(wsevents.Request(host=host, target="/links")))
    nursery.start_soon(peer.pump)
    await peer.accepted.wait()
    conn = Connection(initiator=True)
    await peer.send(b"".join(conn.take_outgoing()))  # HELLO, as one message
    while not conn.handshake_done and not peer.closed.is_set():
        if peer.messages:
            conn.receive_data(peer.messages.pop(0))
        else:
            await trio.sleep(0.01)
    sent = 0
    piece = bytes(64 << 10)
    while sent < 100 * MIB and not peer.closed.is_set():
        try:
            await stream.send_all(
                peer.ws.send(wsevents.BytesMessage(piece, message_finished=False))
            )
        except (trio.BrokenResourceError, trio.ClosedResourceError, LocalProtocolError):
            break
        sent += len(piece)
        await trio.lowlevel.checkpoint()
    return peer, f"{sent >> 10:,} KiB of the message sent before the close"


@attrs.define
class WebSocketPeer:
    """A raw WebSocket client (wsproto over a TCP stream)."""

    ws: wsproto.WSConnection
    stream: trio.SocketStream
    messages: list[bytes] = attrs.Factory(list)
    accepted: trio.Event = attrs.Factory(trio.Event)
    closed: trio.Event = attrs.Factory(trio.Event)
    close_code: int | None = None
    _partial: bytearray = attrs.Factory(bytearray)

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(self.ws.send(wsevents.BytesMessage(data)))

    async def pump(self) -> None:
        try:
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                while data := await self.stream.receive_some():
                    self.ws.receive_data(data)
                    for event in self.ws.events():
                        if isinstance(event, wsevents.AcceptConnection):
                            self.accepted.set()
                        elif isinstance(event, wsevents.BytesMessage):
                            self._partial += event.data
                            if event.message_finished:
                                self.messages.append(bytes(self._partial))
                                self._partial.clear()
                        elif isinstance(event, wsevents.CloseConnection):
                            self.close_code = event.code
                            return
        finally:
            self.accepted.set()
            self.closed.set()

    def outcome(self) -> str:
        if self.close_code is not None:
            return f"WebSocket closed with {self.close_code}"
        return "closed" if self.closed.is_set() else "up, back-pressure"


class Outcome(Protocol):
    """What an attack's peer saw of the server in the end."""

    def outcome(self) -> str: ...


@attrs.frozen
class Target:
    """The server under attack: its addresses, and its statistics on demand."""

    tcp: str
    trusted: str
    ws: str
    stats: Callable[[], Awaitable[dict[str, object]]]
    #: A router's backend's statistics (a router's attacks only).
    backend_stats: Callable[[], Awaitable[dict[str, object]]]


AttackFn = Callable[[Target, trio.Nursery], Awaitable[tuple[Outcome, str]]]


@attrs.frozen
class Attack:
    name: str
    #: What the peer does.
    what: str
    #: The figure the hardening issue measured before the budget.
    today: str
    run: AttackFn
    #: The server is a router in front of a backend.
    router: bool = False
    #: The server's ``max_peer_services``.
    max_peer_services: int = MAX_PEER_SERVICES


ATTACKS: list[Attack] = [
    Attack(
        "lz4-requests",
        "LZ4 bomb (1 MiB of zeros a chunk, MORE) on 3 requests",
        "1.1 MiB pins +272 MiB",
        lz4_bomb_on_requests,
    ),
    Attack(
        "lz4-unread",
        "LZ4 bomb on 8 streams of a handler that never reads",
        "(as above)",
        lz4_bomb_on_unread_streams,
    ),
    Attack(
        "masters",
        "3 requests, 64 MiB unfinished on each master; 40 children",
        "+196 MiB; 40 children stay open",
        unfinished_on_masters,
    ),
    Attack(
        "unread",
        "whole messages on 200 streams nobody reads",
        "(200 MiB by the windows)",
        unread_messages,
    ),
    Attack("pings", "floods PINGs and stops reading", "21 MB queued, +86 MiB", ping_flood),
    Attack(
        "requests",
        "opens 3,000 requests and never reads",
        "13.4 KiB a request",
        unread_requests,
    ),
    Attack(
        "trickle",
        "trickles an incomplete frame in 1-byte writes",
        "44x its size",
        trickle,
    ),
    Attack(
        "names",
        "advertises 100,000 service names (default listener)",
        "+141 MiB while the link lives",
        many_names,
    ),
    Attack(
        "names-trusted",
        "advertises 100,000 service names (listener with accept_offers=True)",
        "(as above)",
        many_names_trusted,
    ),
    Attack(
        "churn",
        "RST-churns requests over 33 reconnecting links (10 s)",
        "4,974 requests started/s (per-link budget 100/s)",
        rst_churn,
    ),
    Attack(
        "hangup-churn",
        "opens 100 requests a link and hangs up, over 33 reconnecting links (10 s)",
        "(not measured)",
        close_churn,
    ),
    Attack(
        "router",
        "advertises 3,000 names to a router (default listener)",
        "7.5 s router CPU; all names forwarded to the backends",
        router_names,
        router=True,
    ),
    Attack(
        "router-trusted",
        "advertises 3,000 names to a router (accept_offers=True, max_peer_services=10,000)",
        "(as above)",
        router_names_trusted,
        router=True,
        max_peer_services=10_000,
    ),
    Attack(
        "router-limit",
        "advertises 1,000 names (its limit) to a router (accept_offers=True; defaults)",
        "(not measured)",
        router_names_at_limit,
        router=True,
    ),
    Attack(
        "websocket",
        "one unfinished 100 MiB WebSocket message after the handshake",
        "+103 MiB, held indefinitely",
        websocket_message,
    ),
]


def rss(pid: int, field: str = "VmRSS") -> int:
    """The process's resident set size (``VmHWM``: its peak so far), in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no {field}")


async def well_behaved(address: str, max_peer_services: int = MAX_PEER_SERVICES) -> bool:
    """A client posts a request and checks every frame of the answer. It takes as many
    names as the server does (a router's clients hear what it relays)."""
    async with cs.Multiplexer(shutdown_grace=0, max_peer_services=max_peer_services) as mpx:
        await mpx.join(address, redial=False)
        client = cs.Client(mpx)
        async with client.lookup_and_post(SERVICE, b"hello") as sources:
            frames = [frame async for source in sources async for frame in source]
        return frames == [b"hello", b"done"]


def _launch(args: tuple[str, ...]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "benchmarks.attacks", "--serve", *args],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


@attrs.define
class ServerProcess:
    """A fresh server process (this tree's package: it runs from the tree's root)."""

    process: subprocess.Popen[str]
    addresses: dict[str, str] = attrs.Factory(dict)
    _lock: trio.Lock = attrs.Factory(trio.Lock)

    @classmethod
    async def start(cls, *args: str) -> ServerProcess:
        server = cls(await trio.to_thread.run_sync(_launch, args))
        assert server.process.stdout is not None
        line = await trio.to_thread.run_sync(server.process.stdout.readline)
        if not line:
            server.stop()
            raise RuntimeError("the server process did not start")
        server.addresses = json.loads(line)
        return server

    async def stats(self) -> dict[str, object]:
        stdin, stdout = self.process.stdin, self.process.stdout
        assert stdin is not None and stdout is not None

        def ask() -> dict[str, object]:
            stdin.write("stats\n")
            stdin.flush()
            result: dict[str, object] = json.loads(stdout.readline())
            return result

        async with self._lock:
            return await trio.to_thread.run_sync(ask)

    def stop(self) -> None:
        assert self.process.stdin is not None
        self.process.stdin.close()
        try:
            self.process.wait(5)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


async def run_one(attack: Attack) -> dict[str, object]:
    async with contextlib.AsyncExitStack() as stack:
        backend: ServerProcess | None = None
        args = ["--max-peer-services", str(attack.max_peer_services)]
        if attack.router:
            backend = await ServerProcess.start()
            stack.callback(backend.stop)
            args += ["--router", "--backend", backend.addresses["tcp"]]
        server = await ServerProcess.start(*args)
        stack.callback(server.stop)
        return await attack_server(attack, server, backend)
    raise AssertionError("unreachable")  # (mypy: the exit stack could swallow)


async def attack_server(
    attack: Attack, server: ServerProcess, backend: ServerProcess | None
) -> dict[str, object]:
    pid = server.process.pid
    target = Target(
        server.addresses["tcp"],
        server.addresses["trusted"],
        server.addresses["ws"],
        server.stats,
        (backend or server).stats,
    )
    served_before = await well_behaved(
        target.tcp, attack.max_peer_services
    )  # warm up: the same code paths
    await trio.sleep(0.3)
    base = rss(pid)
    async with trio.open_nursery() as nursery:
        with trio.fail_after(120):
            peer, note = await attack.run(target, nursery)
        await trio.sleep(1.5)
        grown = rss(pid) - base
        peak = rss(pid, "VmHWM") - base
        held = await server.stats()
        served = "NO (it waited 20 s)"
        with trio.move_on_after(20):
            try:
                ok = served_before and await well_behaved(target.tcp, attack.max_peer_services)
                served = "yes" if ok else "NO (wrong frames)"
            except cs.ChanservError as exc:
                served = f"NO: {type(exc).__name__}"
        outcome = peer.outcome()
        nursery.cancel_scope.cancel()
    return {
        "growth": grown,
        "peak": peak,
        "held": held["held"],
        "budget": held["budget"] or LinkOptions().budget(),
        "names": held["names"],
        "served": served,
        "outcome": outcome,
        "note": note,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--router", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument(
        "--max-peer-services", type=int, default=MAX_PEER_SERVICES, help=argparse.SUPPRESS
    )
    parser.add_argument(
        "--only", nargs="*", help=f"attacks to run (default: all): {', '.join(NAMES)}"
    )
    args = parser.parse_args()
    if args.serve:
        trio.run(serve, args.router, args.backend, args.max_peer_services)
        return
    unknown = set(args.only or ()) - set(NAMES)
    if unknown:
        parser.error(f"no such attack: {', '.join(sorted(unknown))}")
    print(
        "| what the peer does | today | server RSS growth: peak / settled "
        "| link held, peak (stats) | budget | outcome | client served |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for attack in ATTACKS:
        if args.only and attack.name not in args.only:
            continue
        result = trio.run(run_one, attack)
        growth = int(result["growth"])  # type: ignore[call-overload]
        peak = int(result["peak"])  # type: ignore[call-overload]
        held = int(result["held"])  # type: ignore[call-overload]
        budget = int(result["budget"])  # type: ignore[call-overload]
        names = int(result["names"])  # type: ignore[call-overload]
        held_names = f", {names:,} names" if names else ""
        print(
            f"| {attack.what} ({result['note']}) | {attack.today} "
            f"| {peak / MIB:+.1f} / {growth / MIB:+.1f} MiB "
            f"| {held / MIB:.1f} MiB{held_names} | {budget / MIB:.0f} MiB "
            f"| {result['outcome']} | {result['served']} |",
            flush=True,
        )


NAMES = [attack.name for attack in ATTACKS]

if __name__ == "__main__":
    main()
