"""Faults on the wire: a proxy cuts, resets, stalls, truncates, corrupts or delays the TCP
byte stream between a client and a server at a random point. Whatever it does, the client
gets either every frame of every source, in order, exactly once, or a typed
``cs.ChanservError``; never a silent truncation, a duplicate, a reordering, another
exception, or a hang. After each fault the server still serves a fresh client.

Every frame carries its request, source and sequence number and a CRC-32 trailer. The wire
protocol has no checksum of its own: it trusts the transport's integrity, as TCP and TLS
give it. So a byte corrupted inside a DATA payload reaches the application, which only the
frame's own checksum can notice; the test asserts exactly that (the damaged frame is
flagged, every other frame is intact and the request completes). Corruption aimed at a
frame header must instead end in a protocol error.
"""

from __future__ import annotations

import random
import struct
import zlib
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import attrs
import pytest
import trio
from faultproxy import Direction, Fault, FaultPlan, FaultProxy, FieldHit

import chanserv_trio as cs
from chanserv_trio.wire._codec import FrameType

SERVICE = "faults"
SEED = 20240611
CASES = 72
#: Longest a case may take, stalls and closing included; past it the case hangs.
CASE_LIMIT = 6.0

# The client detects a silent peer within keepalive interval + timeout (+ one interval
# of polling), and a source with no frame for frame_read_timeout ends typed as well.
KEEPALIVE_INTERVAL = 0.1
KEEPALIVE_TIMEOUT = 0.2
DIAL_TIMEOUT = 0.6
FRAME_READ_TIMEOUT = 0.6


def client_multiplexer(on_error: Callable[[BaseException], object]) -> cs.Multiplexer:
    return cs.Multiplexer(
        keepalive_interval=KEEPALIVE_INTERVAL,
        keepalive_timeout=KEEPALIVE_TIMEOUT,
        handshake_timeout=0.5,
        shutdown_grace=0.1,
        # Small windows and frames, so WINDOW updates flow to the server and large frames
        # are split into several DATA chunks: both are then exposed to the faults.
        settings=cs.Settings(
            initial_stream_window=4096, connection_window=16384, max_frame_payload=1024
        ),
        on_error=on_error,
    )


_REQUEST = struct.Struct(">IHHH")  # case, sources, frames per source, largest frame
_HEADER = struct.Struct(">IH")  # case, source index
_FRAME = struct.Struct(">IHI")  # case, source index, sequence number
_CRC = struct.Struct(">I")


# ------------------------------------------------------------------- payloads


@attrs.frozen
class Shape:
    """What one request asks for."""

    case: int
    sources: int
    frames: int
    largest: int

    def encode(self) -> bytes:
        return _sealed(_REQUEST.pack(self.case, self.sources, self.frames, self.largest))

    @classmethod
    def decode(cls, body: bytes) -> Shape:
        return cls(*_REQUEST.unpack(_unsealed(body, "request")))


def _sealed(data: bytes) -> bytes:
    return data + _CRC.pack(zlib.crc32(data))


def _unsealed(data: bytes, what: str) -> bytes:
    body, trailer = data[:-4], data[-4:]
    if len(data) < 4 or _CRC.pack(zlib.crc32(body)) != trailer:
        raise ValueError(f"{what} damaged in transit")
    return body


def source_header(case: int, index: int) -> bytes:
    return _sealed(_HEADER.pack(case, index))


def frame_size(shape: Shape, index: int, seq: int) -> int:
    return 1 + (seq * 977 + index * 131 + shape.case * 7) % shape.largest


def make_frame(shape: Shape, index: int, seq: int) -> bytes:
    filler = random.Random(shape.case * 1_000_003 + index * 1009 + seq)
    payload = filler.randbytes(frame_size(shape, index, seq))
    return _sealed(_FRAME.pack(shape.case, index, seq) + payload)


def frame_seq(frame: bytes, shape: Shape, index: int) -> int | None:
    """The frame's sequence number, or None if its checksum or identity is wrong."""
    try:
        body = _unsealed(frame, "frame")
    except ValueError:
        return None
    case, source, seq = _FRAME.unpack_from(body)
    if (case, source) != (shape.case, index) or len(body) != _FRAME.size + frame_size(
        shape, index, seq
    ):
        return None
    return int(seq)


