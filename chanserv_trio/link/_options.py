"""The options every link of a node shares, in one frozen object.

A :class:`~chanserv_trio.Multiplexer` builds one :class:`LinkOptions` from its
constructor's arguments and hands the same object to each :class:`~chanserv_trio.Link`
it makes, so the limits, timeouts and hooks of a link are read in one place and never
copied from layer to layer. Change them with ``attrs.evolve``; links already running
keep the options they started with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import attrs

from ..wire._connection import Settings, check_memory_budget
from ..wire._resume import ResumeOptions
from ._auth import Authenticator

if TYPE_CHECKING:
    from ._link import Link
    from ._stream import StreamHandler

__all__ = [
    "CONTROL_LIMIT",
    "KEEPALIVE_INTERVAL",
    "KEEPALIVE_TIMEOUT",
    "MAX_PEER_SERVICES",
    "MAX_PEER_SERVICE_BYTES",
    "WRITE_TIMEOUT",
    "HostBudget",
    "LinkOptions",
    "default_memory_budget",
]

# Safe defaults: every link detects a dead peer without being configured to
# (docs/index.md, "Timeouts and limits", says why these values).
#: A PING every 30 s costs 36 bytes a round trip: nothing, next to finding a dead peer.
KEEPALIVE_INTERVAL = 30.0
#: 20 s for an answer: far beyond any round trip, with room for the bytes of a busy
#: slow link arriving ahead of it (see ``link._keepalive``). A dead peer is found within
#: 50 s.
KEEPALIVE_TIMEOUT = 20.0
#: 60 s to take 1 MiB (the longest piece the writer times): a peer slower than about
#: 17 KiB/s is treated as gone, and a 50 MiB message over a 1 Mbit/s link (7 minutes)
#: still gets through.
WRITE_TIMEOUT = 60.0
#: Names one peer may advertise: far more services than one node serves, or than a
#: router relays in most deployments (raise it on the peers of a larger one), while the
#: names a peer can make us hold, and relay, stay small.
MAX_PEER_SERVICES = 1000
#: ... and their bytes: 64 bytes a name on average for 1,000 names.
MAX_PEER_SERVICE_BYTES = 64 << 10
#: Bytes of control frames (PING answers, WINDOW, RESET, ...) queued or being written
#: past which the reader stops reading the peer until the writer caught up: a peer
#: that sends PINGs and never reads makes us hold this much, not more. Far above what
#: a link that reads ever queues (a few frames per message).
CONTROL_LIMIT = 256 << 10
#: Room in the default memory budget besides one largest message and the connection
#: window: streams' state, message overheads, names, buffers.
_BUDGET_ROOM = 12 << 20


def default_memory_budget(settings: Settings) -> int:
    """The memory budget of a link with ``settings`` when none is given: one message
    of ``max_message_size`` in assembly, the connection window in transit and 12 MiB
    for the rest (128 MiB with the default settings), so that a largest message always
    arrives whole."""
    return settings.max_message_size + settings.connection_window + _BUDGET_ROOM


class HostBudget(Protocol):
    """A budget of stream resets per remote host, shared by a node's links
    (``node._budgets.HostResetBudget``)."""

    def __call__(self, remote_addr: str) -> bool:
        """Take a token for one reset by the peer at ``remote_addr``; False if none."""
        ...

    def charge(self, remote_addr: str, streams: int) -> None:
        """Charge ``streams`` abandoned by the peer at ``remote_addr`` (a hang-up)."""
        ...


@attrs.frozen
class LinkOptions:
    """How a link runs: what it announces, how long it waits, what it tolerates, whom
    it tells."""

    #: The windows and limits announced to the peer and enforced on what it sends.
    settings: Settings = attrs.field(factory=Settings)
    #: Seconds the peer has to complete the handshake before the link is lost.
    handshake_timeout: float = 10.0
    #: Seconds between PINGs to the peer (None: no keepalive).
    keepalive_interval: float | None = KEEPALIVE_INTERVAL
    #: A peer that leaves a PING unanswered this many seconds after it was written is
    #: lost (see ``link._keepalive`` for the allowances: bytes still arriving ahead of
    #: the answer, and stalls of our own event loop).
    keepalive_timeout: float = KEEPALIVE_TIMEOUT
    #: A peer that takes less than 1 MiB of our bytes in this many seconds is lost
    #: (None: off). Longer writes go out in 1 MiB pieces, each timed on its own.
    write_timeout: float | None = WRITE_TIMEOUT
    #: A link with no stream open, and none opened by either side, for this many
    #: seconds is closed with GOAWAY (None: kept however long it idles).
    idle_timeout: float | None = None
    #: How many of its streams the peer may reset at once ...
    reset_burst: int = 1000
    #: ... and per second, before the link is closed with ``ENHANCE_YOUR_CALM``.
    reset_rate: float = 100.0
    #: Service names the peer may advertise at once, and their total UTF-8 bytes;
    #: one more closes the link with ``ENHANCE_YOUR_CALM``.
    max_peer_services: int = MAX_PEER_SERVICES
    max_peer_service_bytes: int = MAX_PEER_SERVICE_BYTES
    #: Consulted with the link's remote address each time its peer resets a stream it
    #: opened (after the link's own budget): False closes the link with
    #: ``ENHANCE_YOUR_CALM``; and charged, on a link we accepted, with the streams its
    #: peer left open when the link ended. A node shares one across its links, so that
    #: reconnecting does not refill it (None: no such budget).
    host_resets: HostBudget | None = None
    #: Bytes of control frames (WINDOW, PING answers, RESET, ...) queued or being
    #: written past which the reader stops reading until the writer caught up; None:
    #: ``CONTROL_LIMIT`` (256 KiB).
    outgoing_limit: int | None = None
    #: Bytes the link may hold on its peer's behalf: DATA received and not consumed
    #: (messages in inboxes and in assembly, counted decompressed), ``MESSAGE_COST``
    #: a message, the state of the streams the peer opened, advertised names, queued
    #: control replies and the receive buffer. Past it DATA waits (the connection
    #: window is withheld), OPEN is refused, and what waiting cannot bound closes
    #: the link with ``ENHANCE_YOUR_CALM`` (docs/errors.md, "Memory budget"). None:
    #: :func:`default_memory_budget` of ``settings`` (128 MiB with the defaults).
    memory_budget: int | None = None

    def __attrs_post_init__(self) -> None:
        if self.memory_budget is not None:
            check_memory_budget(self.memory_budget, self.settings)

    def budget(self) -> int:
        """The memory budget in bytes (the default one when none was given)."""
        if self.memory_budget is not None:
            return self.memory_budget
        return default_memory_budget(self.settings)

    #: The handler for a stream the peer opens to a service, or None (the stream is
    #: then reset with ``SERVICE_NOT_FOUND``).
    handler_for: Callable[[str], StreamHandler | None] | None = None
    #: Called with the link whenever the services its peer offers change (or the
    #: peer goes away, or the link is lost).
    on_services: Callable[[Link], None] | None = None
    #: Called with errors no caller would otherwise see (a handler's exception, the
    #: peer breaking the protocol).
    on_error: Callable[[BaseException], object] | None = None
    #: Bytes our HELLO presents on links we dial (field CREDENTIAL); None: none.
    credential: bytes | None = None
    #: Judges the credential of each peer on links we did not dial (see
    #: ``link._auth``); None: every peer is let in, with no identity.
    authenticate: Authenticator | None = None
    #: Ask for resumption (``docs/protocol.md``, section 17); None: links end when
    #: their transport breaks.
    resume: ResumeOptions | None = None
