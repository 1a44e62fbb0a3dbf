"""Resumption end to end (docs/resumption.md): links cut, reset and stalled again and
again by a proxy carry every message once, in order; a resumption that cannot happen
ends every stream with ``ConnectionLost`` saying why, promptly.

Every message carries its sequence number and a CRC-32 of the rest, checked on arrival.
"""

from __future__ import annotations

import errno
import logging
import os
import ssl
import struct
import tempfile
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.lowlevel
import trustme
from faultproxy import CuttingProxy, Fault
from helpers import wait_until
from test_transport_interface import MemoryTransport

import chanserv_trio as cs
from chanserv_trio.link._link import Link
from chanserv_trio.transports._base import (
    Endpoint,
    TransportOptions,
    register_transport,
    unregister_transport,
)

_REQUEST = struct.Struct(">II")  # messages, bytes each
_SEQ = struct.Struct(">I")

#: Short enough that a stalled transport is found in well under a second.
CUTS = 3
FAST = {
    "keepalive_interval": 0.2,
    "keepalive_timeout": 0.6,
    "redial_backoff": (0.05, 2, 0.2),
    "shutdown_grace": 0.5,
}


def message(seq: int, size: int) -> bytes:
    body = _SEQ.pack(seq) + bytes([seq % 251]) * max(0, size - 8)
    return body + _SEQ.pack(zlib.crc32(body))


def check(data: bytes, expected_seq: int) -> None:
    body, crc = data[:-4], data[-4:]
    assert _SEQ.pack(zlib.crc32(body)) == crc, f"message {expected_seq} damaged"
    (seq,) = _SEQ.unpack_from(body)
    assert seq == expected_seq, f"expected message {expected_seq}, got {seq}"


async def flood(stream: cs.LinkStream) -> None:
    count, size = _REQUEST.unpack(await stream.receive())
    for seq in range(count):
        await stream.send(message(seq, size))
    stream.end()


async def echo(stream: cs.LinkStream) -> None:
    async for data in stream:
        await stream.send(data)
    stream.end()


async def fetch(mpx: cs.Multiplexer, count: int, size: int, service: str = "flood") -> int:
    """Ask for ``count`` messages of ``size`` bytes; check each; return how many came."""
    stream = await mpx.open_stream(service, b"")
    await stream.send(_REQUEST.pack(count, size))
    seq = 0
    async for data in stream:
        check(data, seq)
        seq += 1
    return seq


@pytest.fixture(scope="module")
def tls() -> tuple[ssl.SSLContext, ssl.SSLContext]:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return server, client


@asynccontextmanager
async def resuming_pair(
    *,
    kind: Fault = Fault.CUT,
    cut_every: int | None = None,
    cuts: int = 1 << 30,
    scheme: str = "tcp",
    tls: tuple[ssl.SSLContext, ssl.SSLContext] | None = None,
    server_options: dict[str, Any] | None = None,
    client_options: dict[str, Any] | None = None,
) -> AsyncIterator[tuple[cs.Multiplexer, cs.Multiplexer, CuttingProxy]]:
    """A server serving ``flood`` and ``echo`` and a client joined to it through a
    :class:`CuttingProxy` (a TCP or Unix socket relay, whatever runs over it), both
    resuming."""
    options: dict[str, Any] = {"resume_timeout": 10.0, **FAST}
    listen_options: dict[str, Any] = {}
    join_options: dict[str, Any] = {}
    if scheme in ("tls", "wss"):
        assert tls is not None
        listen_options["ssl_context"], join_options["ssl_context"] = tls
    path = "/" if scheme in ("ws", "wss") else ""
    with tempfile.TemporaryDirectory() as folder:
        async with cs.Multiplexer(**{**options, **(server_options or {})}) as server:
            server.handle("flood", flood)
            server.handle("echo", echo)
            if scheme == "unix":
                target: tuple[str, int] | str = os.path.join(folder, "server.sock")
                await server.listen(f"unix://{target}")
                listen_path: str | None = os.path.join(folder, "proxy.sock")
            else:
                url = await server.listen(f"{scheme}://127.0.0.1:0{path}", **listen_options)
                target = ("127.0.0.1", int(url.split(":")[2].split("/")[0]))
                listen_path = None
            proxy = CuttingProxy(
                target, kind=kind, cut_every=cut_every, cuts=cuts, listen_path=listen_path
            )
            async with trio.open_nursery() as nursery:
                proxy_url: str = await nursery.start(proxy.run)
                if scheme != "unix":
                    proxy_url = proxy_url.replace("tcp://", f"{scheme}://") + path
                async with cs.Multiplexer(**{**options, **(client_options or {})}) as client:
                    await client.join(proxy_url, **join_options)
                    yield server, client, proxy
                nursery.cancel_scope.cancel()


