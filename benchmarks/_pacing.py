"""How a client process waits for its turn: a line on stdin from the runner, read in a thread so
the client's event loop (and its connection's keep-alives) go on meanwhile."""

from __future__ import annotations

import asyncio
import sys

import trio

from ._scenarios import Harness, emit_json


def _next_line() -> None:
    if not sys.stdin.readline():
        raise SystemExit("the runner went away")


async def _no_wait() -> None:
    """Unpaced: every run goes at once."""


async def _trio_turn() -> None:
    await trio.to_thread.run_sync(_next_line)


async def _asyncio_turn() -> None:
    await asyncio.to_thread(_next_line)


def trio_harness(paced: bool) -> Harness:
    """The harness for a client that runs under trio."""
    return Harness(emit_json, _trio_turn if paced else _no_wait)


def asyncio_harness(paced: bool) -> Harness:
    """The harness for a client that runs under asyncio."""
    return Harness(emit_json, _asyncio_turn if paced else _no_wait)