async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
    shape = Shape.decode(request)  # a damaged request raises: RemoteError for the client

    async def frames(index: int) -> AsyncIterator[bytes]:
        for seq in range(shape.frames):
            yield make_frame(shape, index, seq)

    for index in range(shape.sources):
        yield cs.Source(header=source_header(shape.case, index), frames=frames(index))


# -------------------------------------------------------------------- clients

#: Marks a frame whose checksum failed.
DAMAGED = -1


@attrs.define
class SourceLog:
    index: int
    seqs: list[int] = attrs.Factory(list)
    ended: bool = False


@attrs.define
class Outcome:
    """What the client saw of one request."""

    announced: list[int] = attrs.Factory(list)
    logs: list[SourceLog] = attrs.Factory(list)
    master_ended: bool = False
    errors: list[cs.ChanservError] = attrs.Factory(list)

    def complete(self, shape: Shape) -> bool:
        return (
            self.master_ended
            and len(self.logs) == shape.sources
            and all(log.ended and len(log.seqs) == shape.frames for log in self.logs)
        )

    @property
    def damaged(self) -> int:
        return sum(log.seqs.count(DAMAGED) for log in self.logs)


async def consume(source: cs.RemoteSource, shape: Shape, log: SourceLog, outcome: Outcome) -> None:
    try:
        async for frame in source:
            seq = frame_seq(frame, shape, log.index)
            log.seqs.append(DAMAGED if seq is None else seq)
        log.ended = True
    except cs.ChanservError as exc:
        outcome.errors.append(exc)


async def post(client: cs.Client, shape: Shape, outcome: Outcome) -> None:
    """Post ``shape`` and record everything that comes back into ``outcome``."""
    async with (
        client.lookup_and_post(SERVICE, shape.encode()) as sources,
        trio.open_nursery() as nursery,
    ):
        try:
            async for source in sources:
                case, index = _HEADER.unpack(_unsealed(source.header, "source header"))
                assert case == shape.case, source.header
                outcome.announced.append(index)
                log = SourceLog(index)
                outcome.logs.append(log)
                nursery.start_soon(consume, source, shape, log, outcome)
            outcome.master_ended = True
        except cs.ChanservError as exc:
            outcome.errors.append(exc)


def verdict(shape: Shape, outcome: Outcome) -> list[str]:
    """Breaches of the rules that hold whatever the fault: problems, or []."""
    problems: list[str] = []
    if outcome.announced != list(range(len(outcome.announced))):
        problems.append(f"sources announced out of order or twice: {outcome.announced}")
    if outcome.master_ended and len(outcome.announced) != shape.sources:
        problems.append(
            f"silent truncation: the request ended normally after "
            f"{len(outcome.announced)} of {shape.sources} sources"
        )
    for log in outcome.logs:
        wrong = [(at, seq) for at, seq in enumerate(log.seqs) if seq not in (at, DAMAGED)]
        if wrong:
            problems.append(
                f"source {log.index}: frames lost, duplicated or reordered: {log.seqs}"
            )
        if log.ended and len(log.seqs) != shape.frames:
            problems.append(
                f"silent truncation: source {log.index} ended normally after "
                f"{len(log.seqs)} of {shape.frames} frames"
            )
    if not outcome.complete(shape) and not outcome.errors:
        problems.append("the request ended incomplete without an error")
    return problems


# --------------------------------------------------------------------- server


@attrs.define
class FaultServer:
    mpx: cs.Multiplexer
    address: str
    link_errors: list[BaseException]
    request_errors: list[BaseException]

    @property
    def host_port(self) -> tuple[str, int]:
        host, port = self.address.removeprefix("tcp://").rsplit(":", 1)
        return host, int(port)


@asynccontextmanager
async def fault_server() -> AsyncIterator[FaultServer]:
    link_errors: list[BaseException] = []
    request_errors: list[BaseException] = []
    async with cs.Multiplexer(
        keepalive_interval=0.2,
        keepalive_timeout=0.3,
        write_timeout=1.0,
        shutdown_grace=0.2,
        on_error=link_errors.append,
    ) as mpx:
        address = await mpx.listen("tcp://127.0.0.1:0")
        server = cs.Server(mpx, on_error=request_errors.append)
        await server.listen_and_serve(SERVICE, source_fn)
        yield FaultServer(mpx, address, link_errors, request_errors)


