"""The options every link of a node shares, in one frozen object.

A :class:`~chanserv_trio.Multiplexer` builds one :class:`LinkOptions` from its
constructor's arguments and hands the same object to each :class:`~chanserv_trio.Link`
it makes, so the limits, timeouts and hooks of a link are read in one place and never
copied from layer to layer. Change them with ``attrs.evolve``; links already running
keep the options they started with.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import attrs

from ._wire_connection import Settings

if TYPE_CHECKING:
    from ._driver import Link
    from ._link_stream import StreamHandler

__all__ = ["LinkOptions"]


@attrs.frozen
class LinkOptions:
    """How a link runs: what it announces, how long it waits, what it tolerates, whom
    it tells."""

    #: The windows and limits announced to the peer and enforced on what it sends.
    settings: Settings = attrs.field(factory=Settings)
    #: Seconds the peer has to complete the handshake before the link is lost.
    handshake_timeout: float = 10.0
    #: Seconds between PINGs to the peer (None: no keepalive).
    keepalive_interval: float | None = None
    #: A peer silent for ``keepalive_interval + keepalive_timeout`` seconds is lost.
    keepalive_timeout: float = 20.0
    #: A peer that takes none of our bytes for this many seconds is lost (None: off).
    write_timeout: float | None = None
    #: How many of its streams the peer may reset at once ...
    reset_burst: int = 1000
    #: ... and per second, before the link is closed with ``ENHANCE_YOUR_CALM``.
    reset_rate: float = 100.0
    #: Bytes of frames we owe the peer (WINDOW, PING answers, RESET) past which the
    #: reader stops reading until the writer caught up; None: the connection window
    #: plus 4 MiB.
    outgoing_limit: int | None = None
    #: The handler for a stream the peer opens to a service, or None (the stream is
    #: then reset with ``SERVICE_NOT_FOUND``).
    handler_for: Callable[[str], StreamHandler | None] | None = None
    #: Called with the link whenever the services its peer offers change (or the
    #: peer goes away, or the link is lost).
    on_services: Callable[[Link], None] | None = None
    #: Called with errors no caller would otherwise see (a handler's exception, the
    #: peer breaking the protocol).
    on_error: Callable[[BaseException], object] | None = None
