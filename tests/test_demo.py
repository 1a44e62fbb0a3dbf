"""The README example, end to end over real TCP loopback."""

from __future__ import annotations

import io

import trio

from chanserv_trio._cli import run_demo


async def test_demo_prints_every_source_and_frame() -> None:
    out = io.StringIO()
    with trio.fail_after(10):
        await run_demo(out=out)
    text = out.getvalue()
    for index in range(5):
        assert f"[source @{index}] frame 1: wait for me!" in text
        assert f"[source @{index}] frame 2: ok I'm ready" in text
        assert f"[source @{index}] done after 2 frames" in text
    assert text.rstrip().endswith("demo finished")