def the_link(mpx: cs.Multiplexer) -> Link:
    (link,) = mpx.links
    return link


# ----------------------------------------------------------- cuts, resumed


@pytest.mark.parametrize(
    ("scheme", "kind"),
    [
        ("tcp", Fault.CUT),
        ("tcp", Fault.RESET),
        ("unix", Fault.CUT),
        ("ws", Fault.RESET),
        ("tls", Fault.CUT),
        ("wss", Fault.CUT),
    ],
)
async def test_a_flood_survives_many_cuts(
    scheme: str, kind: Fault, tls: tuple[ssl.SSLContext, ssl.SSLContext]
) -> None:
    async with resuming_pair(kind=kind, cut_every=100_000, cuts=6, scheme=scheme, tls=tls) as (
        server,
        client,
        proxy,
    ):
        with trio.fail_after(20):
            assert await fetch(client, 4000, 200) == 4000
        assert proxy.breaks == 6
        # A break can land during a resuming handshake too (a reset drops what the
        # client had not read yet, the server's answer included): then the client tries
        # again, and the server resumes once more than the client.
        for mpx in (client, server):
            stats = the_link(mpx).statistics()
            assert 1 <= stats.resumptions <= proxy.breaks
            assert stats.detached_seconds > 0


async def test_heavy_messages_survive_cuts_inside_frames() -> None:
    async with resuming_pair(cut_every=700_000, cuts=5) as (_, client, proxy):
        with trio.fail_after(20):
            assert await fetch(client, 12, 600_000) == 12
        assert proxy.breaks == 5


async def test_a_stalled_transport_is_given_up_and_resumed() -> None:
    async with resuming_pair(kind=Fault.STALL, cut_every=100_000, cuts=2) as (_, client, proxy):
        with trio.fail_after(20):
            assert await fetch(client, 1500, 200) == 1500
        assert proxy.breaks == 2
        assert the_link(client).statistics().resumptions == 2


async def test_the_resume_buffer_stays_within_its_size() -> None:
    size = 64 << 10
    both = {"resume_buffer_size": size}
    async with resuming_pair(
        cut_every=200_000, cuts=4, server_options=both, client_options=both
    ) as (server, client, _):
        link = the_link(server)
        peak = 0

        async def watch() -> None:
            nonlocal peak
            while True:
                peak = max(peak, link.statistics().resume_buffered)
                await trio.lowlevel.checkpoint()

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch)
                assert await fetch(client, 300, 3000) == 300
                nursery.cancel_scope.cancel()
        assert 0 < peak <= size
        assert 0 < link.conn.resume_peak <= size
        assert link.statistics().resumptions >= 1


async def test_a_relayed_request_survives_cuts_on_both_hops() -> None:
    options: dict[str, Any] = {"resume_timeout": 10.0, **FAST}
    async with (
        cs.Multiplexer(**options) as server,
        cs.Multiplexer(router=True, **options) as router,
        cs.Multiplexer(**options) as client,
        trio.open_nursery() as nursery,
    ):
        server.handle("flood", flood)
        router_url = await router.listen("tcp://127.0.0.1:0", accept_offers=True)
        router_port = int(router_url.rsplit(":", 1)[1])
        # server -> router (the server joins the router) and client -> router.
        upstream = CuttingProxy(("127.0.0.1", router_port), cut_every=90_000, cuts=CUTS)
        downstream = CuttingProxy(("127.0.0.1", router_port), cut_every=130_000, cuts=CUTS)
        await server.join(await nursery.start(upstream.run))
        await client.join(await nursery.start(downstream.run))
        with trio.fail_after(20):
            assert await fetch(client, 3000, 150) == 3000
        assert upstream.breaks == 3 and downstream.breaks == 3
        assert the_link(server).statistics().resumptions >= 1
        assert the_link(client).statistics().resumptions >= 1
        nursery.cancel_scope.cancel()


