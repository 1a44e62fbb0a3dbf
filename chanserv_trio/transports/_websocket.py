"""WebSocket links (``ws://`` and ``wss://``): protocol frames as binary messages.

The WebSocket runs over a TCP or TLS stream from ``transports._socket``; trio-websocket
does the HTTP upgrade, framing, pings and the close handshake. The link sees a
:class:`WebSocketStream`, a ``trio.abc.Stream`` whose ``send_all`` sends binary
messages and whose ``receive_some`` returns one message's bytes: the wire decoder takes
bytes split anywhere, so message boundaries mean nothing and nothing emulates a
continuous byte stream.
"""

from __future__ import annotations

import operator
from collections.abc import Callable
from contextlib import suppress
from typing import Any, cast
from urllib.parse import urlsplit

import trio
import trio_websocket

from .._errors import ConnectionLost
from ._base import (
    Bound,
    Endpoint,
    Transport,
    TransportOptions,
    parse_host_url,
    stream_addresses,
)
from ._errors import (
    TRANSPORT_ERRORS,
    describe_close,
    failures_as_connection_lost,
    transport_failure,
)
from ._socket import listen_tcp, open_tcp, tls_accept

__all__ = ["MAX_RECEIVED_MESSAGE", "WebSocketStream", "WebSocketTransport"]

#: Bytes trio-websocket asks the socket for at a time (its default, 4 KiB, would read
#: a large message in thousands of small pieces).
RECEIVE_BUFFER = 256 * 1024
#: Seconds the close handshake may take once a link is done with its WebSocket.
CLOSE_TIMEOUT = 2.0
#: Complete messages trio-websocket holds for the link's reader. The link's reader
#: never waits on application code, so one is enough and keeps memory bounded.
MESSAGE_QUEUE = 1
_NORMAL_CLOSE = (1000, 1001)
_FIRST_BYTES = 32
#: Writes longer than this go out as several binary messages.
_MAX_MESSAGE = 256 * 1024
#: The longest message taken from a peer: twice the longest we send (every
#: chanserv_trio peer, the JavaScript one too, cuts its writes at 256 KiB), for a peer
#: that cuts a little differently. trio-websocket buffers a message whole before the
#: link sees a byte of it; past this it closes the WebSocket with 1009 (message too
#: big) as the message arrives, so a hostile peer cannot make it hold 100 MiB.
MAX_RECEIVED_MESSAGE = 2 * _MAX_MESSAGE


class WebSocketStream(trio.abc.Stream):
    """A link's byte stream over a WebSocket connection.

    ``send_all(data)`` sends ``data`` as one binary message (several of at most
    256 KiB when it is longer). ``receive_some`` returns the next message whole, or
    its next ``max_bytes`` when it is longer; a normal close (1000 or 1001) reads as
    end of stream, any other close, or a text message, as
    ``trio.BrokenResourceError``. Pings and the close handshake are answered by
    trio-websocket's reader task, which keeps running while the link is busy.

    ``aclose`` runs the close handshake (for at most ``CLOSE_TIMEOUT`` seconds) and
    closes the socket. A link closes its transport from a cancelled scope, where no
    handshake can run; so when the stream came from :class:`WebSocketTransport`,
    the close runs in the task holding the WebSocket, and a cancelled ``aclose``
    returns at once while that task finishes the close.
    """

    #: Reads return whole messages: the link reads with no size limit, so a large frame
    #: (one message) is never cut into pieces and copied again.
    whole_messages = True

    def __init__(
        self,
        websocket: trio_websocket.WebSocketConnection,
        transport_stream: trio.abc.Stream | None = None,
    ) -> None:
        #: The trio-websocket connection (for pings, the negotiated path...).
        self.websocket = websocket
        #: The byte stream under the WebSocket, closed with it (when given).
        self.transport_stream = transport_stream
        self._rest = memoryview(b"")
        self._closed = False
        self._sending = False
        self._receiving = False
        self._held = False
        self._close_requested = trio.Event()
        self._close_done = trio.Event()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        self._sending = True
        try:
            if not data:
                await trio.lowlevel.checkpoint()
                return
            if len(data) <= _MAX_MESSAGE:
                await self.websocket.send_message(data if type(data) is bytes else bytes(data))
                return
            # Our bytes may be split anywhere, and WebSocket peers handle a few
            # medium messages much faster than one very large one.
            view = memoryview(data)
            for start in range(0, len(view), _MAX_MESSAGE):
                await self.websocket.send_message(bytes(view[start : start + _MAX_MESSAGE]))
        except trio_websocket.ConnectionClosed as exc:
            if self._closed:
                raise trio.ClosedResourceError("stream was closed") from None
            raise trio.BrokenResourceError(describe_close(exc.reason)) from exc
        finally:
            self._sending = False

    async def wait_send_all_might_not_block(self) -> None:
        if self._sending:
            raise trio.BusyResourceError("another task is sending on this stream")
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        self._sending = True
        try:
            await trio.lowlevel.checkpoint()
        finally:
            self._sending = False

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if max_bytes is not None:
            max_bytes = operator.index(max_bytes)
            if max_bytes < 1:
                raise ValueError("max_bytes must be at least 1")
        if self._receiving:
            raise trio.BusyResourceError("another task is receiving on this stream")
        if self._closed:
            raise trio.ClosedResourceError("stream was closed")
        self._receiving = True
        try:
            if self._rest:
                await trio.lowlevel.checkpoint()
                return self._take(self._rest, max_bytes)
            while True:
                try:
                    message = await self.websocket.get_message()
                except trio_websocket.ConnectionClosed as exc:
                    # A closed WebSocket answers at once: still a checkpoint, as
                    # every receive is.
                    await trio.lowlevel.cancel_shielded_checkpoint()
                    if self._closed:
                        raise trio.ClosedResourceError("stream was closed") from None
                    if exc.reason is not None and exc.reason.code in _NORMAL_CLOSE:
                        return b""
                    raise trio.BrokenResourceError(describe_close(exc.reason)) from exc
                if isinstance(message, str):
                    raise trio.BrokenResourceError(
                        "the peer sent a text message; chanserv_trio links carry binary"
                        " messages only"
                    )
                if message:  # an empty message would read as end of stream
                    break
            if max_bytes is None or len(message) <= max_bytes:
                return message
            return self._take(memoryview(message), max_bytes)
        finally:
            self._receiving = False

    def _take(self, view: memoryview, max_bytes: int | None) -> bytes:
        # Longer messages go out in max_bytes pieces, one copy each.
        n = len(view) if max_bytes is None else max_bytes
        self._rest = view[n:]
        return bytes(view[:n])

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            if not self._held:
                await self._close()
                return
            self._close_requested.set()
        # Cancelled, this returns at once; the holding task finishes the close anyway.
        await self._close_done.wait()

    async def _close(self) -> None:
        # A polite close, but never a wait longer than CLOSE_TIMEOUT. Cancelled (the
        # node is closing, and trio-websocket's reader task with it), the close frame
        # goes out only if it can and the socket is closed.
        try:
            with trio.move_on_after(CLOSE_TIMEOUT):
                await self.websocket.aclose()
        finally:
            if self.transport_stream is not None:
                # When the peer closed first, trio-websocket's client side leaves
                # the socket open.
                await trio.aclose_forcefully(self.transport_stream)
            self._close_done.set()

    async def _hold(self, task_status: trio.TaskStatus[WebSocketStream]) -> None:
        """Hand this stream out through ``task_status``, then run its close in the
        calling task (the one whose nursery runs trio-websocket's reader) once it is
        closed, or at once when that task is cancelled."""
        self._held = True
        task_status.started(self)
        try:
            await self._close_requested.wait()
        finally:
            await self._close()


