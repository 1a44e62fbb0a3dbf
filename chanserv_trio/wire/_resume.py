"""Resumption, sans-IO: the positions and the replay buffer (``docs/protocol.md``, section 17).

A resumable link counts, in bytes, the frames each side sent and received after its
first HELLO. :class:`ResumeBuffer` keeps the frames sent and not yet confirmed by the
peer; when a new transport replaces a broken one, each side tells the other its
received position and replays the rest from here. No trio, no I/O:
:class:`~chanserv_trio.wire._connection.Connection` owns one buffer per resumable link.
"""

from __future__ import annotations

import secrets
import struct
from bisect import bisect_right
from collections import deque
from itertools import accumulate, chain
from typing import Final

import attrs

__all__ = [
    "MIN_RESUME_BUFFER",
    "TOKEN_SIZE",
    "ResumeBuffer",
    "ResumeOptions",
    "new_token",
    "pack_position_window",
]

#: Bytes of a resume token (``secrets.token_bytes``).
TOKEN_SIZE: Final = 16
#: The smallest ``resume_buffer_size`` (room for one control frame or so).
MIN_RESUME_BUFFER: Final = 1024
#: A WINDOW on stream 0 of a resumable link: the increment and the received position.
POSITION_WINDOW: Final = struct.Struct(">IQ")


def new_token() -> bytes:
    """A fresh secret resume token."""
    return secrets.token_bytes(TOKEN_SIZE)


def pack_position_window(increment: int, position: int) -> bytes:
    """The 12-byte payload of a WINDOW on stream 0 of a resumable link."""
    return POSITION_WINDOW.pack(increment, position)


@attrs.frozen
class ResumeOptions:
    """What one side asks for: how long it keeps a detached link, how much it holds."""

    #: Seconds a link whose transport broke is kept, waiting to resume.
    timeout: float
    #: Bytes of unconfirmed frames kept for replay; senders wait when it is full.
    buffer_size: int = 4 << 20

    def __attrs_post_init__(self) -> None:
        if not self.timeout > 0:
            raise ValueError(f"resume_timeout must be above 0 seconds, not {self.timeout}")
        if self.buffer_size < MIN_RESUME_BUFFER:
            raise ValueError(
                f"resume_buffer_size must be at least {MIN_RESUME_BUFFER}, not {self.buffer_size}"
            )

    @property
    def timeout_ms(self) -> int:
        """The timeout as RESUME_TIMEOUT carries it (at least 1 ms)."""
        return max(1, round(self.timeout * 1000))


class ResumeBuffer:
    """The frames sent after the first HELLO and not yet confirmed by the peer.

    Positions are byte offsets in the stream of frames after the first HELLO:
    :attr:`start` is the first byte still held (everything before it was confirmed),
    :attr:`end` the sent position. Chunks are kept as the connection queued them
    (``bytes``, or ``memoryview`` of immutable ``bytes``), never copied, in batches:
    each :meth:`extend` is one batch (its list is held as it is, never changed), so a
    confirmation drops whole batches at a time and splits at most one.
    """

    __slots__ = ("_batches", "_sizes", "end", "peak", "start")

    def __init__(self) -> None:
        self._batches: deque[list[bytes | memoryview]] = deque()
        #: Bytes of each batch still held (the first may have lost a confirmed part).
        self._sizes: deque[int] = deque()
        #: The position of the first byte held.
        self.start = 0
        #: The sent position: one past the last byte held.
        self.end = 0
        #: The most bytes held at once so far.
        self.peak = 0

    @property
    def size(self) -> int:
        """Bytes held."""
        return self.end - self.start

    def extend(self, chunks: list[bytes | memoryview], size: int) -> None:
        """Hold ``chunks`` (``size`` bytes in all), just handed to the transport. The
        list is kept, not copied: the caller must not change it afterwards."""
        if not size:
            return
        self._batches.append(chunks)
        self._sizes.append(size)
        self.end += size
        held = self.end - self.start
        if held > self.peak:
            self.peak = held

    def confirm(self, position: int) -> int:
        """The peer received everything before ``position``: drop it. Returns the bytes
        dropped (0 for a stale position); raises ``ValueError`` beyond :attr:`end`."""
        if position > self.end:
            raise ValueError(f"position {position} is beyond the {self.end} bytes sent")
        drop = position - self.start
        if drop <= 0:
            return 0
        batches, sizes = self._batches, self._sizes
        left = drop
        while left >= sizes[0]:
            left -= sizes.popleft()
            batches.popleft()
            if not left:
                break
        if left:
            # Split the first batch: keep the chunks from the one ``left`` falls in.
            batch = batches[0]
            ends = list(accumulate(map(len, batch)))
            index = bisect_right(ends, left)
            rest = batch[index:]
            cut = left - (ends[index - 1] if index else 0)
            if cut:
                rest[0] = memoryview(rest[0])[cut:]
            batches[0] = rest
            sizes[0] -= left
        self.start = position
        return drop

    def holds(self, position: int) -> bool:
        """Whether everything after ``position`` can be replayed."""
        return self.start <= position <= self.end

    def replay(self, position: int) -> list[bytes | memoryview]:
        """Every chunk after ``position`` (which the caller checked with :meth:`holds`),
        and drop what comes before it: the peer has it."""
        self.confirm(position)
        return list(chain.from_iterable(self._batches))