async def test_what_happens_while_detached_takes_effect_on_resuming(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cancelled = trio.Event()

    async def hold(stream: cs.LinkStream) -> None:
        try:
            await stream.receive()
            await trio.sleep_forever()
        except BaseException:
            cancelled.set()
            raise

    caplog.set_level(logging.INFO, logger="chanserv_trio.link")
    async with resuming_pair() as (server, client, proxy):
        server.handle("hold", hold)
        stream = await client.open_stream("hold", b"")
        await stream.send(b"go")
        echoed = await client.open_stream("echo", b"")
        await echoed.send(b"before")
        with trio.fail_after(10):
            assert await echoed.receive() == b"before"
            proxy.down = True
            await proxy.fault()
            link = the_link(client)
            await wait_until(lambda: link.detached)
            # While detached: a message, an END and a RESET are queued, not lost.
            await echoed.send(b"while detached")
            echoed.end()
            stream.reset(cs.ErrorCode.CANCEL, "changed my mind")
            assert client.links == [link] and link.detached
            proxy.down = False
            await cancelled.wait()  # the RESET reached the server's handler
            assert await echoed.receive() == b"while detached"
            with pytest.raises(trio.EndOfChannel):
                await echoed.receive()
        assert link.statistics().resumptions == 1
    assert any("resumed after" in record.getMessage() for record in caplog.records)
    assert any("lost its transport" in record.getMessage() for record in caplog.records)


# ------------------------------------------------ when resumption cannot happen


async def test_not_resumed_within_resume_timeout_ends_every_stream() -> None:
    quick = {"resume_timeout": 0.5}
    async with resuming_pair(server_options=quick, client_options=quick) as (
        server,
        client,
        proxy,
    ):
        stream = await client.open_stream("echo", b"")
        await stream.send(b"x")
        assert await stream.receive() == b"x"
        proxy.down = True
        await proxy.fault()
        with trio.fail_after(3):
            with pytest.raises(cs.ConnectionLost, match="resumption failed: not resumed within"):
                await stream.receive()
            await wait_until(lambda: not server.links)


async def test_a_server_restart_refuses_the_token_promptly() -> None:
    options: dict[str, Any] = {"resume_timeout": 10.0, **FAST}
    async with cs.Multiplexer(**options) as client, trio.open_nursery() as nursery:
        async with cs.Multiplexer(**options) as first:
            first.handle("echo", echo)
            url = await first.listen("tcp://127.0.0.1:0")
            port = int(url.rsplit(":", 1)[1])
            proxy = CuttingProxy(("127.0.0.1", port))
            await client.join(await nursery.start(proxy.run), redial=False)
            stream = await client.open_stream("echo", b"")
            await stream.send(b"x")
            assert await stream.receive() == b"x"
            proxy.down = True
            await proxy.fault()
        # A new server on another port: it knows no token.
        async with cs.Multiplexer(**options) as second:
            url = await second.listen("tcp://127.0.0.1:0")
            proxy.target = ("127.0.0.1", int(url.rsplit(":", 1)[1]))
            proxy.down = False
            with trio.fail_after(3):
                with pytest.raises(
                    cs.ConnectionLost, match="resumption failed: this node holds no"
                ):
                    await stream.receive()
        nursery.cancel_scope.cancel()


async def test_a_wrong_token_is_refused() -> None:
    async with resuming_pair() as (server, client, proxy):
        stream = await client.open_stream("echo", b"")
        await stream.send(b"x")
        assert await stream.receive() == b"x"
        link = the_link(client)
        link.conn.resume_token = bytes(16)  # not the token the server issued
        await proxy.fault()
        with trio.fail_after(3):
            with pytest.raises(cs.ConnectionLost, match="resumption failed"):
                await stream.receive()
        # The server's link is still held, waiting for the right token (until its timeout).
        assert the_link(server).detached


async def test_one_side_without_resumption_ends_the_link_as_before() -> None:
    async with resuming_pair(client_options={"resume_timeout": None}) as (_, client, proxy):
        stream = await client.open_stream("echo", b"")
        await stream.send(b"x")
        assert await stream.receive() == b"x"
        assert not the_link(client).conn.resumable
        await proxy.fault()
        with trio.fail_after(3), pytest.raises(cs.ConnectionLost):
            await stream.receive()


async def test_a_half_open_link_is_taken_over_by_the_resuming_connection() -> None:
    # The server never learns that the old connection died (keepalive off): the
    # client's resuming HELLO is what tells it, and the old transport is given up.
    quiet = {"keepalive_interval": None}
    async with resuming_pair(
        kind=Fault.STALL_ONE_WAY, cut_every=60_000, cuts=3, server_options=quiet
    ) as (server, client, proxy):
        with trio.fail_after(20):
            assert await fetch(client, 2000, 150) == 2000
        assert proxy.breaks == 3
        assert the_link(server).statistics().resumptions == 3


async def test_both_directions_survive_cuts() -> None:
    async with resuming_pair(cut_every=40_000, cuts=6) as (_, client, proxy):
        stream = await client.open_stream("echo", b"")
        count = 1500

        async def send_all() -> None:
            for seq in range(count):
                await stream.send(message(seq, 120))
            stream.end()

        with trio.fail_after(20):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send_all)
                seq = 0
                async for data in stream:
                    check(data, seq)
                    seq += 1
        assert seq == count and proxy.breaks == 6


