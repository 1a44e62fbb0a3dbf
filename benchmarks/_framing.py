"""The ceiling's wire format: length-prefixed frames over plain trio TCP, nothing else.

Each frame is a 5-byte prefix (kind: 1 byte, payload length: 4 bytes, big-endian) and the
payload. A client sends ``REQUEST`` frames; for each the server answers, per source,
``SOURCE`` (the header), the ``FRAME`` frames, ``END_SOURCE``, and after the last source
``END_REQUEST``. There is no multiplexing: sources follow each other on the connection.
"""

from __future__ import annotations

import struct

import trio

REQUEST = 0
SOURCE = 1
FRAME = 2
END_SOURCE = 3
END_REQUEST = 4

PREFIX = struct.Struct("!BI")
#: Buffered output is sent once it reaches this many bytes.
FLUSH_AT = 64 * 1024
#: Payloads this large are sent from their own buffer rather than copied into the output.
LARGE = 64 * 1024
_RECEIVE_MIN = 64 * 1024
_RECEIVE_MAX = 4 * 1024 * 1024


class FrameWriter:
    """Coalesces frames into few ``send_all`` calls."""

    def __init__(self, stream: trio.abc.SendStream) -> None:
        self._stream = stream
        self._out = bytearray()

    async def send(self, kind: int, payload: bytes = b"") -> None:
        """Queue a frame, sending what is queued once there is enough of it."""
        length = len(payload)
        self._out += PREFIX.pack(kind, length)
        if length >= LARGE:
            await self.flush()
            await self._stream.send_all(payload)
            return
        self._out += payload
        if len(self._out) >= FLUSH_AT:
            await self.flush()

    async def flush(self) -> None:
        """Send everything queued."""
        if self._out:
            out, self._out = self._out, bytearray()
            await self._stream.send_all(out)


class FrameReader:
    """Splits the byte stream back into frames, each payload one ``bytes``."""

    def __init__(self, stream: trio.abc.ReceiveStream) -> None:
        self._stream = stream
        self._buffer = bytearray()
        self._start = 0

    async def receive(self) -> tuple[int, bytes]:
        """The next frame; raises ``EOFError`` if the stream ends first."""
        while True:
            buffer = self._buffer
            start = self._start
            available = len(buffer) - start
            needed = PREFIX.size
            if available >= PREFIX.size:
                kind, length = PREFIX.unpack_from(buffer, start)
                needed += length
                if available >= needed:
                    self._start = start + needed
                    with memoryview(buffer) as view:
                        return kind, bytes(view[start + PREFIX.size : start + needed])
            if start:
                del buffer[:start]
                self._start = 0
            data = await self._stream.receive_some(
                min(_RECEIVE_MAX, max(_RECEIVE_MIN, needed - available))
            )
            if not data:
                raise EOFError("the peer closed the connection")
            buffer += data
