"""A fault-injecting TCP proxy for tests: it forwards one connection between a client and
a chanserv_trio server and, at a chosen byte of one direction, cuts, resets, stalls,
truncates, corrupts or delays the byte stream.

The proxy follows the wire protocol's frame boundaries (10-byte header, then ``length``
payload bytes) in the faulty direction, so a corruption can be aimed at a header field
(which the protocol must reject) or inside a payload (which only the application's own
checksum can notice, since the wire protocol trusts the transport's integrity).
"""

from __future__ import annotations

import contextlib
import enum
import random
import socket
import struct
from functools import partial

import attrs
import trio

from chanserv_trio.wire._codec import HEADER, HEADER_SIZE, FrameType

__all__ = ["Direction", "Fault", "FaultPlan", "FaultProxy", "FieldHit"]


class Fault(enum.Enum):
    """What happens to the byte stream once the fault point is reached."""

    #: Forward everything untouched.
    NONE = "none"
    #: Forward up to the point, then close both connections (FIN).
    CUT = "cut"
    #: Forward up to the point, then abort both connections (RST).
    RESET = "reset"
    #: Forward up to the point, then forward nothing either way and keep both open.
    STALL = "stall"
    #: Forward up to the point, then nothing more that way; the other way keeps flowing.
    STALL_ONE_WAY = "stall-one-way"
    #: Forward up to the point, drop the rest of that direction for ``hold`` s, then close.
    TRUNCATE = "truncate"
    #: Flip the top bits of one header field of the first frame starting past the point.
    CORRUPT_HEADER = "corrupt-header"
    #: Flip one byte in the payload of the first DATA (to the client) or OPEN (to the
    #: server) frame past the point.
    CORRUPT_PAYLOAD = "corrupt-payload"
    #: From the point on, split chunks at random and deliver each piece a little late.
    DELAY = "delay"


class Direction(enum.Enum):
    """Which way the faulty bytes travel."""

    TO_SERVER = "to-server"
    TO_CLIENT = "to-client"


class FieldHit(enum.Enum):
    """Which header field a header corruption damages, and how.

    Each mask is chosen so the damaged frame is one the protocol must reject: a length
    of 2**31 or more exceeds every frame limit, a type of 0xF0 or more is unknown, and a
    stream id with the top bit set was never opened (except for HELLO, whose stream id
    the protocol does not check, and OPEN, which legitimately introduces a new id).
    """

    LENGTH = (0, 0x80)
    TYPE = (4, 0xF0)
    STREAM_ID = (6, 0x80)

    def __init__(self, offset: int, mask: int) -> None:
        self.offset = offset
        self.mask = mask


@attrs.frozen
class FaultPlan:
    """One fault: what, which way, and after how many bytes of that direction."""

    kind: Fault
    direction: Direction = Direction.TO_CLIENT
    #: Bytes of ``direction`` forwarded untouched before the fault starts.
    offset: int = 0
    #: TRUNCATE: seconds the direction is dropped before both connections close.
    hold: float = 0.0
    #: CORRUPT_HEADER: the damaged field.
    field: FieldHit = FieldHit.TYPE
    #: Seeds the byte chosen in a payload and the delays.
    seed: int = 0

    @property
    def payload_type(self) -> FrameType:
        """The frames whose payload CORRUPT_PAYLOAD damages: DATA towards the client
        (the application's frames), OPEN towards the server (the request), since the
        client sends no DATA."""
        return FrameType.OPEN if self.direction is Direction.TO_SERVER else FrameType.DATA


@attrs.define
class _Damage:
    """Where a corruption landed (for the test's verdict)."""

    position: int
    frame_type: int
    stream_id: int
    in_header: bool


class _FrameTracker:
    """Follows frame boundaries of one direction and damages the planned byte."""

    def __init__(self, plan: FaultPlan, rng: random.Random) -> None:
        self.plan = plan
        self.rng = rng
        self.position = 0  # absolute offset of the next byte
        self.header = bytearray()
        self.header_start = 0
        self.payload_left = 0
        #: The byte to damage, once chosen; it stays set after the damage is done.
        self.target: _Damage | None = None
        self.mask = 0
        self.done = False

    def feed(self, data: bytes) -> bytes:
        """Track ``data`` (as the sender meant it); returns it with the planned byte
        damaged if that byte is in it."""
        view = memoryview(data)
        index = 0
        while index < len(view):
            if self.payload_left:
                step = min(self.payload_left, len(view) - index)
                self.payload_left -= step
                index += step
                continue
            if not self.header:
                self.header_start = self.position + index
                self._maybe_target_header()
            step = min(HEADER_SIZE - len(self.header), len(view) - index)
            self.header += view[index : index + step]
            index += step
            if len(self.header) == HEADER_SIZE:
                length, ftype, _, stream_id = HEADER.unpack(self.header)
                self.header.clear()
                self.payload_left = length
                self._on_header(length, ftype, stream_id)
        start = self.position
        self.position += len(data)
        target = self.target
        if not self.done and target is not None and start <= target.position < self.position:
            damaged = bytearray(data)
            damaged[target.position - start] ^= self.mask
            self.done = True
            return bytes(damaged)
        return data

    def _maybe_target_header(self) -> None:
        plan = self.plan
        if (
            self.target is None
            and plan.kind is Fault.CORRUPT_HEADER
            and self.header_start >= plan.offset
        ):
            self.target = _Damage(self.header_start + plan.field.offset, -1, -1, True)
            self.mask = plan.field.mask

    def _on_header(self, length: int, ftype: int, stream_id: int) -> None:
        plan = self.plan
        target = self.target
        if target is not None and target.in_header and target.frame_type < 0:
            target.frame_type, target.stream_id = ftype, stream_id  # what the damage hit
        payload_start = self.header_start + HEADER_SIZE
        if (
            target is None
            and plan.kind is Fault.CORRUPT_PAYLOAD
            and length
            and ftype == plan.payload_type
            and payload_start >= plan.offset
        ):
            where = payload_start + self.rng.randrange(length)
            self.target = _Damage(where, ftype, stream_id, False)
            self.mask = self.rng.randrange(1, 256)