class WebSocketTransport(Transport):
    """``ws://host:port/path``, or with ``tls`` ``wss://host:port/path``: a WebSocket
    (over TLS) whose binary messages carry the link. Listening answers the upgrade
    on the URL's path only (any other path gets HTTP 404)."""

    whole_messages = True

    def __init__(self, *, tls: bool = False) -> None:
        self.tls = tls
        self.schemes = ("wss",) if tls else ("ws",)

    def __repr__(self) -> str:
        return f"WebSocketTransport(tls={self.tls})"

    def parse_url(self, url: str) -> Endpoint:
        return parse_host_url(
            url, tls=self.tls, default_port=443 if self.tls else 80, resource=True
        )

    async def dial(
        self, endpoint: Endpoint, options: TransportOptions, nursery: trio.Nursery
    ) -> trio.abc.Stream:
        stream = await open_tcp(endpoint, options.ssl_context, https_compatible=True)
        try:
            websocket: WebSocketStream = await nursery.start(
                _client_upgrade, stream, endpoint, options
            )
        except BaseException:
            await trio.aclose_forcefully(stream)
            raise
        return websocket

    async def listen(self, endpoint: Endpoint, options: TransportOptions) -> Bound:
        return await listen_tcp(endpoint)

    async def accept(
        self,
        stream: trio.abc.Stream,
        endpoint: Endpoint,
        options: TransportOptions,
        nursery: trio.Nursery,
    ) -> trio.abc.Stream:
        remote = stream_addresses(endpoint.scheme, stream)[1]
        if self.tls:
            assert options.ssl_context is not None  # checked before listening
            with failures_as_connection_lost(f"TLS handshake with {remote}"):
                stream = await tls_accept(stream, options.ssl_context, https_compatible=True)
        websocket: WebSocketStream = await nursery.start(
            _server_upgrade, stream, endpoint, options, remote
        )
        return websocket

    def addresses(
        self, endpoint: Endpoint, stream: trio.abc.Stream, *, dialed: bool
    ) -> tuple[str, str]:
        local, remote = stream_addresses(endpoint.scheme, stream)
        if dialed:
            return local, endpoint.url()
        return local + endpoint.path, remote