# ------------------------------------- the same, in memory, on the autojump clock


class CuttableMemory(MemoryTransport):
    """``mem://name`` links whose connections a test can break all at once, and a
    ``down`` switch that refuses new ones."""

    def __init__(self) -> None:
        super().__init__()
        self.open: list[trio.abc.Stream] = []
        self.down = False

    async def dial(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> trio.abc.Stream:
        if self.down:
            await trio.lowlevel.checkpoint()
            raise ConnectionRefusedError(errno.ECONNREFUSED, "down", endpoint.url())
        listener = self.listeners.get(endpoint.path)
        if listener is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "nothing listens", endpoint.url())
        ours, theirs = trio.testing.memory_stream_pair()
        self.open += [ours, theirs]
        await listener.send.send(theirs)
        return ours

    async def cut(self) -> None:
        # Only the connections open now: a redial during the cut is not cut too.
        streams, self.open = self.open, []
        for stream in streams:
            await trio.aclose_forcefully(stream)


@asynccontextmanager
async def memory_transport() -> AsyncIterator[CuttableMemory]:
    transport = CuttableMemory()
    register_transport(transport)
    try:
        yield transport
    finally:
        unregister_transport(transport)


async def echo_once(mpx: cs.Multiplexer) -> cs.LinkStream:
    stream = await mpx.open_stream("echo", b"")
    await stream.send(b"x")
    assert await stream.receive() == b"x"
    return stream


async def test_in_memory_a_resume_timeout_ends_the_streams_when_it_expires(
    autojump_clock: trio.testing.MockClock,
) -> None:
    options: dict[str, Any] = {"resume_timeout": 30.0, **FAST}
    async with (
        memory_transport() as memory,
        cs.Multiplexer(**options) as server,
        cs.Multiplexer(**options) as client,
    ):
        server.handle("echo", echo)
        await server.listen("mem://node")
        await client.join("mem://node", redial=False)
        stream = await echo_once(client)
        memory.down = True
        await memory.cut()
        cut = trio.current_time()
        with trio.fail_after(60), pytest.raises(cs.ConnectionLost) as caught:
            await stream.receive()
        assert 30.0 <= trio.current_time() - cut <= 31.0
        assert "resumption failed: not resumed within resume_timeout (30 s)" in str(caught.value)
        assert the_link_or_none(client) is None


async def test_in_memory_a_restarted_server_refuses_the_token_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    options: dict[str, Any] = {"resume_timeout": 30.0, **FAST}
    async with memory_transport() as memory, cs.Multiplexer(**options) as client:
        async with cs.Multiplexer(**options) as first:
            first.handle("echo", echo)
            await first.listen("mem://node")
            await client.join("mem://node", redial=False)
            stream = await echo_once(client)
            memory.down = True
            await memory.cut()
        async with cs.Multiplexer(**options) as second:
            await second.listen("mem://node")
            memory.down = False
            cut = trio.current_time()
            with trio.fail_after(60), pytest.raises(cs.ConnectionLost) as caught:
                await stream.receive()
            # The first redial after the restart is refused: no waiting for a timeout.
            assert trio.current_time() - cut <= 1.0
            assert "resumption failed: this node holds no link" in str(caught.value)
            assert second.links == []