class FaultProxy:
    """Forwards the first connection it accepts to ``target`` and applies ``plan``.

    Run it with ``url = await nursery.start(proxy.run)``; cancel the nursery to stop it,
    which closes whatever is still open.
    """

    def __init__(self, target_host: str, target_port: int, plan: FaultPlan) -> None:
        self.target = (target_host, target_port)
        self.plan = plan
        self.rng = random.Random(plan.seed)
        #: The fault point was reached (the fault took effect).
        self.fired = False
        #: Where a corruption landed, once it did.
        self.damage: _Damage | None = None
        #: Bytes forwarded each way.
        self.forwarded = {Direction.TO_SERVER: 0, Direction.TO_CLIENT: 0}
        self._stalled = trio.Event()
        self._streams: list[trio.SocketStream] = []

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        listener = listeners[0]
        port = listener.socket.getsockname()[1]
        try:
            task_status.started(f"tcp://127.0.0.1:{port}")
            async with listener:
                client = await listener.accept()
            async with client:
                server = await trio.open_tcp_stream(*self.target)
                async with server:
                    self._streams = [client, server]
                    async with trio.open_nursery() as nursery:
                        nursery.start_soon(
                            partial(self._pump, client, server, Direction.TO_SERVER, nursery)
                        )
                        nursery.start_soon(
                            partial(self._pump, server, client, Direction.TO_CLIENT, nursery)
                        )
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # a peer went away: nothing left to forward

    async def _pump(
        self,
        source: trio.SocketStream,
        sink: trio.SocketStream,
        direction: Direction,
        nursery: trio.Nursery,
    ) -> None:
        plan = self.plan
        faulty = direction is plan.direction and plan.kind is not Fault.NONE
        tracker = _FrameTracker(plan, self.rng)
        kind = plan.kind
        position = 0
        dropping = False
        try:
            while True:
                data = await source.receive_some(65536)
                if self._stalled.is_set():
                    await trio.sleep_forever()
                if not data:
                    await sink.send_eof()
                    return
                if not faulty:
                    await self._forward(sink, data, direction)
                    continue
                if kind in (Fault.CORRUPT_HEADER, Fault.CORRUPT_PAYLOAD):
                    await self._forward(sink, self._corrupt(tracker, data), direction)
                    continue
                start, position = position, position + len(data)
                if kind is Fault.DELAY:
                    if position > plan.offset:
                        self.fired = True
                        await self._forward_late(sink, data, direction)
                    else:
                        await self._forward(sink, data, direction)
                    continue
                if dropping:
                    continue
                if position <= plan.offset:
                    await self._forward(sink, data, direction)
                    continue
                # The fault point is inside this chunk.
                await self._forward(sink, data[: plan.offset - start], direction)
                self.fired = True
                if kind is Fault.CUT or kind is Fault.RESET:
                    await self._close_all(abort=kind is Fault.RESET)
                    return
                if kind is Fault.STALL:
                    self._stalled.set()
                    await trio.sleep_forever()
                if kind is Fault.STALL_ONE_WAY:
                    await trio.sleep_forever()
                dropping = True  # TRUNCATE
                nursery.start_soon(self._close_later, plan.hold)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            # One side closed: close the other too, as a plain TCP relay would.
            await self._close_all(abort=False)

    def _corrupt(self, tracker: _FrameTracker, data: bytes) -> bytes:
        out = tracker.feed(data)
        if tracker.done and self.damage is None:
            self.damage = tracker.target
            self.fired = True
        return out

    async def _forward(self, sink: trio.SocketStream, data: bytes, direction: Direction) -> None:
        if data:
            await sink.send_all(data)
            self.forwarded[direction] += len(data)

    async def _forward_late(
        self, sink: trio.SocketStream, data: bytes, direction: Direction
    ) -> None:
        rng = self.rng
        view = memoryview(data)
        while view:
            piece = view[: rng.randint(1, max(1, len(view)))]
            view = view[len(piece) :]
            await trio.sleep(rng.uniform(0.0, 0.004))
            await self._forward(sink, bytes(piece), direction)

    async def _close_later(self, delay: float) -> None:
        await trio.sleep(delay)
        await self._close_all(abort=False)

    async def _close_all(self, *, abort: bool) -> None:
        for stream in self._streams:
            if abort:
                # SO_LINGER with a zero timeout makes close() send RST instead of FIN.
                with contextlib.suppress(OSError):
                    stream.socket.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                    )
            await trio.aclose_forcefully(stream)


