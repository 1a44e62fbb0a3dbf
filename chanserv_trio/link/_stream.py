"""One multiplexed stream of whole messages on a link, in both directions.

A :class:`LinkStream` sends and receives whole messages, ends our half with a status
and resets both halves. It shares one :class:`~chanserv_trio.link._state.StreamState`
with its link's reader (which fills its inbox) and the link's
:class:`~chanserv_trio.link._state.LinkState` with every other stream of the link
(the writer's wake-up, the connection window, the scheduling budget).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

import trio

from .._errors import ChanservError, MessageTooLarge
from ..wire._codec import OK_STATUS, ErrorCode, Status
from ._state import QUEUE_LIMIT, SCHEDULE_EVERY, LinkState, StreamState
from ._status import error_from_status

if TYPE_CHECKING:
    from ._link import Link

__all__ = ["LinkStream", "StreamHandler"]

_OK_CODE = int(ErrorCode.OK)  # (a plain int: an enum member's lookup costs more)
_checkpoint_if_cancelled = trio.lowlevel.checkpoint_if_cancelled
_cancel_shielded_checkpoint = trio.lowlevel.cancel_shielded_checkpoint

#: What a service handler looks like: called with each stream the peer opens for it.
StreamHandler = Callable[["LinkStream"], Awaitable[None]]


class LinkStream(trio.abc.Channel[bytes]):
    """One multiplexed stream of whole messages on a :class:`Link`.

    A ``trio.abc.Channel[bytes]``: ``send`` and ``receive`` whole messages, and
    ``async for message in stream`` reads until the peer ends its half normally (any
    other end raises the matching error). ``end`` closes our half with a status;
    ``reset``, ``aclose`` and leaving ``async with stream`` abort both halves.
    """

    __slots__ = (
        "__weakref__",
        "_ack_batch",
        "_link",
        "_sending",
        "_shared",
        "_state",
        "header",
        "local_open",
        "parent",
        "remote_open",
        "route_key",
        "service",
        "stream_id",
    )

    def __init__(
        self,
        link: Link,
        shared: LinkState,
        state: StreamState,
        service: str,
        header: bytes,
        parent: int,
        remote_open: bool = True,
        local_open: bool = True,
        route_key: bytes = b"",
    ) -> None:
        # (Positional: a class call with keywords builds a dict, one per stream opened.)
        self._link = link
        self._shared = shared
        self._state = state
        #: The stream's id on this link.
        self.stream_id = state.stream_id
        #: The service it was opened for ("" for a child stream).
        self.service = service
        #: The opaque header bytes it was opened with.
        self.header = header
        #: The id of the stream it is a child of, 0 for none.
        self.parent = parent
        #: Whether the peer's half was open when the stream opened (the OPEN flags).
        self.remote_open = remote_open
        #: Whether our half was open when the stream opened: we may send on it.
        self.local_open = local_open
        #: The route key it was opened with (empty: none); routers pick a hop by it.
        self.route_key = route_key
        self._sending = False
        self._ack_batch = shared.ack_batch

    def __repr__(self) -> str:
        return f"<LinkStream {self.stream_id} service={self.service!r}>"

    @property
    def link(self) -> Link:
        """The link the stream lives on."""
        return self._link

    @property
    def remote_addr(self) -> str:
        """The peer's address, as a URL."""
        return self._link.remote_addr

    @property
    def was_reset(self) -> bool:
        """True once the peer reset the stream (even after ending its half)."""
        return self._state.reset_status is not None

    @property
    def reset_status(self) -> Status | None:
        """The status of the peer's RESET, once one arrived."""
        return self._state.reset_status

    # ----------------------------------------------------------------- sending

    async def send(self, message: bytes | bytearray | memoryview) -> None:
        """Send one whole message, waiting for flow-control credit as needed.

        Returns once the message is queued for the link (it may still be in transit).
        If cancelled with part of a large message sent, the stream is reset, because
        the rest of the message could never follow.
        """
        shared = self._shared
        conn = shared.conn
        data = message if type(message) is bytes else bytes(message)
        size = len(data)
        limit = conn.peer_settings.max_message_size
        if size > limit:
            raise MessageTooLarge(f"message of {size} bytes exceeds the peer's limit of {limit}")
        if self._sending:
            raise trio.BusyResourceError("another task is already sending on this stream")
        await _checkpoint_if_cancelled()
        state = self._state
        if state.error is not None or state.closed_locally:
            self._check_sendable()
        if conn.outgoing_size >= QUEUE_LIMIT:
            # The transport is behind: wait for the writer rather than queue without end
            # (the connection window would bound it, but far above what is useful).
            await shared.wait_queue_below_limit()
            self._check_sendable()
        if conn.try_send_message(self.stream_id, data):
            # LinkState.kick_writer and LinkState.spend, inline on the hot path.
            if shared.writer_parked:
                shared.kick_writer()
            budget = shared.budget - 1
            if budget > 0:
                shared.budget = budget
                return
            shared.budget = SCHEDULE_EVERY
            await _cancel_shielded_checkpoint()
            return
        self._check_sendable()
        max_chunk = conn.peer_settings.max_frame_payload
        self._sending = True
        view = memoryview(data)
        offset = 0
        try:
            while True:
                n = conn.send_window_for(self.stream_id, min(size - offset, max_chunk))
                if n or offset == size:
                    more = offset + n < size
                    conn.send_data(self.stream_id, view[offset : offset + n], more=more)
                    shared.kick_writer()
                    offset += n
                    if not more:
                        break
                    continue
                shared.window_stalls += 1
                if conn.connection_send_window() == 0:
                    await shared.window_lot.park()
                else:
                    await state.window_parking().park()
                self._check_sendable()
        except BaseException:
            if 0 < offset < size:
                self.reset(ErrorCode.CANCEL, "sender stopped in the middle of a message")
            raise
        finally:
            self._sending = False
        await _cancel_shielded_checkpoint()

    def _check_sendable(self) -> None:
        state = self._state
        if state.error is not None:
            raise state.error
        if state.closed_locally or not self._shared.conn.can_send(self.stream_id):
            raise trio.ClosedResourceError("this stream's sending half is closed")

    def end(self, status: Status = OK_STATUS) -> None:
        """Close our sending half, telling the peer how it ended (OK or an error)."""
        state = self._state
        if state.error is not None or state.closed_locally:
            return
        shared = self._shared
        conn = shared.conn
        if conn.can_send(self.stream_id):
            conn.end_stream(self.stream_id, status)
            if shared.writer_parked:
                shared.kick_writer()
        shared.release_if_closed(state)

    def reset(self, code: int = ErrorCode.CANCEL, message: str = "", kind: str = "") -> None:
        """Abort the stream in both directions; a no-op if it is already gone."""
        shared = self._shared
        # (A stream gone from the connection sends nothing: no status to make.)
        status = Status(code, kind, message) if shared.conn.is_open(self.stream_id) else None
        shared.reset(self._state, status)

    async def aclose(self) -> None:
        """Reset the stream if it is still open (cancelling the peer's work on it)."""
        self.reset(ErrorCode.CANCEL, "closed by the receiver")
        await trio.lowlevel.checkpoint()

    # --------------------------------------------------------------- receiving

    def _consumed(self, credit: int, messages: int = 1) -> None:
        # Credit goes back in batches: one call into the state machine per batch.
        # Once the inbox is empty everything goes back at once: the state machine only
        # credits the chunks of a large message while nothing unconsumed is held.
        # (An empty message carries no credit but may still be the one that empties
        # it; it still stops counting against the memory budget then.)
        state = self._state
        shared = self._shared
        unacked = state.unacked + credit
        if unacked >= self._ack_batch or not state.inbox:
            shared.unacked_total -= state.unacked
            state.unacked = 0
            messages += state.unacked_messages
            state.unacked_messages = 0
            shared.acknowledge(self.stream_id, unacked, messages)
        else:
            shared.unacked_total += credit
            state.unacked = unacked
            state.unacked_messages += messages

    def receive_nowait(self) -> bytes:
        """The next buffered message; raises ``trio.WouldBlock`` if none is buffered,
        ``trio.EndOfChannel`` at a normal end, or the error the stream ended with."""
        state = self._state
        if state.closed_locally:
            raise trio.ClosedResourceError("stream was closed")
        if state.inbox:
            data, credit = state.inbox.popleft()
            self._consumed(credit)
            return data
        self._raise_if_ended()
        raise trio.WouldBlock

    def _raise_if_ended(self) -> None:
        """Raise what a reader gets once nothing is left: ``trio.EndOfChannel`` after a
        normal end, the matching error after any other, the link's error if it broke."""
        state = self._state
        status = state.remote_status
        if status is not None:
            if status.code == _OK_CODE:
                raise trio.EndOfChannel
            raise error_from_status(status)
        if state.error is not None:
            raise state.error

    async def receive(self) -> bytes:
        """Wait for the next message.

        Always a cancellation point. When messages are already buffered it returns
        without a trip through the scheduler, except once every few calls per link,
        so a fast consumer stays fair to other tasks without paying a full
        scheduling round for every message.
        """
        await _checkpoint_if_cancelled()
        state = self._state
        inbox = state.inbox
        if inbox and not state.closed_locally:
            data, credit = inbox.popleft()
            # _consumed, inline on the hot path while the batch is not complete.
            unacked = state.unacked + credit
            if unacked < self._ack_batch and inbox:
                self._shared.unacked_total += credit
                state.unacked = unacked
                state.unacked_messages += 1
            else:
                self._consumed(credit)
            shared = self._shared
            budget = shared.budget - 1  # LinkState.spend, inline
            if budget > 0:
                shared.budget = budget
                return data
            shared.budget = SCHEDULE_EVERY
            await _cancel_shielded_checkpoint()
            return data
        # Parks outside any ``except`` block: a task waiting inside one keeps the
        # exception and its traceback alive for the whole wait, which the cyclic
        # garbage collector then carries into its old generations.
        parked = False
        while True:
            if state.inbox or state.closed_locally:
                break
            if state.remote_status is not None or state.error is not None:
                break
            await state.parking().park()
            parked = True
        try:
            data = self.receive_nowait()
        except BaseException:
            if not parked:
                await _cancel_shielded_checkpoint()
            raise
        if not parked and self._shared.spend():
            await _cancel_shielded_checkpoint()
        return data

    def receive_buffered(self, max_messages: int = 2**31) -> list[bytes]:
        """Every message already buffered (up to ``max_messages``), without waiting."""
        out: list[bytes] = []
        inbox = self._state.inbox
        credit = 0
        while inbox and len(out) < max_messages:
            data, c = inbox.popleft()
            credit += c
            out.append(data)
        if out:
            self._consumed(credit, len(out))
        return out

    async def receive_child(self) -> LinkStream:
        """The next child stream the peer opened under this one.

        Raises ``trio.EndOfChannel`` once the peer ended this stream normally (all its
        children arrived before its END), or the error it ended with.
        """
        await _checkpoint_if_cancelled()
        state = self._state
        parked = False
        while True:
            children = state.children
            if children:
                if not parked and self._shared.spend():
                    await _cancel_shielded_checkpoint()
                return children.popleft()
            if state.closed_locally:
                raise trio.ClosedResourceError("stream was closed")
            self._raise_if_ended()
            if not self._shared.conn.is_open(self.stream_id):
                raise trio.EndOfChannel  # closed both ways: no child can come any more
            await state.parking().park()
            parked = True

    async def wait_remote_end(self) -> None:
        """Wait until the peer ended or reset its half, or the stream broke."""
        state = self._state
        conn = self._shared.conn
        while state.remote_status is None and state.error is None and conn.is_open(self.stream_id):
            await state.parking().park()

    async def open_child(
        self, header: bytes, *, local_open: bool = True, remote_open: bool = False
    ) -> LinkStream:
        """Open a stream under this one (the peer receives it from ``receive_child``)."""
        if self._state.error is not None:
            raise self._state.error
        return await self._link.open_stream(
            "", header, parent=self.stream_id, local_open=local_open, remote_open=remote_open
        )

    @property
    def remote_status(self) -> Status | None:
        """How the peer ended its half, or None while it is still open."""
        return self._state.remote_status

    @property
    def error(self) -> ChanservError | None:
        """Why the stream broke (the peer's RESET, the link lost, a shutdown), once it
        has; None while it works or after it closed normally."""
        return self._state.error

    @property
    def is_finished(self) -> bool:
        """True once the stream is closed both ways or broken."""
        return self._state.error is not None or not self._shared.conn.is_open(self.stream_id)

    def set_max_message_size(self, size: int) -> None:
        """Accept messages of at most ``size`` bytes from the peer on this stream (0: no
        data at all). A longer one resets the stream with ``FRAME_SIZE_ERROR`` as soon
        as its first bytes over the limit arrive (before they are held); the link
        carries on."""
        over = self._shared.conn.set_max_message_size(self.stream_id, size)
        # What arrived before the limit was set is judged by it too.
        inbox = self._state.inbox
        if over or (inbox and any(len(data) > size or not size for data, _ in inbox)):
            limit = "no data" if not size else f"messages of at most {size} bytes"
            self.reset(ErrorCode.FRAME_SIZE_ERROR, f"this stream takes {limit}")

    def refuse_children(self) -> None:
        """Reset every child stream the peer opens under this one (those already
        waiting too) with ``REFUSED_STREAM``: for a stream that takes none."""
        state = self._state
        state.refuse_children = True
        children = state.children
        state.children = None
        for child in children or ():
            child.reset(ErrorCode.REFUSED_STREAM, "this stream takes no child streams")

    def set_receive_window(self, window: int) -> None:
        """Let the peer send at most ``window`` bytes ahead of what we consumed on this
        stream (instead of the link's ``initial_stream_window``). Growing takes effect
        at once; shrinking as messages are consumed."""
        shared = self._shared
        conn = shared.conn
        before = conn.outgoing_size
        conn.set_receive_window(self.stream_id, window)
        # Batches of returned credit must stay well inside the window.
        self._ack_batch = max(1, min(shared.ack_batch, window >> 3))
        if conn.outgoing_size != before:
            shared.kick_writer()

    def cancel_on_reset(self) -> _CancelOnReset:
        """A cancel scope (use it in ``with``) that the peer's RESET, or the link dying,
        cancels."""
        return _CancelOnReset(self._state)


class _CancelOnReset:
    """The context manager behind :meth:`LinkStream.cancel_on_reset` (a class, not a
    generator, because one exists for every open source)."""

    __slots__ = ("_scope", "_state")

    def __init__(self, state: StreamState) -> None:
        self._state = state
        self._scope = trio.CancelScope()

    def __enter__(self) -> trio.CancelScope:
        state = self._state
        scope = self._scope.__enter__()
        if state.error is not None:
            scope.cancel()
        state.add_scope(scope)
        return scope

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self._state.remove_scope(self._scope)
        return self._scope.__exit__(exc_type, exc, tb)
