"""When a link's peer counts as lost: judged by the PINGs we actually sent.

A link remembers one PING at most, the latest it queued: the peer answers PINGs in
order, so an answer to the latest answers every earlier one, and a peer that talks but
never answers cannot make the record grow. The clock of a PING starts when the writer
has handed it to the transport, not when it was queued, so a PING waiting behind a long
write of ours is not late. The peer is lost when a PING stays unanswered for
``keepalive_timeout`` from then, with two allowances:

- What the peer sent before it read our PING arrives ahead of the answer. While bytes
  keep arriving, and no more than the connection window we grant (plus 4 MiB of
  control frames) since the PING was sent, the timeout counts from the last byte
  heard: a slow link busy carrying a large message is not lost, and a peer that keeps
  sending more than that without answering is.
- A stalled event loop is not the peer's fault. When the keepalive task wakes much
  later than it was due, our own loop (or host) was frozen and the answer may be
  sitting unread in the transport: the time is not counted, the clock restarts, and the
  reader gets its chance to read the answer first.

This module only keeps the record and does the arithmetic (no trio); the link's
keepalive task sleeps and acts on it.
"""

from __future__ import annotations

__all__ = ["STALL", "PingRecord"]

#: A keepalive wake-up this many seconds after it was due (or half the timeout, when
#: that is less) means our own loop stalled.
STALL = 1.0


class PingRecord:
    """The one PING of ours that awaits its answer, and since when."""

    __slots__ = (
        "_bytes_at_send",
        "_queued_at",
        "_restarted",
        "_sent",
        "_since",
        "payload",
        "unwritten_end",
    )

    def __init__(self) -> None:
        #: The payload of the PING awaiting its answer (None: none does).
        self.payload: bytes | None = None
        #: The output position the latest PING's frame ends at while the writer has
        #: not written it yet; 0 otherwise (the writer's one check per write).
        self.unwritten_end = 0
        self._queued_at = 0.0
        # When the writer wrote the latest PING (None: not yet).
        self._sent: float | None = None
        # When the oldest unanswered PING was written, and the bytes received by then.
        self._since: float | None = None
        self._bytes_at_send = 0
        # When the clock last restarted after a stall of our own loop.
        self._restarted = 0.0

    @property
    def outstanding(self) -> int:
        """PINGs remembered as awaiting an answer: 0 or 1."""
        return 0 if self.payload is None else 1

    def queued(self, payload: bytes, end: int, now: float) -> None:
        """A PING with ``payload`` was queued; its frame ends at output position ``end``.
        It replaces any earlier one; the clock of an earlier one already written runs on."""
        self.payload = payload
        self.unwritten_end = end
        self._queued_at = now
        self._sent = None

    def written(self, position: int, now: float, bytes_in: int) -> None:
        """The writer handed every byte before output position ``position`` to the
        transport; ``bytes_in`` bytes had been received by then."""
        if self.unwritten_end and position >= self.unwritten_end:
            self.unwritten_end = 0
            self._sent = now
            if self._since is None:
                self._since = now
                self._bytes_at_send = bytes_in

    def answered(self, payload: bytes, now: float) -> float | None:
        """The peer answered a PING: the round-trip time if it answered the one
        remembered (the record is then clear), else None."""
        if self.payload is None or payload != self.payload:
            return None
        # The answer may be read before the writer task noticed its write finished.
        sent = self._queued_at if self._sent is None else self._sent
        self.payload = None
        self.unwritten_end = 0
        self._sent = self._since = None
        return now - sent

    def stalled(self, now: float) -> None:
        """Our loop was frozen until ``now``: restart the clock of the PING waiting."""
        self._restarted = now

    def deadline(
        self, timeout: float, last_heard: float, bytes_in: int, allowance: int
    ) -> float | None:
        """When the peer counts as lost unless the answer arrived; None while no PING
        of ours is written and unanswered. ``last_heard`` is when bytes last arrived,
        ``bytes_in`` how many so far, ``allowance`` how many may arrive ahead of the
        answer (the connection window we grant, plus control frames)."""
        since = self._since
        if since is None:
            return None
        start = max(since, self._restarted)
        if bytes_in - self._bytes_at_send <= allowance:
            start = max(start, last_heard)
        return start + timeout