async def wait_until(predicate: Callable[[], bool]) -> None:
    """Poll ``predicate``; wrap the call in ``trio.fail_after``."""
    while not predicate():  # noqa: ASYNC110 - the condition is the library's state
        await trio.sleep(0.005)


async def run_through_proxy(
    server: FaultServer, plan: FaultPlan, shape: Shape
) -> tuple[Outcome, FaultProxy, list[BaseException]]:
    """Post ``shape`` through a proxy applying ``plan``; returns what the client saw."""
    proxy = FaultProxy(*server.host_port, plan)
    outcome = Outcome()
    client_errors: list[BaseException] = []
    with trio.fail_after(CASE_LIMIT):
        async with trio.open_nursery() as nursery:
            url = await nursery.start(proxy.run)
            async with client_multiplexer(client_errors.append) as mpx:
                try:
                    await mpx.join(url)
                    client = cs.Client(
                        mpx, dial_timeout=DIAL_TIMEOUT, frame_read_timeout=FRAME_READ_TIMEOUT
                    )
                    await post(client, shape, outcome)
                except cs.ChanservError as exc:
                    outcome.errors.append(exc)
            nursery.cancel_scope.cancel()
    return outcome, proxy, client_errors


async def assert_still_serving(server: FaultServer, case: int) -> None:
    """The faulty link is gone from the server, and a fresh direct client is served."""
    with trio.fail_after(3):
        await wait_until(lambda: server.mpx.statistics().links == 0)
    shape = Shape(case, sources=2, frames=3, largest=200)
    outcome = Outcome()
    with trio.fail_after(3):
        async with cs.Multiplexer() as mpx:
            await mpx.join(server.address)
            await post(cs.Client(mpx, dial_timeout=1.0), shape, outcome)
    assert outcome.complete(shape) and not outcome.errors, (case, outcome)
    with trio.fail_after(3):
        await wait_until(lambda: server.mpx.statistics().links == 0)
    stats = server.mpx.statistics()
    assert stats.open_streams == 0 and stats.bytes_buffered == 0, stats


# ---------------------------------------------------------------------- cases

_KINDS = [
    Fault.NONE,
    Fault.CUT,
    Fault.RESET,
    Fault.STALL,
    Fault.STALL_ONE_WAY,
    Fault.TRUNCATE,
    Fault.CORRUPT_HEADER,
    Fault.CORRUPT_PAYLOAD,
    Fault.DELAY,
]
_FIELDS = list(FieldHit)


