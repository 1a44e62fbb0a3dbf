"""EtcdRegistry against a real etcd on loopback (see etcd_fixture.py), plus the etcd
gateway client against canned answers.

Leases need real time, so these tests use short TTLs (2 s) and bound every wait.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager

import httpx
import pytest
import trio
import trio.testing
from etcd_fixture import etcd_endpoint, free_port, have_etcd, own_etcd
from helpers import wait_until

import chanserv_trio as cs
from chanserv_trio.node._multiplexer import _score
from chanserv_trio.node._registry_etcd import RegistryError, _EtcdClient, _prefix_end

__all__ = ["etcd_endpoint"]  # the fixture, used by name

TTL = 2.0


def unique_prefix() -> str:
    return f"/chanserv_test/{uuid.uuid4().hex}/"


async def etcd_keys(endpoint: str, prefix: str) -> dict[str, str]:
    async with httpx.AsyncClient(base_url=endpoint, trust_env=False) as http:
        _, kvs = await _EtcdClient(http, endpoint).range_prefix(prefix)
    return kvs


def bucket_for(target: str, addresses: list[str]) -> str:
    """A bucket key that rendezvous hashing sends to ``target`` among ``addresses``."""
    for i in range(10_000):
        key = f"key-{i}"
        if max(addresses, key=lambda a: (_score(key, a), a)) == target:
            return key
    raise AssertionError("no key maps there")  # pragma: no cover


class Node:
    """A serving node: answers 'svc' with one source whose header is its address."""

    def __init__(self, mpx: cs.Multiplexer, address: str) -> None:
        self.mpx = mpx
        self.address = address


@asynccontextmanager
async def serving_node(
    endpoint: str, prefix: str, *, join: bool = False, on_error: Callable[..., object] = print
) -> AsyncIterator[Node]:
    registry = cs.EtcdRegistry(endpoint, prefix=prefix, ttl=TTL, join=join, on_error=on_error)
    async with cs.Multiplexer(registry=registry, shutdown_grace=0.2) as mpx:
        address = await mpx.listen("tcp://127.0.0.1:0")

        async def answer(request: bytes) -> AsyncIterator[cs.Source]:
            yield cs.Source(header=address.encode())

        await cs.Server(mpx).listen_and_serve("svc", answer)
        yield Node(mpx, address)


async def served_by(client: cs.Client, bucket: str | None = None) -> str:
    tags = None if bucket is None else {"bucket": bucket}
    async with client.lookup_and_post("svc", b"", tags=tags) as sources:
        source = await sources.receive()
        return source.header.decode()


async def keys_become(endpoint: str, prefix: str, expected: dict[str, str]) -> None:
    """Poll etcd until the keys under ``prefix`` are ``expected`` (callers bound the time)."""
    while await etcd_keys(endpoint, prefix) != expected:  # noqa: ASYNC110 - etcd state
        await trio.sleep(0.02)


async def offering(mpx: cs.Multiplexer, addresses: set[str]) -> None:
    """Wait until the links offering 'svc' are exactly those to ``addresses``."""
    await wait_until(lambda: {link.node_key for link in mpx.links_offering("svc")} == addresses)


# ------------------------------------------------------------- with a real etcd


async def test_three_servers_and_a_client_find_each_other(etcd_endpoint: str) -> None:
    prefix = unique_prefix()
    errors: list[BaseException] = []
    with trio.fail_after(15):
        async with AsyncExitStack() as stack:
            # The servers join through etcd too: each links to the other two, never itself.
            nodes = [
                await stack.enter_async_context(
                    serving_node(etcd_endpoint, prefix, join=True, on_error=errors.append)
                )
                for _ in range(3)
            ]
            addresses = [node.address for node in nodes]
            expected = {f"{prefix}svc/{node.mpx.node_id}": node.address for node in nodes}
            await keys_become(etcd_endpoint, prefix, expected)

            registry = cs.EtcdRegistry(etcd_endpoint, prefix=prefix, ttl=TTL)
            async with cs.Multiplexer(registry=registry) as client_mpx:
                await offering(client_mpx, set(addresses))
                await wait_until(lambda: sorted(client_mpx.joined) == sorted(addresses))
                client = cs.Client(client_mpx, dial_timeout=5)
                for node in nodes:
                    bucket = bucket_for(node.address, addresses)
                    assert await served_by(client, bucket) == node.address
                    assert await served_by(client, bucket) == node.address
                for node in nodes:
                    await wait_until(lambda n=node: len(n.mpx.joined) == 2)  # type: ignore[misc]
                    assert sorted(node.mpx.joined) == sorted(set(addresses) - {node.address})
    assert errors == []


async def test_services_and_advertise_follow_the_node(etcd_endpoint: str) -> None:
    prefix = unique_prefix()
    registry = cs.EtcdRegistry(
        etcd_endpoint, prefix=prefix, ttl=TTL, join=False, advertise="tcp://10.1.2.3:7000"
    )

    with trio.fail_after(10):
        async with cs.Multiplexer(registry=registry) as mpx:
            mpx.handle("a", lambda stream: stream.aclose())
            # The registry has seen the change once every task waits again.
            await trio.testing.wait_all_tasks_blocked()
            assert await etcd_keys(etcd_endpoint, prefix) == {}  # not listening yet
            await mpx.listen("tcp://127.0.0.1:0")
            where = "tcp://10.1.2.3:7000"
            await keys_become(etcd_endpoint, prefix, {f"{prefix}a/{mpx.node_id}": where})
            mpx.handle("b", lambda stream: stream.aclose())
            mpx.unhandle("a")
            await keys_become(etcd_endpoint, prefix, {f"{prefix}b/{mpx.node_id}": where})
        assert await etcd_keys(etcd_endpoint, prefix) == {}


async def test_a_node_that_exits_is_gone_at_once(etcd_endpoint: str) -> None:
    prefix = unique_prefix()
    with trio.fail_after(15):
        async with AsyncExitStack() as stack:
            stays = [
                await stack.enter_async_context(serving_node(etcd_endpoint, prefix))
                for _ in range(2)
            ]
            async with cs.Multiplexer(
                registry=cs.EtcdRegistry(etcd_endpoint, prefix=prefix, ttl=TTL)
            ) as client_mpx:
                client = cs.Client(client_mpx, dial_timeout=5)
                async with serving_node(etcd_endpoint, prefix) as leaving:
                    everyone = [leaving.address] + [n.address for n in stays]
                    await offering(client_mpx, set(everyone))
                    bucket = bucket_for(leaving.address, everyone)
                    assert await served_by(client, bucket) == leaving.address
                    gone_key = f"{prefix}svc/{leaving.mpx.node_id}"
                    assert gone_key in await etcd_keys(etcd_endpoint, prefix)
                left_at = trio.current_time()
                # Revoked on exit: no waiting for the lease to run out.
                assert gone_key not in await etcd_keys(etcd_endpoint, prefix)
                await wait_until(lambda: leaving.address not in client_mpx.joined)
                assert trio.current_time() - left_at < TTL / 2
                assert sorted(client_mpx.joined) == sorted(n.address for n in stays)
                await offering(client_mpx, {n.address for n in stays})
                expected = bucket_for(leaving.address, everyone)
                rest = [n.address for n in stays]
                assert await served_by(client, expected) == max(
                    rest, key=lambda a: (_score(expected, a), a)
                )


CRASHING_NODE = """
import sys, trio, chanserv_trio as cs

