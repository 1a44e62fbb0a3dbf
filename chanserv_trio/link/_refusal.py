"""Refusing a link at once: our HELLO, a GOAWAY with the reason, and the door closed.

A listener over its budget (``max_links``) still accepts the connection, so the peer
learns why instead of meeting a silent reset: it reads a HELLO and a GOAWAY with an
error code, and its ``join`` raises :class:`~chanserv_trio.ProtocolError` with that
code and message. Nothing of the peer's is processed and no task outlives the call.
"""

from __future__ import annotations

import trio

from ..wire._connection import Connection, Settings

__all__ = ["refuse_link"]

#: Seconds a refusal may take, writing included.
REFUSAL_TIME = 1.0
#: Bytes of the peer's read (and dropped) at most while it reads our GOAWAY.
_DRAIN_LIMIT = 64 << 10


async def refuse_link(
    transport: trio.abc.Stream, settings: Settings, code: int, message: str
) -> None:
    """Tell the peer at the other end of ``transport`` that its link is refused with
    ``code`` and ``message``, then close ``transport``."""
    conn = Connection(initiator=False, settings=settings)
    conn.go_away(code, message)
    data = b"".join(conn.take_outgoing())
    with trio.move_on_after(REFUSAL_TIME):
        try:
            await transport.send_all(data)
            # Closing with the peer's bytes unread would reset the connection, which can
            # destroy our GOAWAY before the peer reads it: wait for it to hang up.
            drained = 0
            while drained < _DRAIN_LIMIT:
                chunk = await transport.receive_some(4096)
                if not chunk:
                    break
                drained += len(chunk)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass
    await trio.aclose_forcefully(transport)