def case_plan(case: int, measured: dict[Direction, int]) -> tuple[Shape, FaultPlan]:
    """The seeded shape and fault of case number ``case``.

    ``measured`` is how many bytes went each way in a fault-free run of the same shape,
    so the fault point falls somewhere inside the conversation.
    """
    rng = random.Random(SEED * 1000 + case)
    kind = _KINDS[case % len(_KINDS)]
    direction = list(Direction)[(case // len(_KINDS)) % 2]
    plan = FaultPlan(
        kind,
        direction,
        offset=rng.randrange(max(1, measured[direction])),
        hold=rng.uniform(0.05, 0.3),
        field=_FIELDS[(case // (2 * len(_KINDS))) % len(_FIELDS)],
        seed=rng.randrange(2**32),
    )
    return case_shape(case), plan


def case_shape(case: int) -> Shape:
    rng = random.Random(SEED * 1000 + case)
    return Shape(
        case,
        sources=rng.randint(1, 4),
        frames=rng.randint(1, 6),
        largest=rng.choice([40, 600, 2500]),
    )


def _header_damage_is_legal(proxy: FaultProxy) -> bool:
    """A damaged header the protocol may accept: HELLO's stream id is not checked, and
    an OPEN with a fresh id is a new stream (its real frames are then dropped as frames
    of a closed stream, which the receiver times out on)."""
    damage = proxy.damage
    assert damage is not None
    return proxy.plan.field is FieldHit.STREAM_ID and damage.frame_type in (
        FrameType.HELLO,
        FrameType.OPEN,
    )


def expectations(
    shape: Shape,
    plan: FaultPlan,
    proxy: FaultProxy,
    outcome: Outcome,
    client_errors: list[BaseException],
    server: FaultServer,
    server_errors_before: int,
) -> list[str]:
    """What this particular fault must lead to, beyond :func:`verdict`."""
    problems: list[str] = []
    complete = outcome.complete(shape)
    kind = plan.kind
    damaged_payload = (
        kind is Fault.CORRUPT_PAYLOAD and plan.direction is Direction.TO_CLIENT and proxy.fired
    )
    if (kind in (Fault.NONE, Fault.DELAY) or damaged_payload) and not complete:
        problems.append(f"{kind.value} must deliver every frame; errors: {outcome.errors}")
    expected_damage = 1 if damaged_payload else 0
    if outcome.damaged != expected_damage:
        problems.append(
            f"{outcome.damaged} frames failed their checksum, expected {expected_damage}"
        )
    if kind in (Fault.CUT, Fault.RESET, Fault.STALL, Fault.STALL_ONE_WAY, Fault.TRUNCATE):
        for error in outcome.errors:
            if isinstance(error, cs.ProtocolError) or not isinstance(
                error, cs.ConnectionLost | cs.DeadlineExceeded | cs.ServiceNotFound
            ):
                problems.append(f"a clean {kind.value} ended in {error!r}")
    if kind is Fault.CORRUPT_HEADER and proxy.fired and not _header_damage_is_legal(proxy):
        if plan.direction is Direction.TO_SERVER:
            new = server.link_errors[server_errors_before:]
            if not any(isinstance(error, cs.ProtocolError) for error in new):
                problems.append(f"the server did not report a protocol error: {new}")
        if not complete:
            for error in outcome.errors:
                # Damage in the frame right behind the client's HELLO can end the link
                # before the server advertised anything: then no node offers the service
                # as far as the client knows (the server reported the protocol error).
                before_any_offer = (
                    isinstance(error, cs.ServiceNotFound)
                    and plan.direction is Direction.TO_SERVER
                    and not outcome.announced
                )
                if not isinstance(error, cs.ProtocolError) and not before_any_offer:
                    problems.append(f"a damaged header ended in {error!r}, not ProtocolError")
            if plan.direction is Direction.TO_CLIENT and not any(
                isinstance(error, cs.ProtocolError) for error in client_errors
            ):
                problems.append(f"the client did not report a protocol error: {client_errors}")
    return problems


async def test_proxy_without_a_fault_is_transparent() -> None:
    shape = Shape(1, sources=3, frames=4, largest=2500)
    async with fault_server() as server:
        outcome, proxy, client_errors = await run_through_proxy(
            server, FaultPlan(Fault.NONE), shape
        )
        assert verdict(shape, outcome) == []
        assert outcome.complete(shape) and outcome.damaged == 0
        assert not outcome.errors and not client_errors
        assert proxy.forwarded[Direction.TO_CLIENT] > shape.sources * shape.frames * 10
        assert proxy.forwarded[Direction.TO_SERVER] > 0
        await assert_still_serving(server, 2)


async def test_faults_end_in_every_frame_or_a_typed_error() -> None:
    # Breaches are collected and asserted once the server is closed, so they read plainly
    # (an assertion inside the multiplexer's block comes out wrapped in a group).
    breaches: list[tuple[int, Shape, FaultPlan, object, list[str], Outcome]] = []
    seen: dict[tuple[Fault, Direction], int] = {}
    async with fault_server() as server:
        for case in range(CASES):
            shape = case_shape(case)
            try:
                control, proxy, _ = await run_through_proxy(server, FaultPlan(Fault.NONE), shape)
                assert control.complete(shape) and not control.errors, control
                await assert_still_serving(server, 100_000 + case)
                shape, plan = case_plan(case, proxy.forwarded)
                errors_before = len(server.link_errors)
                outcome, proxy, client_errors = await run_through_proxy(server, plan, shape)
                await assert_still_serving(server, 200_000 + case)
            except BaseException as exc:
                exc.add_note(f"fault case {case}: {shape}")
                raise
            problems = verdict(shape, outcome) + expectations(
                shape, plan, proxy, outcome, client_errors, server, errors_before
            )
            if problems:
                breaches.append((case, shape, plan, proxy.damage, problems, outcome))
            key = (plan.kind, plan.direction)
            seen[key] = seen.get(key, 0) + proxy.fired
    assert breaches == []
    # Every kind of fault really happened in both directions (the offsets were inside
    # the conversation), so the property was not checked on idle connections only.
    missing = [
        (kind, way) for kind in _KINDS[1:] for way in Direction if not seen.get((kind, way))
    ]
    assert missing == []


async def test_a_stalled_connection_is_detected_within_the_keepalive_bound() -> None:
    shape = Shape(3, sources=2, frames=3, largest=100)
    async with fault_server() as server:
        # Stall right after the handshake and service advertisement: the link is up, then
        # nothing more arrives either way and nothing is closed.
        control, proxy, _ = await run_through_proxy(server, FaultPlan(Fault.NONE), shape)
        assert control.complete(shape)
        hello_size = 10 + 8 + 6 * 10
        plan = FaultPlan(Fault.STALL, Direction.TO_CLIENT, offset=hello_size + 10 + len(SERVICE))
        started = trio.current_time()
        outcome, proxy, client_errors = await run_through_proxy(server, plan, shape)
        elapsed = trio.current_time() - started
        assert proxy.fired
        assert verdict(shape, outcome) == []
        assert not outcome.announced
        [error] = outcome.errors
        # The service was advertised, then silence: keepalive declares the link lost (or,
        # if the advertisement was cut short, the dial gives up at dial_timeout).
        assert (isinstance(error, cs.ConnectionLost) and "keepalive" in str(error)) or isinstance(
            error, cs.ServiceNotFound
        ), error
        # Once keepalive has dropped the link the client redials the proxy, which takes
        # one connection only: a refused redial may be reported, nothing else.
        assert all(
            isinstance(e, cs.ConnectionLost)
            and not isinstance(e, cs.ProtocolError)
            and "cannot connect" in str(e)
            for e in client_errors
        ), client_errors
        bound = max(DIAL_TIMEOUT, 2 * KEEPALIVE_INTERVAL + KEEPALIVE_TIMEOUT)
        assert elapsed < bound + 1.0  # + closing the client (its drain waits up to 1 s)
        await assert_still_serving(server, 4)


async def test_a_damaged_data_payload_is_caught_only_by_the_frame_checksum() -> None:
    shape = Shape(5, sources=2, frames=4, largest=600)
    async with fault_server() as server:
        _, proxy, _ = await run_through_proxy(server, FaultPlan(Fault.NONE), shape)
        half = proxy.forwarded[Direction.TO_CLIENT] // 2
        plan = FaultPlan(Fault.CORRUPT_PAYLOAD, Direction.TO_CLIENT, offset=half, seed=7)
        outcome, proxy, client_errors = await run_through_proxy(server, plan, shape)
        assert proxy.damage is not None and proxy.damage.frame_type == FrameType.DATA
        # The protocol delivers the damaged message as it came (TCP/TLS would have
        # caught it); every other frame is intact and the request completes.
        assert outcome.complete(shape) and outcome.damaged == 1
        assert not outcome.errors and not client_errors
        assert verdict(shape, outcome) == []
        await assert_still_serving(server, 6)


@pytest.mark.parametrize("field", list(FieldHit))
async def test_a_damaged_header_ends_in_a_protocol_error(field: FieldHit) -> None:
    shape = Shape(7, sources=2, frames=4, largest=600)
    async with fault_server() as server:
        await run_through_proxy(server, FaultPlan(Fault.NONE), shape)
        # Past the HELLO, the SERVICE advertisement and the first OPEN: a DATA header.
        plan = FaultPlan(Fault.CORRUPT_HEADER, Direction.TO_CLIENT, offset=200, field=field)
        outcome, proxy, client_errors = await run_through_proxy(server, plan, shape)
        assert proxy.damage is not None and not _header_damage_is_legal(proxy), proxy.damage
        assert verdict(shape, outcome) == []
        assert not outcome.complete(shape)
        assert outcome.errors and all(isinstance(e, cs.ProtocolError) for e in outcome.errors)
        assert any(isinstance(e, cs.ProtocolError) for e in client_errors), client_errors
        await assert_still_serving(server, 8)


async def test_an_error_inside_the_multiplexer_block_comes_out_unwrapped() -> None:
    async with fault_server() as server:
        plan = FaultPlan(Fault.CUT, Direction.TO_CLIENT, offset=5)
        proxy = FaultProxy(*server.host_port, plan)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                url = await nursery.start(proxy.run)
                with pytest.raises(cs.ConnectionLost):
                    async with cs.Multiplexer(handshake_timeout=1.0) as mpx:
                        await mpx.join(url)
                nursery.cancel_scope.cancel()
