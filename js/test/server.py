"""The Python node the JavaScript package's end-to-end tests talk to.

Run from anywhere as ``python js/test/server.py``: it imports the ``chanserv_trio`` of
the repository it sits in, listens on ``ws://127.0.0.1:0/`` (a router, so a service a
JavaScript node serves is reachable from the Python client it also runs), prints one
JSON line ``{"url": ..., "compression": ...}`` and serves until its standard input
closes or ``CHANSERV_SERVER_LIFETIME`` seconds (default 120) pass.

Services (the request body is JSON where a service takes parameters):

- ``chanserv``: the seed scenario, five sources ``source @i`` of two frames each.
- ``scenario``: ``{"kind": ...}``: ``stall`` (a source of 48 frames of 64 KiB and one of
  20 small frames; records how many of the large ones were produced), ``many``
  (``n`` sources of one frame), ``big`` (one frame of ``n`` bytes, byte i = i % 251),
  ``fail`` (a source whose frames raise, then the source function raises), ``hang``
  (``n`` sources ticking until cancelled; records how they ended and the deadline
  the request arrived with), ``compressible`` (one frame of ``n`` repetitive bytes).
- ``probe``: ``{"id", "wait"}``: one source whose header is that record as JSON, once
  it is complete if ``wait`` (at most 5 s).
- ``reset-source-<code>`` / ``reset-master-<code>``: a raw handler that resets a child
  source, or the master stream, with that code, kind ``Kind`` and message ``text``.
- ``drop-link`` / ``break-link``: closes the link gracefully / with PROTOCOL_ERROR.
- ``spawn-doomed``: starts another node, on its own URL (the source header), whose
  service ``doomed`` streams until that node shuts down with a 0.2 s grace.
- ``relay-call``: ``{"service", "body", "bucket"}``: a Python client joined to this
  router posts to ``service`` and passes on what comes back, headers prefixed.

A second node, at ``auth_url`` in the JSON line, authenticates its peers: the
credential ``js-token`` is the identity ``js-user``, anything else is refused with the
reason "credential refused". It serves ``whoami`` (one source whose header is the
identity's name) and ``guarded``, which allows only the identity ``admin``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

import chanserv_trio as cs  # noqa: E402

RECORDS: dict[str, dict[str, Any]] = {}
DONE: dict[str, trio.Event] = {}
#: Status codes the reset-* services send.
CODES = (2, 5, 6, 7, 8, 9, 10, 15, 77)


def record(key: str) -> dict[str, Any]:
    DONE.setdefault(key, trio.Event())
    return RECORDS.setdefault(key, {})


def finish(key: str) -> None:
    DONE.setdefault(key, trio.Event()).set()


async def seed(_body: bytes) -> AsyncIterator[cs.Source]:
    for i in range(5):

        async def frames(i: int = i) -> AsyncIterator[bytes]:
            yield b"wait for me!"
            await trio.sleep(0.02 * (i + 1))
            yield b"ok I'm ready"

        yield cs.Source(header=b"source @%d" % i, frames=frames())


async def scenario(body: bytes) -> AsyncIterator[cs.Source]:
    params = json.loads(body)
    kind = params["kind"]
    key = params.get("id", "")
    if kind == "stall":
        info = record(key)
        info["produced"] = 0

        async def large() -> AsyncIterator[bytes]:
            for i in range(48):
                info["produced"] = i + 1
                yield bytes([i]) * (64 * 1024)
            finish(key)

        yield cs.Source(header=b"ignored", frames=large())
        yield cs.Source(header=b"read", frames=_small(20))
    elif kind == "many":
        for i in range(params["n"]):
            yield cs.Source(header=b"h%d" % i, frames=_one(b"f%d" % i))
    elif kind == "big":
        pattern = bytes(i % 251 for i in range(251 * 4096))
        data = (pattern * (params["n"] // len(pattern) + 1))[: params["n"]]
        yield cs.Source(header=b"big", frames=_one(data))
    elif kind == "compressible":
        data = (b"chanserv_trio compresses this line. " * (params["n"] // 36 + 1))[: params["n"]]
        yield cs.Source(header=b"compressible", frames=_one(data))
    elif kind == "fail":

        async def broken() -> AsyncIterator[bytes]:
            yield b"one"
            raise RuntimeError("frames broke")

        yield cs.Source(header=b"bad", frames=broken())
        raise ValueError("boom")
    elif kind == "hang":
        info = record(key)
        info["ended"] = []
        deadline = trio.current_effective_deadline()
        info["deadline"] = None if deadline == float("inf") else deadline - trio.current_time()
        for i in range(params.get("n", 1)):
            yield cs.Source(header=b"hang %d" % i, frames=_ticking(key, info, i))
        await trio.sleep_forever()


async def _small(count: int) -> AsyncIterator[bytes]:
    for i in range(count):
        yield b"small %d" % i


async def _one(frame: bytes) -> AsyncIterator[bytes]:
    yield frame


async def _ticking(key: str, info: dict[str, Any], index: int) -> AsyncIterator[bytes]:
    try:
        while True:
            yield b"tick"
            await trio.sleep(0.01)
    except BaseException as exc:
        info["ended"].append([index, type(exc).__name__])
        finish(key)
        raise


async def probe(body: bytes) -> AsyncIterator[cs.Source]:
    params = json.loads(body)
    key = params["id"]
    if params.get("wait"):
        with trio.move_on_after(5):
            await DONE.setdefault(key, trio.Event()).wait()
    yield cs.Source(header=json.dumps(RECORDS.get(key)).encode())


def reset_handler(code: int, where: str) -> Any:
    async def handler(master: cs.LinkStream) -> None:
        child = await master.open_child(b"doomed")
        if where == "source":
            child.reset(code, "text", "Kind")
            master.end()
        else:
            master.reset(code, "text", "Kind")

    return handler


async def drop_link(master: cs.LinkStream) -> None:
    await master.link.aclose()


async def break_link(master: cs.LinkStream) -> None:
    await master.link.aclose(cs.ErrorCode.PROTOCOL_ERROR, "the test breaks the link")


def spawner(nursery: trio.Nursery) -> Any:
    async def spawn_doomed(_body: bytes) -> AsyncIterator[cs.Source]:
        url = await nursery.start(doomed_node)
        yield cs.Source(header=url.encode())

    return spawn_doomed


async def doomed_node(task_status: trio.TaskStatus[str]) -> None:
    shut = trio.Event()

    async def doomed(_body: bytes) -> AsyncIterator[cs.Source]:
        async def frames() -> AsyncIterator[bytes]:
            while True:
                yield b"still here"
                await trio.sleep(0.01)

        yield cs.Source(header=b"doomed", frames=frames())
        shut.set()

    with trio.move_on_after(30):
        async with cs.Multiplexer() as mpx:
            url = await mpx.listen("ws://127.0.0.1:0/")
            await cs.Server(mpx).listen_and_serve("doomed", doomed)
            task_status.started(url)
            await shut.wait()
            await mpx.shutdown(0.2)


def _by_token(credential: bytes, peer: cs.PeerInfo) -> cs.Identity | None:
    return cs.Identity("js-user") if credential == b"js-token" else None


async def whoami(_body: bytes) -> AsyncIterator[cs.Source]:
    identity = cs.current_request().identity
    yield cs.Source(header=b"-" if identity is None else identity.name.encode())


def relayer(client: cs.Client) -> Any:
    async def relay_call(body: bytes) -> AsyncIterator[cs.Source]:
        params = json.loads(body)
        tags = {"bucket": params["bucket"]} if params.get("bucket") else None
        async with client.lookup_and_post(
            params["service"], params["body"].encode(), tags=tags
        ) as sources:
            async for source in sources:
                frames = [frame async for frame in source]
                yield cs.Source(header=b"python got " + source.header, frames=_replay(frames))

    return relay_call


async def _replay(frames: list[bytes]) -> AsyncIterator[bytes]:
    for frame in frames:
        yield frame


async def main() -> None:
    lifetime = float(os.environ.get("CHANSERV_SERVER_LIFETIME", "120"))
    try:
        settings = cs.Settings(compression=True)
        cs.Multiplexer(settings=settings)  # refuses compression without lz4
        compression = True
    except ValueError:
        settings, compression = cs.Settings(), False
    with trio.move_on_after(lifetime):
        async with (
            trio.open_nursery() as nursery,
            # Resumption on: the JavaScript client declines it (its HELLO asks for none),
            # so every test here also shows it keeps working against a resuming node.
            cs.Multiplexer(settings=settings, router=True, resume_timeout=30.0) as mpx,
        ):
            # JavaScript nodes join here to serve: a router trusts their offers.
            url = await mpx.listen("ws://127.0.0.1:0/", accept_offers=True)
            tcp = await mpx.listen("tcp://127.0.0.1:0")
            server = cs.Server(mpx)
            await server.listen_and_serve("chanserv", seed)
            await server.listen_and_serve("scenario", scenario)
            await server.listen_and_serve("probe", probe)
            await server.listen_and_serve("spawn-doomed", spawner(nursery))
            for code in CODES:
                mpx.handle(f"reset-source-{code}", reset_handler(code, "source"))
                mpx.handle(f"reset-master-{code}", reset_handler(code, "master"))
            mpx.handle("drop-link", drop_link)
            mpx.handle("break-link", break_link)
            async with (
                cs.Multiplexer() as client_mpx,
                cs.Multiplexer(authenticate=_by_token) as guarded_mpx,
            ):
                await client_mpx.join(tcp)
                client = cs.Client(client_mpx, dial_timeout=5.0)
                await server.listen_and_serve("relay-call", relayer(client))
                auth_url = await guarded_mpx.listen("ws://127.0.0.1:0/")
                guarded = cs.Server(guarded_mpx)
                await guarded.listen_and_serve("whoami", whoami)
                await guarded.listen_and_serve(
                    "guarded",
                    whoami,
                    allow=lambda identity: identity is not None and identity.name == "admin",
                )
                line = {"url": url, "auth_url": auth_url, "compression": compression}
                print(json.dumps(line), flush=True)
                # Serve until the test closes our standard input.
                await trio.to_thread.run_sync(sys.stdin.read, abandon_on_cancel=True)
                nursery.cancel_scope.cancel()


if __name__ == "__main__":
    trio.run(main)
