"""The transport interface: every registered transport's streams honour trio's stream
contract, and a new transport is one class plus one registration."""

from __future__ import annotations

import errno
import math
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import urlsplit

import attrs
import pytest
import trio
import trio.testing
import trustme

import chanserv_trio as cs
from chanserv_trio.transports._base import (
    Bound,
    Endpoint,
    Transport,
    TransportOptions,
    register_transport,
    registered_schemes,
    transport_for,
    unregister_transport,
)
from chanserv_trio.transports._schemes import parse_url, reads_whole_messages


@attrs.frozen
class Certs:
    server: ssl.SSLContext
    client: ssl.SSLContext


@pytest.fixture(scope="module")
def certs() -> Certs:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    return Certs(server, client)


def loopback_url(scheme: str, tmp_path: Path) -> str:
    if scheme == "unix":
        return f"unix://{tmp_path}/check.sock"
    return f"{scheme}://127.0.0.1:0" + ("/links" if scheme in ("ws", "wss") else "")


# ------------------------------------------------------- trio's stream contract


@pytest.mark.parametrize("scheme", ["tcp", "unix", "tls", "ws", "wss"])
async def test_every_transports_streams_pass_trios_stream_checks(
    scheme: str, certs: Certs, tmp_path: Path
) -> None:
    transport = transport_for(scheme)
    listen_options = TransportOptions(ssl_context=certs.server if transport.tls else None)
    dial_options = TransportOptions(ssl_context=certs.client if transport.tls else None)
    async with trio.open_nursery() as nursery:  # tasks the streams need
        bound = await transport.listen(parse_url(loopback_url(scheme, tmp_path)), listen_options)
        endpoint = parse_url(bound.url)

        async def stream_maker() -> tuple[trio.abc.Stream, trio.abc.Stream]:
            accepted: list[trio.abc.Stream] = []

            async def accept_one() -> None:
                raw = await bound.listeners[0].accept()
                accepted.append(await transport.accept(raw, endpoint, listen_options, nursery))

            async with trio.open_nursery() as both:
                both.start_soon(accept_one)
                dialed = await transport.dial(endpoint, dial_options, nursery)
            # The declared property is what the streams say of themselves.
            assert reads_whole_messages(dialed) is transport.whole_messages
            assert reads_whole_messages(accepted[0]) is transport.whole_messages
            return dialed, accepted[0]

        async def half_closeable_maker() -> tuple[
            trio.abc.HalfCloseableStream, trio.abc.HalfCloseableStream
        ]:
            dialed, accepted = await stream_maker()
            assert isinstance(dialed, trio.abc.HalfCloseableStream)
            assert isinstance(accepted, trio.abc.HalfCloseableStream)
            return dialed, accepted

        try:
            with trio.fail_after(30):
                if scheme in ("tcp", "unix"):
                    await trio.testing.check_half_closeable_stream(half_closeable_maker, None)
                else:
                    await trio.testing.check_two_way_stream(stream_maker, None)
        finally:
            for listener in bound.listeners:
                await trio.aclose_forcefully(listener)
        nursery.cancel_scope.cancel()


def test_websocket_transports_declare_whole_messages() -> None:
    assert [transport_for(s).whole_messages for s in ("tcp", "tls", "ws", "wss", "unix")] == [
        False,
        False,
        True,
        True,
        False,
    ]


# ------------------------------------------------------------ the registry


def test_builtin_schemes_are_registered() -> None:
    assert registered_schemes()[:5] == ["tcp", "tls", "ws", "wss", "unix"]
    assert [transport_for(s).tls for s in ("tcp", "tls", "ws", "wss", "unix")] == [
        False,
        True,
        False,
        True,
        False,
    ]


def test_unknown_schemes_name_the_registered_ones() -> None:
    with pytest.raises(ValueError, match=r"unsupported URL scheme 'gopher'.*\(use tcp://, tls://"):
        parse_url("gopher://127.0.0.1:70")
    with pytest.raises(ValueError, match="unsupported URL scheme 'gopher'"):
        transport_for("gopher")


def test_a_scheme_is_served_by_one_transport_at_a_time() -> None:
    toy = MemoryTransport()
    toy.schemes = ("tcp",)
    with pytest.raises(ValueError, match="already served"):
        register_transport(toy)
    toy.schemes = ()
    with pytest.raises(ValueError, match="names no URL scheme"):
        register_transport(toy)
    for bad in ("Mem", "1mem", "mem:"):
        toy.schemes = (bad,)
        with pytest.raises(ValueError, match="bad URL scheme"):
            register_transport(toy)
    assert transport_for("tcp") is not toy
    unregister_transport(toy)  # it serves nothing: nothing changes
    assert "mem" not in registered_schemes()


