"""The js-node peer's client: the JavaScript package (``js/``) on Node over WebSocket.

The scenario driver is the same Python code as every peer's; each request goes to a Node
process (``benchmarks/js_node_client.mjs``) that posts it with ``node.post`` and reads
every source concurrently, and reports the frames, bytes and times it measured itself.
Run by the runner as ``python -m benchmarks.client_js_node --port P --scenario S ...``;
only flood and heavy.
"""

from __future__ import annotations

import contextlib
import json
import math
import shutil
import subprocess
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import trio

from . import _ours_service as ours_service
from ._pacing import trio_harness
from ._scenarios import Buffered, Fetched, Throttle, client_arguments, drive
from ._workload import Shape

SCRIPT = Path(__file__).resolve().with_name("js_node_client.mjs")
#: Seconds one request may take before the Node process is considered stuck.
REQUEST_TIMEOUT = 120.0


class JsNodeClient:
    def __init__(self, port: int) -> None:
        self._url = f"ws://127.0.0.1:{port}{ours_service.PATHS['ws']}"
        self._process: trio.Process | None = None
        self._buffer = b""

    async def _line(self) -> dict[str, object]:
        assert self._process is not None and self._process.stdout is not None
        while b"\n" not in self._buffer:
            chunk = await self._process.stdout.receive_some()
            if not chunk:
                raise RuntimeError("the Node client exited")
            self._buffer += chunk
        line, self._buffer = self._buffer.split(b"\n", 1)
        reply: dict[str, object] = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"the Node client failed: {reply['error']}")
        return reply

    @contextlib.asynccontextmanager
    async def connected(self) -> AsyncIterator[None]:
        node = shutil.which("node")
        if node is None:
            raise RuntimeError("node is not installed")
        async with trio.open_nursery() as nursery:
            self._process = await nursery.start(
                partial(
                    trio.run_process,
                    [node, str(SCRIPT), self._url],
                    stdin=subprocess.PIPE,
                    stdout=subprocess.PIPE,
                    check=False,
                )
            )
            try:
                with trio.fail_after(30):
                    await self._line()  # connected
                yield
            finally:
                assert self._process.stdin is not None
                await self._process.stdin.aclose()
                with trio.move_on_after(5):
                    await self._process.wait()
                self._process.kill()

    async def fetch(self, shape: Shape, throttle: Throttle | None = None) -> Fetched:
        if throttle is not None:
            raise NotImplementedError("the js-node peer runs flood and heavy only")
        assert self._process is not None and self._process.stdin is not None
        request = {"body": shape.encode().decode(), "sources": shape.sources}
        await self._process.stdin.send_all(json.dumps(request).encode() + b"\n")
        with trio.fail_after(REQUEST_TIMEOUT):
            reply = await self._line()
        done_at = [math.nan if at is None else float(at) for at in reply["done_at"]]  # type: ignore[attr-defined]
        return Fetched(
            int(reply["frames"]),  # type: ignore[call-overload]
            int(reply["payload_bytes"]),  # type: ignore[call-overload]
            float(reply["elapsed"]),  # type: ignore[arg-type]
            done_at,
        )

    async def cold_fetch(self, shape: Shape) -> float:
        raise NotImplementedError("the js-node peer runs flood and heavy only")

    async def begin_sampling(self) -> None:
        raise NotImplementedError("the js-node peer runs flood and heavy only")

    async def end_sampling(self) -> Buffered:
        raise NotImplementedError("the js-node peer runs flood and heavy only")


if __name__ == "__main__":
    arguments = client_arguments()
    trio.run(
        drive,
        JsNodeClient(arguments.port),
        arguments.scenario,
        arguments.settings,
        trio_harness(arguments.paced),
    )