class CuttingProxy:
    """Forwards every connection it accepts to ``target``, and breaks them on demand or
    each time ``cut_every`` bytes went through one way: a link that resumes redials
    through it again and again.

    ``kind`` is what a break does: CUT (FIN both ways), RESET (RST both ways), STALL
    (nothing more either way, both kept open) or STALL_ONE_WAY (the client's side
    closed, the server's kept open and silent: half open). While ``down``, new connections are
    closed at once (a node that is not there). ``unix`` listens on, and dials, Unix
    socket paths instead of TCP ports.
    """

    def __init__(
        self,
        target: tuple[str, int] | str,
        *,
        kind: Fault = Fault.CUT,
        cut_every: int | None = None,
        cuts: int = 1 << 30,
        listen_path: str | None = None,
    ) -> None:
        self.target = target
        self.kind = kind
        self.cut_every = cut_every
        #: Breaks left to do by ``cut_every`` (manual ones always happen).
        self.cuts_left = cuts
        self.listen_path = listen_path
        #: Connections accepted, and breaks done.
        self.accepted = 0
        self.breaks = 0
        self.down = False
        self._pairs: list[tuple[trio.SocketStream, trio.SocketStream, trio.Event]] = []
        self._since_break = 0

    async def run(self, *, task_status: trio.TaskStatus[str] = trio.TASK_STATUS_IGNORED) -> None:
        if self.listen_path is not None:
            sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            await sock.bind(self.listen_path)
            sock.listen()
            listener: trio.SocketListener = trio.SocketListener(sock)
            url = f"unix://{self.listen_path}"
        else:
            listener = (await trio.open_tcp_listeners(0, host="127.0.0.1"))[0]
            url = f"tcp://127.0.0.1:{listener.socket.getsockname()[1]}"
        async with listener, trio.open_nursery() as nursery:
            task_status.started(url)
            while True:
                client = await listener.accept()
                nursery.start_soon(self._serve, client)

    async def _connect(self) -> trio.SocketStream:
        # (A socket of our own rather than trio.open_tcp_stream, which can leave the
        # connected socket unclosed when cancelled right as it connects.)
        family = socket.AF_UNIX if isinstance(self.target, str) else socket.AF_INET
        sock = trio.socket.socket(family, socket.SOCK_STREAM)
        try:
            await sock.connect(self.target)
        except BaseException:
            sock.close()
            raise
        return trio.SocketStream(sock)

    async def _serve(self, client: trio.SocketStream) -> None:
        self.accepted += 1
        if self.down:
            await trio.aclose_forcefully(client)
            return
        try:
            server = await self._connect()
        except OSError:
            await trio.aclose_forcefully(client)
            return
        except BaseException:
            await trio.aclose_forcefully(client)
            raise
        stalled = trio.Event()
        pair = (client, server, stalled)
        self._pairs.append(pair)
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._pump, client, server, stalled)
                nursery.start_soon(self._pump, server, client, stalled)
        finally:
            # Closed at once, without a checkpoint that a cancellation could cut short.
            client.socket.close()
            server.socket.close()
            with contextlib.suppress(ValueError):
                self._pairs.remove(pair)

    async def _pump(
        self, source: trio.SocketStream, sink: trio.SocketStream, stalled: trio.Event
    ) -> None:
        try:
            while True:
                data = await source.receive_some(65536)
                if stalled.is_set():
                    await trio.sleep_forever()
                if not data:
                    await sink.send_eof()
                    return
                every = self.cut_every
                if (
                    every is not None
                    and self.cuts_left > 0
                    and self._since_break + len(data) >= every
                ):
                    # Forward part of the chunk (inside a frame, most likely), then break.
                    self.cuts_left -= 1  # (before any await: other pumps check it too)
                    part = max(0, every - self._since_break)
                    await sink.send_all(data[:part])
                    await self.fault()
                    return
                self._since_break += len(data)
                await sink.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            with contextlib.suppress(OSError):
                await trio.aclose_forcefully(sink)
                await trio.aclose_forcefully(source)

    async def fault(self, kind: Fault | None = None) -> None:
        """Break every connection forwarded now."""
        kind = kind or self.kind
        self.breaks += 1
        self._since_break = 0
        for client, server, stalled in list(self._pairs):
            if kind is Fault.STALL:
                stalled.set()
                continue
            if kind is Fault.STALL_ONE_WAY:
                # Half open: the client's connection closes, the server's stays up and
                # silent (the server only learns of it when the client comes back).
                stalled.set()
                await trio.aclose_forcefully(client)
                continue
            for stream in (client, server):
                if kind is Fault.RESET:
                    with contextlib.suppress(OSError):
                        stream.socket.setsockopt(
                            socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
                        )
                await trio.aclose_forcefully(stream)
