"""Source functions for ``chanserv-trio serve`` in tests/test_cli.py (imported by the
command in a subprocess, as ``cli_sources:NAME``).

The request body picks what happens: ``boom`` raises, ``binary`` sends bytes that are
not UTF-8 and control bytes, ``slow SECONDS`` sends its second frame after that long
(``forever``: never), anything else is echoed.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import trio

import chanserv_trio as cs


async def _slow(seconds: float) -> AsyncIterator[bytes]:
    yield b"started"
    await trio.sleep(seconds)
    yield b"finished"


async def sources(request: bytes) -> AsyncIterator[cs.Source]:
    """What the tests serve."""
    if request == b"boom":
        raise ValueError("boom")
    if request == b"binary":
        yield cs.Source(header=b"bin\x00ary", frames=_frames([b"\xff\xfe", b"\x1b[31mred"]))
        return
    if request.startswith(b"slow "):
        word = request.removeprefix(b"slow ")
        yield cs.Source(header=b"slow", frames=_slow(float("inf" if word == b"forever" else word)))
        return
    yield cs.Source(header=b"echo", frames=_frames([request]))


async def _frames(frames: list[bytes]) -> AsyncIterator[bytes]:
    for frame in frames:
        yield frame


async def two_arguments(request: bytes, extra: bytes) -> AsyncIterator[cs.Source]:
    """Not a source function: it takes two arguments."""
    yield cs.Source()


async def coroutine(request: bytes) -> None:
    """Not a source function: an ``async def`` without ``yield``."""


NOT_CALLABLE = 42
