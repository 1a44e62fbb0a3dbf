"""Shared fixtures: a served multiplexer and a joined client, over TCP loopback."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator

import pytest

import chanserv_trio as cs
from chanserv_trio import wire


def pytest_report_header() -> str:
    build = "compiled (mypyc)" if wire.COMPILED else "interpreted"
    return f"chanserv_trio: {os.path.dirname(cs.__file__)}, wire layer {build}"


def pytest_configure(config: pytest.Config) -> None:
    # `nox -s compiled` sets it: its run must not pass on the interpreted layer.
    if os.environ.get("CHANSERV_TRIO_EXPECT_COMPILED") == "1" and not wire.COMPILED:
        raise pytest.UsageError(
            f"CHANSERV_TRIO_EXPECT_COMPILED=1 but {cs.__file__} runs the interpreted wire layer"
        )


@pytest.fixture
async def server_mpx() -> AsyncIterator[cs.Multiplexer]:
    async with cs.Multiplexer() as mpx:
        yield mpx


@pytest.fixture
async def address(server_mpx: cs.Multiplexer) -> str:
    return await server_mpx.listen("tcp://127.0.0.1:0")


@pytest.fixture
async def client_mpx(address: str) -> AsyncIterator[cs.Multiplexer]:
    async with cs.Multiplexer() as mpx:
        await mpx.join(address)
        yield mpx