class _UpgradeWatch(trio.abc.Stream):
    """The byte stream under a WebSocket, watched during the HTTP upgrade.

    trio-websocket reports a peer that hangs up, or answers something that is not
    HTTP, only by never finishing the upgrade. This notices either at once (calling
    ``on_failure``) and keeps the first bytes received for the error message.
    """

    def __init__(self, stream: trio.abc.Stream) -> None:
        self.stream = stream
        self.on_failure: Callable[[], object] | None = None
        self.first_bytes = b""

    def _hang_up(self) -> None:
        if self.on_failure is not None:
            self.on_failure()

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.stream.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        try:
            data = await self.stream.receive_some(max_bytes)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self._hang_up()
            raise
        if not data:
            self._hang_up()
        elif len(self.first_bytes) < _FIRST_BYTES:
            self.first_bytes += bytes(data[: _FIRST_BYTES - len(self.first_bytes)])
        return data

    async def aclose(self) -> None:
        self._hang_up()
        await self.stream.aclose()

    def failure(self, what: str, cause: BaseException | None = None) -> ConnectionLost:
        """Why the upgrade did not finish (the other end hung up or answered
        something else), as :class:`ConnectionLost`. Running out of time is the
        caller's deadline, not reported here."""
        if self.first_bytes:
            reason = (
                f"the other end answered {self.first_bytes!r}, which is not a WebSocket upgrade"
            )
        else:
            reason = "the other end closed the connection"
        error = trio.BrokenResourceError(reason)
        error.__cause__ = cause
        return transport_failure(what, error)


def _limits(options: TransportOptions) -> dict[str, Any]:
    return {
        "message_queue_size": MESSAGE_QUEUE,
        "max_message_size": min(options.max_message_size, MAX_RECEIVED_MESSAGE),
        "receive_buffer_size": RECEIVE_BUFFER,
    }


async def _client_upgrade(
    stream: trio.abc.Stream,
    endpoint: Endpoint,
    options: TransportOptions,
    *,
    task_status: trio.TaskStatus[WebSocketStream],
) -> None:
    """Upgrade a connected stream to a WebSocket and hold it (see
    :meth:`WebSocketStream._hold`). Raises :class:`ConnectionLost` if the upgrade
    fails: refused with an HTTP status, or the server hung up or answered something
    else."""
    watch = _UpgradeWatch(stream)
    what = f"cannot connect to {endpoint.url()}"
    host = endpoint.url().split("://", 1)[1].split("/", 1)[0]
    websocket: trio_websocket.WebSocketConnection | None = None
    refused: BaseException | None = None
    try:
        async with trio.open_nursery() as nursery:  # trio-websocket's reader task
            with trio.CancelScope() as upgrade_scope:
                watch.on_failure = upgrade_scope.cancel
                websocket = await trio_websocket.wrap_client_stream(
                    nursery,
                    # trio-websocket only uses the Stream interface of what it wraps.
                    cast(trio.SocketStream, watch),
                    host,
                    endpoint.path,
                    **_limits(options),
                )
            watch.on_failure = None
            if websocket is None:
                nursery.cancel_scope.cancel()
            else:
                await WebSocketStream(websocket, stream)._hold(task_status)
    except BaseExceptionGroup as group:
        # During the upgrade the reader task raises ConnectionRejected when the server
        # answers with an HTTP status other than 101, and h11's errors when the answer
        # is not HTTP at all.
        failures, rest = group.split(Exception)
        if rest is not None or failures is None or websocket is not None:
            raise
        refused = _first_leaf(failures)
    if websocket is None:
        await trio.aclose_forcefully(stream)
        if isinstance(refused, trio_websocket.HandshakeError):
            raise transport_failure(what, refused) from refused
        raise watch.failure(what, refused)


async def _server_upgrade(
    stream: trio.abc.Stream,
    endpoint: Endpoint,
    options: TransportOptions,
    remote: str,
    *,
    task_status: trio.TaskStatus[WebSocketStream],
) -> None:
    """Answer the WebSocket upgrade on an accepted connection and hold it. A request
    for another path gets HTTP 404; every failure raises :class:`ConnectionLost`."""
    watch = _UpgradeWatch(stream)
    what = f"WebSocket upgrade from {remote}"
    request: trio_websocket.WebSocketRequest | None = None
    websocket: trio_websocket.WebSocketConnection | None = None
    failure: ConnectionLost | None = None
    async with trio.open_nursery() as nursery:  # trio-websocket's reader task
        with trio.CancelScope() as upgrade_scope:
            watch.on_failure = upgrade_scope.cancel
            request = await trio_websocket.wrap_server_stream(nursery, watch, **_limits(options))
        watch.on_failure = None
        if request is None:
            failure = watch.failure(what)
        else:
            asked = urlsplit(request.path).path
            if asked != urlsplit(endpoint.path).path:
                failure = ConnectionLost(f"{what} refused: no node at path {asked!r}")
                with suppress(*TRANSPORT_ERRORS):
                    await request.reject(404, body=b"no chanserv_trio node at this path\n")
            else:
                try:
                    websocket = await request.accept()
                except TRANSPORT_ERRORS as exc:
                    failure = transport_failure(what, exc)
        if websocket is None:
            nursery.cancel_scope.cancel()
        else:
            await WebSocketStream(websocket, stream)._hold(task_status)
    if failure is not None:
        await trio.aclose_forcefully(stream)
        raise failure


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    exc: BaseException = group
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc
