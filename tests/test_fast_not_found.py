"""Fast not-found: the end-of-advertisement marker (SERVICE ``COMPLETE``) and the
lookups that trust it, failing at once only when nobody can offer the name."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing
from helpers import chanserv_nodes, wait_until

import chanserv_trio as cs
from chanserv_trio.wire._codec import HEADER, FrameType, ServiceFlags
from chanserv_trio.wire._connection import Connection
from chanserv_trio.wire._events import ServiceAdvertised


async def one_source(request: bytes) -> AsyncIterator[cs.Source]:
    yield cs.Source(header=b"here")


def handshaken() -> tuple[Connection, Connection]:
    client, server = Connection(initiator=True), Connection(initiator=False)
    server.receive_data(b"".join(client.take_outgoing()))
    client.receive_data(b"".join(server.take_outgoing()))
    return client, server


def test_the_marker_is_a_service_frame_with_remove_and_complete_and_no_name() -> None:
    client, server = handshaken()
    server.advertise("echo")
    server.advertise_complete()
    sent = data = b"".join(server.take_outgoing())
    frames = []
    while data:
        length, ftype, flags, stream_id = HEADER.unpack_from(data)
        frames.append((ftype, flags, stream_id, data[HEADER.size : HEADER.size + length]))
        data = data[HEADER.size + length :]
    assert frames[-1] == (FrameType.SERVICE, 0x5, 0, b"")
    assert ServiceFlags.REMOVE | ServiceFlags.COMPLETE == 0x5
    assert client.receive_data(sent) == [
        ServiceAdvertised("echo", True),
        ServiceAdvertised("", False, complete=True),
    ]


def test_a_peer_that_ignores_the_flag_reads_a_withdrawal_of_no_name() -> None:
    # What an earlier version decodes: the same frame without the bit it does not know.
    client, _server = handshaken()
    old_view = HEADER.pack(0, FrameType.SERVICE, ServiceFlags.REMOVE, 0)
    assert client.receive_data(old_view) == [ServiceAdvertised("", False)]


async def test_lookup_fails_at_once_when_the_joined_node_advertised_everything(
    autojump_clock: trio.abc.Clock,
) -> None:
    # (Over a memory stream: the clock jumps only when every task waits on it.)
    with trio.fail_after(100):
        async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
            await cs.Server(server_mpx).listen_and_serve("echo", one_source)
            await wait_until(lambda: "echo" in client_mpx.links[0].peer_services)
            assert client_mpx.offers_known
            client = cs.Client(client_mpx, dial_timeout=60.0, fast_not_found=True)
            start = trio.current_time()
            with pytest.raises(cs.ServiceNotFound, match="advertised all it offers"):
                async with client.lookup_and_post("nobody"):
                    pass  # pragma: no cover
            assert trio.current_time() == start  # no virtual time passed: it did not wait
            async with client.lookup_and_post("echo") as sources:
                assert (await sources.receive()).header == b"here"
            assert client.statistics().outcomes["not_found"] == 1
            # Without the option, the same lookup waits dial_timeout as it always did.
            slow = cs.Client(client_mpx, dial_timeout=7.0)
            with pytest.raises(cs.ServiceNotFound, match="waited"):
                async with slow.lookup_and_post("nobody"):
                    pass  # pragma: no cover
            assert trio.current_time() - start >= 7.0


async def test_a_waiting_lookup_ends_when_the_last_advertisement_completes(
    autojump_clock: trio.abc.Clock,
) -> None:
    # The node is linked over a stream whose far end has not started yet: the lookup
    # waits, then fails as soon as the peer's marker arrives (long before dial_timeout).
    with trio.fail_after(100):
        async with cs.Multiplexer() as near, cs.Multiplexer() as far:
            near_end, far_end = trio.testing.memory_stream_pair()
            client = cs.Client(near, dial_timeout=60.0, fast_not_found=True)
            failed_at: list[float] = []

            async def look_up() -> None:
                with pytest.raises(cs.ServiceNotFound):
                    async with client.lookup_and_post("nobody"):
                        pass  # pragma: no cover
                failed_at.append(trio.current_time())

            async with trio.open_nursery() as nursery:
                nursery.start_soon(near.attach, near_end)
                await wait_until(lambda: bool(near._links))
                nursery.start_soon(look_up)
                await trio.sleep(5.0)
                assert not failed_at  # the peer has not said a word yet: it waits
                started = trio.current_time()
                await far.attach(far_end)
            assert failed_at
            assert failed_at[0] - started < 1.0


async def test_a_router_never_completes_so_lookups_through_it_wait(
    autojump_clock: trio.abc.Clock,
) -> None:
    with trio.fail_after(100):
        async with cs.Multiplexer(router=True) as router, cs.Multiplexer() as client_mpx:
            near, far = trio.testing.memory_stream_pair()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(router.attach, far)
                await client_mpx.attach(near)
            await trio.sleep(1.0)
            assert not client_mpx.offers_known
            client = cs.Client(client_mpx, dial_timeout=5.0, fast_not_found=True)
            start = trio.current_time()
            with pytest.raises(cs.ServiceNotFound, match="waited"):
                async with client.lookup_and_post("nobody"):
                    pass  # pragma: no cover
            assert trio.current_time() - start >= 5.0


async def test_a_pending_redial_or_a_registry_keeps_lookups_waiting() -> None:
    with trio.fail_after(10):
        async with cs.Multiplexer() as server_mpx:
            address = await server_mpx.listen("tcp://127.0.0.1:0")
            async with cs.Multiplexer(redial_backoff=(30.0, 1.0, 30.0)) as client_mpx:
                link = await client_mpx.join(address)
                await wait_until(lambda: client_mpx.offers_known)
                await link.aclose()  # dropped: a redial is now pending for 15-30 s
                await wait_until(lambda: not client_mpx.links)
                assert client_mpx.joined == [address]
                assert not client_mpx.offers_known
                client_mpx.leave(address)  # nothing joined, no link: nobody to ask
                assert not client_mpx.offers_known

    class NoRegistry:
        async def run(
            self,
            node: object,
            *,
            task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
        ) -> None:
            task_status.started()
            await trio.sleep_forever()

    with trio.fail_after(10):
        async with cs.Multiplexer() as server_mpx:
            address = await server_mpx.listen("tcp://127.0.0.1:0")
            async with cs.Multiplexer(registry=NoRegistry()) as client_mpx:
                link = await client_mpx.join(address)
                await wait_until(lambda: link.peer_advertised_all)
                assert not client_mpx.offers_known