async def main(endpoint, prefix, ttl):
    registry = cs.EtcdRegistry(endpoint, prefix=prefix, ttl=ttl, join=False)
    async with cs.Multiplexer(registry=registry) as mpx:
        address = await mpx.listen("tcp://127.0.0.1:0")

        async def answer(request):
            yield cs.Source(header=address.encode())

        await cs.Server(mpx).listen_and_serve("svc", answer)
        print(address, mpx.node_id, flush=True)
        await trio.sleep_forever()

trio.run(main, sys.argv[1], sys.argv[2], float(sys.argv[3]))
"""


async def read_line(stream: trio.abc.ReceiveStream) -> str:
    data = b""
    while not data.endswith(b"\n"):
        chunk = await stream.receive_some()
        if not chunk:
            raise AssertionError(f"the node exited early: {data!r}")
        data += chunk
    return data.decode()


async def test_a_crashed_node_vanishes_within_the_ttl(etcd_endpoint: str) -> None:
    prefix = unique_prefix()
    with trio.fail_after(20):
        async with (
            serving_node(etcd_endpoint, prefix) as stays,
            cs.Multiplexer(
                registry=cs.EtcdRegistry(etcd_endpoint, prefix=prefix, ttl=TTL)
            ) as client_mpx,
        ):
            client = cs.Client(client_mpx, dial_timeout=5)
            process = await trio.lowlevel.open_process(
                [sys.executable, "-c", CRASHING_NODE, etcd_endpoint, prefix, str(TTL)],
                stdout=subprocess.PIPE,
                env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)},
            )
            try:
                assert process.stdout is not None
                address, node_id = (await read_line(process.stdout)).split()
                everyone = [stays.address, address]
                await offering(client_mpx, set(everyone))
                bucket = bucket_for(address, everyone)
                assert await served_by(client, bucket) == address

                process.send_signal(signal.SIGKILL)  # no revoke, no goodbye
                await process.wait()
                killed_at = trio.current_time()
            finally:
                if process.returncode is None:  # pragma: no cover - only on failure
                    process.kill()
                    await process.wait()
            # The link is gone at once; the key outlives the process until the lease ends.
            await offering(client_mpx, {stays.address})
            assert f"{prefix}svc/{node_id}" in await etcd_keys(etcd_endpoint, prefix)
            await keys_become(
                etcd_endpoint, prefix, {f"{prefix}svc/{stays.mpx.node_id}": stays.address}
            )
            await wait_until(lambda: address not in client_mpx.joined)
            assert trio.current_time() - killed_at < TTL + 1.5
            assert client_mpx.joined == [stays.address]
            assert await served_by(client, bucket) == stays.address


@pytest.mark.skipif(not have_etcd(), reason="needs the etcd binary to stop and restart it")
async def test_an_etcd_restart_does_not_take_the_nodes_down() -> None:
    prefix = unique_prefix()
    errors: list[BaseException] = []
    with own_etcd() as etcd, trio.fail_after(25):
        async with serving_node(etcd.endpoint, prefix, on_error=errors.append) as first:
            registry = cs.EtcdRegistry(
                etcd.endpoint, prefix=prefix, ttl=TTL, on_error=errors.append
            )
            async with cs.Multiplexer(registry=registry) as client_mpx:
                client = cs.Client(client_mpx, dial_timeout=5)
                await offering(client_mpx, {first.address})

                await trio.to_thread.run_sync(etcd.stop)
                await wait_until(lambda: any(isinstance(e, RegistryError) for e in errors))
                # etcd is down; the nodes and their links are not.
                assert await served_by(client) == first.address

                await trio.to_thread.run_sync(etcd.start)
                # Watch and lease both recover: a node started now is found, and the
                # first node is still registered.
                async with serving_node(etcd.endpoint, prefix) as second:
                    await offering(client_mpx, {first.address, second.address})
                    keys = await etcd_keys(etcd.endpoint, prefix)
                    assert keys[f"{prefix}svc/{first.mpx.node_id}"] == first.address
    assert all(isinstance(e, RegistryError) for e in errors), errors


async def test_without_on_error_the_registry_reports_to_the_multiplexers(
    etcd_endpoint: str,
) -> None:
    prefix = unique_prefix()
    dead = f"tcp://127.0.0.1:{free_port()}"
    errors: list[BaseException] = []
    key = f"{prefix}svc/gone"
    async with httpx.AsyncClient(base_url=etcd_endpoint, trust_env=False) as http:
        etcd = _EtcdClient(http, etcd_endpoint)
        await etcd.put(key, dead, 0)  # lease 0: no lease, so delete it at the end
        try:
            registry = cs.EtcdRegistry(etcd_endpoint, prefix=prefix, ttl=TTL)
            with trio.fail_after(10):
                async with cs.Multiplexer(registry=registry, on_error=errors.append):
                    # The node named there does not answer: the node hears of each try.
                    await wait_until(lambda: len(errors) >= 2)
        finally:
            await etcd.delete(key)
    assert all(isinstance(e, cs.ConnectionLost) and dead in str(e) for e in errors), errors


# ------------------------------------------------------------ without etcd


async def test_unreachable_etcd_at_start_is_a_registry_error() -> None:
    port = free_port()
    registry = cs.EtcdRegistry(f"http://127.0.0.1:{port}", ttl=TTL)
    with trio.fail_after(5):
        async with cs.Multiplexer() as mpx, trio.open_nursery() as nursery:
            with pytest.raises(RegistryError, match=f"127.0.0.1:{port} unreachable"):
                await nursery.start(registry.run, mpx)


async def test_unreachable_etcd_fails_entering_the_multiplexer() -> None:
    port = free_port()
    registry = cs.EtcdRegistry(f"http://127.0.0.1:{port}", ttl=TTL)
    with trio.fail_after(5), pytest.raises(RegistryError, match=f"127.0.0.1:{port} unreachable"):
        async with cs.Multiplexer(registry=registry):
            pass  # pragma: no cover


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="http"):
        cs.EtcdRegistry("tcp://127.0.0.1:2379")
    with pytest.raises(ValueError, match="ttl"):
        cs.EtcdRegistry(ttl=0)
    with pytest.raises(ValueError, match="prefix"):
        cs.EtcdRegistry(prefix="")
    assert cs.EtcdRegistry("etcd://10.0.0.1:2379/").endpoint == "http://10.0.0.1:2379"


def test_prefix_end() -> None:
    assert _prefix_end(b"/a/") == b"/a0"
    assert _prefix_end(b"a\xff\xff") == b"b"
    assert _prefix_end(b"\xff") == b"\0"


def canned(*answers: tuple[int, bytes]) -> _EtcdClient:
    """A gateway client whose requests get ``answers`` in turn."""
    queue = list(answers)

    def handler(request: httpx.Request) -> httpx.Response:
        status, body = queue.pop(0)
        return httpx.Response(status, content=body)

    http = httpx.AsyncClient(base_url="http://etcd.test", transport=httpx.MockTransport(handler))
    return _EtcdClient(http, "http://etcd.test")


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def test_gateway_errors_map_to_registry_error() -> None:
    error = {"error": "lease not found", "message": "etcdserver: lease not found", "code": 5}
    etcd = canned(
        (404, json.dumps(error).encode()),
        (503, b"<html>down</html>"),
        (200, b"not json"),
        (200, json.dumps({"header": {}}).encode()),
    )
    with pytest.raises(RegistryError, match="refused /v3/kv/put: etcdserver: lease") as refused:
        await etcd.put("k", "v", 1)
    assert refused.value.code == 5
    with pytest.raises(RegistryError, match="HTTP 503") as down:
        await etcd.delete("k")
    assert down.value.code is None
    with pytest.raises(RegistryError, match="HTTP 200"):
        await etcd.keepalive(1)
    with pytest.raises(RegistryError, match="unreadable /v3/kv/range"):
        await etcd.range_prefix("/p/")


async def test_keepalive_tells_an_expired_lease() -> None:
    alive = {"result": {"ID": "7", "TTL": "2"}}
    expired = {"result": {"ID": "7"}}
    etcd = canned((200, json.dumps(alive).encode()), (200, json.dumps(expired).encode()))
    assert await etcd.keepalive(7) is True
    assert await etcd.keepalive(7) is False


async def test_watch_reports_batches_and_ends_in_an_error() -> None:
    header = {"revision": "9"}
    lines = [
        {"result": {"header": header, "created": True}},
        {
            "result": {
                "header": header,
                "events": [
                    {"kv": {"key": b64("/p/svc/n1"), "value": b64("tcp://a:1")}},
                    {"type": "DELETE", "kv": {"key": b64("/p/svc/n2")}},
                ],
            }
        },
        {"result": {"header": header, "canceled": True, "compact_revision": "5"}},
    ]
    body = b"".join(json.dumps(line).encode() + b"\n" for line in lines)
    etcd = canned((200, body), (200, body[: body.index(b"\n") + 1]))
    created: list[bool] = []
    batches: list[tuple[int, list[tuple[str, str | None]]]] = []

    def on_batch(revision: int, batch: list[tuple[str, str | None]]) -> None:
        batches.append((revision, batch))

    with pytest.raises(RegistryError, match="compacted up to revision 5"):
        await etcd.watch("/p/", 3, lambda: created.append(True), on_batch)
    assert created == [True]
    assert batches == [(9, [("/p/svc/n1", "tcp://a:1"), ("/p/svc/n2", None)])]
    with pytest.raises(RegistryError, match="closed the watch"):
        await etcd.watch("/p/", 3, lambda: None, on_batch)


async def test_cli_serve_and_post_find_each_other_through_etcd(etcd_endpoint: str) -> None:
    import io
    from functools import partial

    from chanserv_trio import _cli

    prefix = unique_prefix()
    registry_url = etcd_endpoint.replace("http://", "etcd://")
    out = io.StringIO()
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(
                partial(
                    _cli.run_serve,
                    _cli.demo_source_fn,
                    ["tcp://127.0.0.1:0"],
                    "svc",
                    io.StringIO(),
                    registry=_cli._registry(registry_url, prefix),
                )
            )
            # post finds the server through the registry alone: no URL given.
            url, name, body = _cli._post_words(["svc", "hello"], registry_url)
            await _cli.run_post(
                url, name, body.encode(), 5.0, out, registry=_cli._registry(registry_url, prefix)
            )
            nursery.cancel_scope.cancel()
    for index in range(5):
        assert f"[source @{index}] frame 2: ok I'm ready" in out.getvalue()