# ------------------------------------------------- a transport added by a test


class MemoryListener(trio.abc.Listener[trio.abc.Stream]):
    def __init__(self, name: str, transport: MemoryTransport) -> None:
        self.name = name
        self.transport = transport
        self.send, self.receive = trio.open_memory_channel[trio.abc.Stream](math.inf)

    async def accept(self) -> trio.abc.Stream:
        return await self.receive.receive()

    async def aclose(self) -> None:
        if self.transport.listeners.get(self.name) is self:
            del self.transport.listeners[self.name]
        await self.receive.aclose()


class MemoryTransport(Transport):
    """``mem://name``: links over ``trio.testing.memory_stream_pair`` in one process."""

    schemes: tuple[str, ...] = ("mem",)

    def __init__(self) -> None:
        self.listeners: dict[str, MemoryListener] = {}

    def parse_url(self, url: str) -> Endpoint:
        parts = urlsplit(url)
        if not parts.netloc or parts.path or parts.query:
            raise ValueError(f"{url!r}: expected mem://name")
        return Endpoint("mem", path=parts.netloc)

    async def dial(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> trio.abc.Stream:
        listener = self.listeners.get(endpoint.path)
        if listener is None:
            raise ConnectionRefusedError(errno.ECONNREFUSED, "nothing listens", endpoint.url())
        ours, theirs = trio.testing.memory_stream_pair()
        await listener.send.send(theirs)
        return ours

    async def listen(self, endpoint: Endpoint, options: TransportOptions) -> Bound:
        await trio.lowlevel.checkpoint()
        if endpoint.path in self.listeners:
            raise OSError(errno.EADDRINUSE, "in use", endpoint.url())
        listener = self.listeners[endpoint.path] = MemoryListener(endpoint.path, self)
        return Bound([listener], endpoint.url())

    def addresses(
        self, endpoint: Endpoint, stream: trio.abc.Stream, *, dialed: bool
    ) -> tuple[str, str]:
        return endpoint.url(), endpoint.url()


async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
    async def frames() -> AsyncIterator[bytes]:
        yield request
        yield b"over memory"

    yield cs.Source(header=b"echo", frames=frames())


async def post(mpx: cs.Multiplexer) -> list[tuple[bytes, list[bytes], str]]:
    got = []
    async with cs.Client(mpx, dial_timeout=5.0).lookup_and_post("chanserv", b"hi") as sources:
        async for source in sources:
            got.append((source.header, [frame async for frame in source], source.meta.remote_addr))
    return got


async def test_a_new_transport_is_one_class_and_one_registration(
    autojump_clock: trio.testing.MockClock,
) -> None:
    transport = MemoryTransport()
    register_transport(transport)
    try:
        with trio.fail_after(30):
            async with cs.Multiplexer() as server_mpx:
                await cs.Server(server_mpx).listen_and_serve("chanserv", source_fn)
                bound = await server_mpx.listen("mem://node")
                assert bound == "mem://node" and server_mpx.listening == [bound]
                with pytest.raises(OSError, match="in use"):
                    await server_mpx.listen("mem://node")
                context = ssl.create_default_context()
                with pytest.raises(ValueError, match="ssl_context= applies to tls:// and wss://"):
                    await server_mpx.listen("mem://other", ssl_context=context)
                async with cs.Multiplexer() as client_mpx:
                    link = await client_mpx.join(bound)
                    assert (link.local_addr, link.remote_addr) == (bound, bound)
                    assert await post(client_mpx) == [(b"echo", [b"hi", b"over memory"], bound)]
                    with pytest.raises(cs.ConnectionLost, match="cannot connect to mem://gone"):
                        await client_mpx.join("mem://gone")
            assert transport.listeners == {}  # closing the multiplexer closed its listener
    finally:
        unregister_transport(transport)
    with pytest.raises(ValueError, match="unsupported URL scheme 'mem'"):
        parse_url("mem://node")
    async with cs.Multiplexer() as mpx:
        with pytest.raises(ValueError, match="unsupported URL scheme"):
            await mpx.listen("mem://node")
