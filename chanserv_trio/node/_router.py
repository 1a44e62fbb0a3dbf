"""Relaying a stream through a router node, one hop, with its children.

A router (``Multiplexer(router=True)``) offers its peers the services of its other
peers. A stream opened to it for such a service is relayed: the router opens the same
stream to a node that serves the name and carries everything between the two, in
both directions: messages (each side's flow control applies, so backpressure reaches
the producer), child streams (relayed the same way, recursively), the end status, and
resets (a cancellation on either side reaches the other).
"""

from __future__ import annotations

import trio

from .._errors import ChanservError
from ..link._link import LinkStream
from ..wire._codec import ErrorCode

__all__ = ["relay"]


async def relay(inbound: LinkStream, outbound: LinkStream) -> None:
    """Carry everything between two streams until both are finished."""
    try:
        # Child relays live outside this pair's scopes: a child outlives its parent's
        # end or reset on the wire, so it must outlive it here too.
        async with trio.open_nursery() as children:
            with inbound.cancel_on_reset() as in_scope, outbound.cancel_on_reset() as out_scope:
                async with trio.open_nursery() as nursery:
                    for source, target in ((outbound, inbound), (inbound, outbound)):
                        done = trio.Event()
                        nursery.start_soon(_relay_children, source, target, children, done)
                        if source.remote_open:
                            nursery.start_soon(_relay_messages, source, target, done)
            if in_scope.cancelled_caught:
                _pass_reset(inbound, outbound)
            if out_scope.cancelled_caught:
                _pass_reset(outbound, inbound)
    except BaseException:
        # Cancelled from outside: a stream of an enclosing relay broke (trio lets only the
        # outermost cancelled scope catch, so ours did not), or the router is going down.
        # A side that broke itself still passes on why; otherwise neither side should
        # wait on us.
        if _is_broken(outbound):
            _pass_reset(outbound, inbound)
        elif _is_broken(inbound):
            _pass_reset(inbound, outbound)
        outbound.reset(ErrorCode.CANCEL, "relay stopped")
        inbound.reset(ErrorCode.CANCEL, "relay stopped")
        raise


def _is_broken(stream: LinkStream) -> bool:
    """The peer reset the stream, or its link is gone."""
    return stream.was_reset or not stream.link.is_alive


def _pass_reset(source: LinkStream, target: LinkStream) -> None:
    status = source.reset_status
    if status is not None:
        target.reset(status.code, status.message, status.kind)
    else:
        target.reset(ErrorCode.CONNECTION_LOST, "the relayed peer went away")


async def _relay_messages(source: LinkStream, target: LinkStream, children: trio.Event) -> None:
    while True:
        try:
            message = await source.receive()
        except (trio.EndOfChannel, ChanservError):
            await _relay_end(source, target, children)
            return
        try:
            await target.send(message)
        except (ChanservError, trio.ClosedResourceError):
            source.reset(ErrorCode.CANCEL, "the other side of the relay is gone")
            return


async def _relay_end(source: LinkStream, target: LinkStream, children: trio.Event) -> None:
    """Forward how ``source``'s peer ended, after every child it opened went across
    (children always precede their parent's end on the wire)."""
    await children.wait()
    status = source.remote_status
    if status is None:
        return
    if status is source.reset_status:  # it ended with a RESET, not an END
        target.reset(status.code, status.message, status.kind)
    else:
        target.end(status)


async def _relay_children(
    source: LinkStream, target: LinkStream, nursery: trio.Nursery, done: trio.Event
) -> None:
    try:
        while True:
            try:
                child = await source.receive_child()
            except (trio.EndOfChannel, ChanservError, trio.ClosedResourceError):
                return
            try:
                mirror = await target.open_child(
                    child.header, local_open=child.remote_open, remote_open=child.local_open
                )
            except (ChanservError, trio.ClosedResourceError):
                child.reset(ErrorCode.CANCEL, "the other side of the relay is gone")
                continue
            nursery.start_soon(relay, child, mirror)
    finally:
        done.set()
