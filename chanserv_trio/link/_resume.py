"""What a resumable link keeps per transport (``docs/protocol.md``, section 17).

A :class:`~chanserv_trio.Link` outlives its transports when it resumes: each transport
it runs over gets one :class:`Attachment`, holding its tasks' cancel scope and what
they wait on. When the transport breaks, the link detaches (cancels the attachment,
keeps its streams) and a new attachment takes over once a new transport resumed it.
"""

from __future__ import annotations

import logging

import trio

__all__ = ["Attachment", "logger"]

#: Each detachment, resumption and failed resumption is logged here.
logger = logging.getLogger("chanserv_trio.link")


class Attachment:
    """One transport a link runs over, and its reader, writer and timers."""

    __slots__ = ("done", "keep_open", "ready", "scope", "settled", "transport", "whole_messages")

    def __init__(self, transport: trio.abc.Stream, whole_messages: bool) -> None:
        self.transport = transport
        #: Each ``receive_some`` returns a whole transport message (WebSocket).
        self.whole_messages = whole_messages
        #: Cancelled when the transport is given up (the link detaches or ends).
        self.scope = trio.CancelScope()
        #: The handshake (or the resuming handshake) over it completed.
        self.ready = trio.Event()
        #: ``ready``, or the transport was given up before.
        self.settled = trio.Event()
        #: Its tasks have finished and the transport is closed.
        self.done = trio.Event()
        #: Hand the transport on rather than close it (a resuming HELLO arrived on it).
        self.keep_open = False
