"""Shared fixtures: a served multiplexer and a joined client, over TCP loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

import chanserv_trio as cs


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
