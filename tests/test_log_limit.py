"""Warnings a peer causes once per connection are logged at a bounded rate: a flood of
refused or failed connections writes a burst, then one line saying how many more."""

from __future__ import annotations

import logging

import pytest
import trio
import trio.testing
from test_transport_interface import MemoryTransport

import chanserv_trio as cs
from chanserv_trio.node._loglimit import LogLimit
from chanserv_trio.transports._base import register_transport, unregister_transport


def warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        record.getMessage()
        for record in caplog.records
        if record.name == "chanserv_trio.node" and record.levelno == logging.WARNING
    ]


async def test_a_flood_of_refused_connections_logs_a_burst_then_a_count(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="chanserv_trio")
    transport = MemoryTransport()
    register_transport(transport)
    errors: list[BaseException] = []
    try:
        async with (
            cs.Multiplexer(on_error=errors.append) as server,
            cs.Multiplexer() as client,
            cs.Multiplexer() as flood,
        ):
            await server.listen("mem://node", max_links=1)
            await client.join("mem://node", redial=False)
            with trio.fail_after(30):
                for _ in range(25):
                    with pytest.raises(cs.ProtocolError, match="too many links"):
                        await flood.join("mem://node", redial=False)
            refused = "refused a link from mem://node: mem://node already carries 1 links"
            logged = warnings(caplog)
            assert len(logged) == 10 and all(refused in line for line in logged)
            # Every refusal still reaches on_error and the counters.
            assert len(errors) == 25
            assert server.statistics().links_refused == 25
            await trio.sleep(10)
            with trio.fail_after(30), pytest.raises(cs.ProtocolError):
                await flood.join("mem://node", redial=False)
            logged = warnings(caplog)
            assert len(logged) == 12
            assert logged[10].startswith("15 more such warnings were not logged in 1")
            assert refused in logged[11]
    finally:
        unregister_transport(transport)


async def test_the_limit_lets_a_burst_through_each_interval(
    autojump_clock: trio.testing.MockClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="test.limit")
    limit = LogLimit(logging.getLogger("test.limit"), burst=2, interval=5.0)
    for index in range(5):
        limit.warning("event %d", index)
    assert limit.suppressed == 3
    await trio.sleep(4.9)
    limit.warning("still the first interval")
    await trio.sleep(0.1)
    limit.warning("event %d", 5)
    limit.warning("event %d", 6)
    limit.warning("event %d", 7)
    assert [r.getMessage() for r in caplog.records] == [
        "event 0",
        "event 1",
        "4 more such warnings were not logged in 5 s (at most 2 are logged each 5 s)",
        "event 5",
        "event 6",
    ]
    assert limit.suppressed == 1
