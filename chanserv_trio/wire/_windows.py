"""Flow-control windows (sans-IO): what each side may still send, and credit owed back.

One :class:`Windows` per stream, and one for the whole connection. Counted in DATA
payload bytes (uncompressed), in both directions:

- ``send``: what we may still send; the peer's WINDOW frames grow it.
- ``receive``: what the peer may still send; our WINDOW frames grow it.

How receive credit goes back (``docs/protocol.md``, section 10):

- **Whole messages, when consumed.** The frame that completes a message hands the
  message to the application together with its credit, its full size; once consumed
  (:meth:`Windows.consumed`), that credit is owed back, less what its chunks earned.
- **Chunks, while nothing is held.** So that a message larger than the window still
  gets through, a chunk of a message in assembly is credited on arrival, but only
  while the application holds no unconsumed message of the stream; once it consumes
  them all, the chunks that arrived meanwhile are credited. Per stream, buffered
  memory is thus bounded by the window plus one message, whatever the sender does and
  however slowly the application reads.
- **The connection window, on hand-off.** Connection credit is owed as soon as the
  bytes reached their stream (``receive`` goes down and ``owed`` up by the same
  amount), so it bounds bytes in transit, and a stream nobody reads stalls only
  itself.

Owed credit is granted in one WINDOW frame once it reaches a quarter of the window
(:meth:`Windows.due`). A smaller window takes effect as credit comes back: what it
shrank by is withheld first (``debt``).
"""

from __future__ import annotations

from ._settings import MAX_WINDOW

__all__ = ["Windows"]


class Windows:
    """The flow control of one stream, both ways, or of the connection (which holds no
    messages: for it only ``send``, ``receive``, ``size`` and ``owed`` move).

    Every change goes through a method, except on the connection's hottest paths, where
    a call per message would cost more than the arithmetic: ``try_send_message``
    spends ``send`` itself, and a DATA frame is handed off the connection window (and,
    when it is a whole message, charged and held) by the receive path itself.
    """

    __slots__ = (
        "assembly",
        "assembly_credited",
        "debt",
        "held",
        "owed",
        "prepaid",
        "receive",
        "send",
        "size",
    )

    def __init__(self, send: int, receive: int) -> None:
        #: Bytes we may still send before the peer grants more.
        self.send = send
        #: Bytes the peer may still send before we grant more.
        self.receive = receive
        #: The receive window we keep granting (``initial_stream_window`` unless changed).
        self.size = receive
        #: Credit earned back and not yet granted in a WINDOW frame.
        self.owed = 0
        #: Credit still to be withheld because the window was made smaller.
        self.debt = 0
        #: Bytes of whole messages handed to the application and not yet consumed.
        self.held = 0
        #: Bytes of ``held`` already credited back while they were chunks.
        self.prepaid = 0
        #: Bytes of the message in assembly (its chunks so far).
        self.assembly = 0
        #: Bytes of ``assembly`` already credited back.
        self.assembly_credited = 0

    @property
    def buffered(self) -> int:
        """Bytes received and not yet consumed: whole messages held, and chunks."""
        return self.held + self.assembly

    # ---------------------------------------------------------------- sending

    def spend(self, size: int) -> None:
        """We sent DATA of ``size`` bytes (the caller checked it fits ``send``)."""
        self.send -= size

    def granted(self, increment: int) -> bool:
        """The peer's WINDOW grew ``send``; False if it now exceeds 2**31 - 1."""
        self.send += increment
        return self.send <= MAX_WINDOW

    # -------------------------------------------------------------- receiving
    # The caller checks that DATA fits ``receive`` (a flow-control error otherwise).

    def chunk(self, size: int) -> int:
        """A chunk of ``size`` bytes (not a message's last) arrived; returns the credit
        to give back now: all of it while nothing is held, else none."""
        self.receive -= size
        self.assembly += size
        if self.held:
            return 0
        self.assembly_credited += size
        return size

    def message(self, size: int) -> int:
        """The last ``size`` bytes of a message arrived: the whole message is held until
        consumed. Returns its size, the credit its consumption earns."""
        self.receive -= size
        total = self.assembly + size
        self.held += total
        self.prepaid += self.assembly_credited
        self.assembly = self.assembly_credited = 0
        return total

    def consumed(self, credit: int) -> int:
        """The application consumed ``credit`` bytes of held messages; the credit this
        earns (less what their chunks earned, plus the chunks that waited meanwhile)."""
        credit = min(credit, self.held)
        self.held -= credit
        prepaid = min(credit, self.prepaid)
        self.prepaid -= prepaid
        credit -= prepaid
        if not self.held and self.assembly > self.assembly_credited:
            # Nothing left to consume: the message in assembly may now use the window.
            credit += self.assembly - self.assembly_credited
            self.assembly_credited = self.assembly
        return credit

    def consume(self, credit: int) -> int:
        """:meth:`consumed`, then :meth:`owe` what it earns: the increment to grant now.
        One call, and no arithmetic to spare in the most frequent case: nothing prepaid,
        nothing withheld, no chunks waiting."""
        if (
            credit <= self.held
            and not self.prepaid
            and not self.debt
            and self.assembly == self.assembly_credited
        ):
            self.held -= credit
            owed = self.owed + credit
            if owed < self.size >> 2:
                self.owed = owed
                return 0
            self.owed = 0
            self.receive += owed
            return owed
        return self.owe(self.consumed(credit))

    def owe(self, credit: int) -> int:
        """Owe ``credit`` back, less what a smaller window still withholds; returns the
        increment to grant now in a WINDOW frame (all that is owed, once it reaches a
        quarter of the window), else 0."""
        if self.debt:
            withheld = min(credit, self.debt)
            self.debt -= withheld
            credit -= withheld
        if credit <= 0:
            return 0
        owed = self.owed + credit
        if owed < self.size >> 2:
            self.owed = owed
            return 0
        self.owed = 0
        self.receive += owed
        return owed

    def due(self) -> int:
        """The owed credit to grant now (then counted in ``receive``): all of it once it
        reaches a quarter of the window, else 0."""
        owed = self.owed
        if owed < self.size >> 2:
            return 0
        self.owed = 0
        self.receive += owed
        return owed

    def settle(self, credit: int) -> None:
        """Like :meth:`owe` once the peer sends no more: the credit, and what is owed,
        count as granted at once, without telling it."""
        withheld = min(credit, self.debt)
        self.debt -= withheld
        if credit > withheld:
            self.receive += self.owed + credit - withheld
            self.owed = 0

    def resize(self, size: int) -> int:
        """Make the receive window ``size``; returns the credit to grant at once (a
        larger window), 0 for a smaller one (withheld from credit as it comes back)."""
        change = size - self.size
        self.size = size
        if change < 0:
            self.debt -= change
            return 0
        repaid = min(change, self.debt)
        self.debt -= repaid
        change -= repaid
        self.receive += change
        return change
