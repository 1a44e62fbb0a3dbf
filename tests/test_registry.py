"""The seam between a node and its registry: a registry written against ``RegistryNode``
alone publishes, joins, leaves and reports through any multiplexer."""

from __future__ import annotations

import trio
import trio.testing

import chanserv_trio as cs
from chanserv_trio.node._registry import Registry, RegistryNode


class ListRegistry:
    """A registry whose fleet is a dict in memory: it publishes the node's first URL and
    its services under the node's id, again after each local change."""

    def __init__(self, fleet: dict[str, list[str]]) -> None:
        self.fleet = fleet

    async def run(
        self, node: RegistryNode, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()
        version = node.local_version
        while True:
            if node.listening:
                self.fleet[node.node_id] = [node.listening[0], *node.services]
            version = await node.wait_local_change(version)


async def test_a_registry_sees_the_node_only_through_its_interface() -> None:
    fleet: dict[str, list[str]] = {}
    registry: Registry = ListRegistry(fleet)  # a Registry by its shape alone
    async with cs.Multiplexer(registry=registry) as mpx:
        node: RegistryNode = mpx  # and the multiplexer a RegistryNode by its own
        address = await mpx.listen("tcp://127.0.0.1:0")
        mpx.handle("svc", lambda stream: stream.aclose())
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()
        assert fleet == {mpx.node_id: [address, "svc"]}
        mpx.unhandle("svc")
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()
        assert fleet == {mpx.node_id: [address]}
        assert not node.closing
    assert node.closing


async def test_report_error_reaches_on_error_and_closing_says_when_to_stop_joining() -> None:
    errors: list[BaseException] = []
    problem = cs.RegistryError("the registry went away")
    async with cs.Multiplexer() as server:
        address = await server.listen("tcp://127.0.0.1:0")
        async with cs.Multiplexer(on_error=errors.append) as mpx:
            node: RegistryNode = mpx
            node.report_error(problem)
            assert errors == [problem]
            with trio.fail_after(5):
                await node.join(address)
            assert mpx.joined == [address]
            node.leave(address)
            assert mpx.joined == []
            assert not node.closing
            await mpx.shutdown(0.0)
            assert node.closing
    async with cs.Multiplexer() as quiet:
        quiet.report_error(problem)  # without on_error: dropped, not raised