async def test_in_memory_a_wrong_token_is_refused_at_once(
    autojump_clock: trio.testing.MockClock,
) -> None:
    options: dict[str, Any] = {"resume_timeout": 30.0, **FAST}
    async with (
        memory_transport() as memory,
        cs.Multiplexer(**options) as server,
        cs.Multiplexer(**options) as client,
    ):
        server.handle("echo", echo)
        await server.listen("mem://node")
        await client.join("mem://node", redial=False)
        stream = await echo_once(client)
        the_link(client).conn.resume_token = b"\x00" * 16
        cut = trio.current_time()
        await memory.cut()
        with trio.fail_after(60), pytest.raises(cs.ConnectionLost, match="resumption failed"):
            await stream.receive()
        assert trio.current_time() - cut <= 1.0
        # The real link waits for its owner until its own timeout, then goes too.
        (held,) = server.links
        assert held.detached
        await held.wait_closed()
        assert 30.0 <= trio.current_time() - cut <= 31.0


def the_link_or_none(mpx: cs.Multiplexer) -> Link | None:
    return mpx.links[0] if mpx.links else None


def test_the_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="resume_timeout must be above 0"):
        cs.Multiplexer(resume_timeout=0)
    with pytest.raises(ValueError, match="resume_buffer_size must be at least 1024"):
        cs.Multiplexer(resume_timeout=5, resume_buffer_size=100)
    mpx = cs.Multiplexer(resume_timeout=5, resume_buffer_size=1 << 20)
    assert (mpx.resume_timeout, mpx.resume_buffer_size) == (5, 1 << 20)
    stats = cs.LinkStatistics(0, 0, 0, 0, 0, 0, 0, 0, None)
    assert (stats.resumptions, stats.detached_seconds, stats.resume_buffered) == (0, 0.0, 0)


# ------------------------------------------------- resumption and authentication

#: Credentials and the identities they are let in as (``b"evil"`` is refused).
KEYS = {b"alice-1": "alice", b"alice-2": "alice", b"bob": "bob"}


def by_key(credential: bytes, peer: cs.PeerInfo) -> cs.Identity | None:
    name = KEYS.get(credential)
    return None if name is None else cs.Identity(name)


@asynccontextmanager
async def authenticated_pair(
    errors: list[BaseException], authenticate: cs.Authenticator = by_key
) -> AsyncIterator[tuple[CuttableMemory, cs.Multiplexer, cs.Multiplexer]]:
    options: dict[str, Any] = {"resume_timeout": 30.0, **FAST}
    async with (
        memory_transport() as memory,
        cs.Multiplexer(authenticate=authenticate, on_error=errors.append, **options) as server,
        cs.Multiplexer(credential=b"alice-1", **options) as client,
    ):
        server.handle("echo", echo)
        await server.listen("mem://node")
        await client.join("mem://node", redial=False)
        yield memory, server, client


async def test_an_authenticated_link_resumes_for_its_own_identity(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors: list[BaseException] = []
    async with authenticated_pair(errors) as (memory, server, client):
        stream = await echo_once(client)
        assert the_link(client).conn.resumable
        (held,) = server.links
        assert held.identity == cs.Identity("alice")
        # Another credential of the same identity (a rotated key) may resume too.
        the_link(client).conn._credential = b"alice-2"
        await memory.cut()
        with trio.fail_after(5):
            await stream.send(b"after the cut")
            assert await stream.receive() == b"after the cut"
        assert the_link(client).statistics().resumptions == 1
        assert server.links == [held]
        assert held.statistics().resumptions == 1
        assert server.statistics().auth_refused == 0
        assert errors == []


@pytest.mark.parametrize(
    ("credential", "why"),
    [
        (b"bob", "presented with another identity than the link's"),
        (b"evil", "resumption failed: credential refused"),
        (b"", "resumption failed: a credential is required"),
    ],
    ids=["another-identity", "refused", "none"],
)
async def test_only_the_links_identity_can_resume_it(
    autojump_clock: trio.testing.MockClock, credential: bytes, why: str
) -> None:
    errors: list[BaseException] = []
    async with authenticated_pair(errors) as (memory, server, client):
        stream = await echo_once(client)
        (held,) = server.links
        # Whoever holds the token but not alice's credential (it is repeated in the
        # resuming HELLO) may not take her link over.
        the_link(client).conn._credential = credential or None
        cut = trio.current_time()
        await memory.cut()
        with trio.fail_after(60), pytest.raises(cs.ConnectionLost) as caught:
            await stream.receive()
        assert trio.current_time() - cut <= 1.0  # refused at once, no timeout
        assert why in str(caught.value)
        assert why in " ".join(str(error) for error in errors)
        # The link waits for its owner, untouched, until its timeout.
        assert server.links == [held]
        assert held.detached
        assert held.statistics().resumptions == 0
        assert server.statistics().auth_refused == (0 if credential == b"bob" else 1)
        await held.wait_closed()
        assert 30.0 <= trio.current_time() - cut <= 31.0


async def test_an_authenticate_that_raises_on_resuming_refuses_and_reports_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    calls = 0

    def flaky(credential: bytes, peer: cs.PeerInfo) -> cs.Identity | None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise RuntimeError("the key store is down")
        return by_key(credential, peer)

    errors: list[BaseException] = []
    async with authenticated_pair(errors, flaky) as (memory, _, client):
        stream = await echo_once(client)
        await memory.cut()
        with trio.fail_after(5), pytest.raises(cs.ConnectionLost, match="authentication failed"):
            await stream.receive()
        assert any(
            isinstance(error, RuntimeError) and "key store" in str(error) for error in errors
        )


# ------------------------------------------------- resumption, the cap and the pick


async def test_a_listener_at_max_links_still_takes_a_resuming_connection(
    autojump_clock: trio.testing.MockClock,
) -> None:
    errors: list[BaseException] = []
    options: dict[str, Any] = {"resume_timeout": 30.0, **FAST}
    async with (
        memory_transport() as memory,
        cs.Multiplexer(on_error=errors.append, **options) as server,
        cs.Multiplexer(**options) as client,
        cs.Multiplexer(**options) as other,
    ):
        server.handle("echo", echo)
        await server.listen("mem://node", max_links=1)
        await client.join("mem://node", redial=False)
        stream = await echo_once(client)
        with trio.fail_after(5), pytest.raises(cs.ProtocolError, match="too many links"):
            await other.join("mem://node", redial=False)
        memory.down = True
        await memory.cut()
        await wait_until(lambda: the_link(server).detached)
        memory.down = False
        # The slot held for the detached link admits only its resuming connection: a
        # plain one (which dials before the client's next redial) is refused...
        with trio.fail_after(5), pytest.raises(cs.ProtocolError, match="too many links"):
            await other.join("mem://node", redial=False)
        assert other.links == []
        # ...and the link resumes over the cap.
        with trio.fail_after(5):
            await stream.send(b"over the cap")
            assert await stream.receive() == b"over the cap"
        assert the_link(client).statistics().resumptions == 1
        assert len(server.links) == 1
        assert server.statistics().links_refused == 2
        assert [str(error) for error in errors] == [
            "refused a link from mem://node: mem://node already carries 1 links (max_links)"
        ] * 2


async def test_new_streams_go_where_a_transport_is_while_a_link_waits_to_resume(
    autojump_clock: trio.testing.MockClock,
) -> None:
    options: dict[str, Any] = {"resume_timeout": 30.0, **FAST}
    async with (
        memory_transport() as memory,
        cs.Multiplexer(**options) as a,
        cs.Multiplexer(**options) as b,
        cs.Multiplexer(**options) as client,
    ):
        for server, url in ((a, "mem://a"), (b, "mem://b")):
            server.handle("echo", echo)
            await server.listen(url)
            await client.join(url, redial=False)
        await wait_until(lambda: len(client.links_offering("echo")) == 2)
        to_a = next(link for link in client.links if link.joined_url == "mem://a")
        memory.down = True
        await trio.aclose_forcefully(to_a.transport)
        await wait_until(lambda: to_a.detached)
        streams = [await client.open_stream("echo", b"") for _ in range(20)]
        assert all(stream.link is not to_a for stream in streams)
        # With a route key the same node is picked, waiting or not: the key's stream
        # waits for the link to resume.
        keyed = {(await client.open_stream("echo", b"", route_key=k)).link for k in "pqrstu"}
        assert to_a in keyed
