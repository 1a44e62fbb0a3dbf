"""The chanserv Client: posts a request to a named service and receives its sources."""

from __future__ import annotations

import contextlib
import logging
import math
from collections.abc import AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager

import attrs
import trio

from .._errors import ChanservError, DeadlineExceeded
from ..link._link import LinkStream
from ..node._multiplexer import Multiplexer
from ..wire._codec import ErrorCode
from ._envelope import SOURCE_WINDOW_TAG, Request, encode_credit, encode_request
from ._statistics import ClientStatistics, ServiceCounters, outcome_of

__all__ = ["Client", "RemoteSource", "SourceChannel", "SourceMeta"]

#: Requests and sources that ended in an error (DEBUG: the error is raised to the
#: application too, which decides what it is worth).
logger = logging.getLogger("chanserv_trio.client")
#: A request's list of sources handed out is first pruned at this length.
_PRUNE_AT = 64


@attrs.frozen
class SourceMeta:
    """Where a source came from."""

    #: The serving node's address, as a URL.
    remote_addr: str
    #: The service the request was posted to.
    service: str
    #: The source's stream id on its link (unique per link while open).
    stream_id: int


class RemoteSource(trio.abc.ReceiveChannel[bytes]):
    """One source announced by the server: a header and a channel of frames.

    Iterate it (``async for frame in source``) for the frames, in order; the iteration
    ends normally only when the server finished the source on purpose, and otherwise
    raises a :class:`~chanserv_trio.ChanservError`. ``await source.aclose()`` stops this
    source on the server without touching its siblings.
    """

    # (Slots: one exists for every open source.)
    __slots__ = (
        "_client",
        "_closed",
        "_meta",
        "_remote_addr",
        "_request",
        "_service",
        "_stream",
        "header",
    )

    def __init__(
        self,
        stream: LinkStream,
        meta: SourceMeta | None,
        client: Client,
        request: _Request,
        service: str = "",
    ) -> None:
        self._stream = stream
        self._client = client
        self._request = request
        #: The header the server announced the source with.
        self.header: bytes = stream.header
        self._meta = meta
        # Where the link led when the source was announced (it may resume elsewhere).
        self._remote_addr = stream.remote_addr
        self._service = service
        self._closed = False

    @property
    def meta(self) -> SourceMeta:
        """Where it came from (made on first use)."""
        meta = self._meta
        if meta is None:
            meta = self._meta = SourceMeta(
                self._remote_addr, self._service, self._stream.stream_id
            )
        return meta

    def __repr__(self) -> str:
        return f"<RemoteSource {self.header[:32]!r} from {self.meta.remote_addr}>"

    async def receive(self) -> bytes:
        """The next frame; raises ``trio.EndOfChannel`` after the last one."""
        if self._closed:
            self._check_open()
        timeout = self._client.frame_read_timeout
        counters = self._request.counters
        try:
            if timeout is None:
                frame = await self._stream.receive()
                counters.frames += 1
                counters.bytes += len(frame)
                return frame
            with trio.move_on_after(timeout) as scope:
                frame = await self._stream.receive()
                counters.frames += 1
                counters.bytes += len(frame)
                return frame
            if scope.cancelled_caught:  # pragma: no branch
                message = f"no frame within frame_read_timeout ({timeout} s)"
                self._stream.reset(ErrorCode.TIMEOUT, message)
                raise DeadlineExceeded(message, ErrorCode.TIMEOUT)
            raise AssertionError("unreachable")  # pragma: no cover
        except ChanservError as exc:
            self._request.fail(exc)
            self._client._report(exc, counters)
            raise

    def receive_nowait(self) -> bytes:
        """The next frame if one is already buffered, else ``trio.WouldBlock``."""
        self._check_open()
        frame = self._stream.receive_nowait()
        counters = self._request.counters
        counters.frames += 1
        counters.bytes += len(frame)
        return frame

    def receive_buffered(self, max_frames: int = 2**31) -> list[bytes]:
        """Every frame already buffered (up to ``max_frames``), without waiting.

        A batch API for consumers that want to avoid one scheduler round trip per
        frame; an empty list means nothing is buffered right now.
        """
        self._check_open()
        frames = self._stream.receive_buffered(max_frames)
        counters = self._request.counters
        counters.frames += len(frames)
        counters.bytes += sum(map(len, frames))
        return frames

    def _check_open(self) -> None:
        # Frames still buffered belong to a source the caller closed: not handed out.
        if self._closed:
            raise trio.ClosedResourceError("this source was closed")

    async def aclose(self) -> None:
        """Stop this source: the server's producer for it is cancelled."""
        self._closed = True
        self._stream.reset(ErrorCode.CANCEL, "source closed by the client")
        await trio.lowlevel.checkpoint()


class SourceChannel(trio.abc.ReceiveChannel[RemoteSource]):
    """The sources of one request, as they are announced."""

    def __init__(
        self, master: LinkStream, client: Client, service: str, request: _Request | None = None
    ) -> None:
        self._master = master
        self._client = client
        self._service = service
        self._request = request or _Request(client._counters_for(service))
        # The sources handed out that may still be open (finished ones are dropped
        # whenever the list has doubled since it was last pruned).
        self._sources: list[RemoteSource] = []
        self._prune_at = _PRUNE_AT
        window = client.source_buffer_size
        #: Credits for accepted sources go back in batches of this many (0: not asked).
        self._credit_batch = 0 if window is None else max(1, window // 2)
        self._owed = 0

    async def receive(self) -> RemoteSource:
        """The next source; ``trio.EndOfChannel`` once the server announced them all."""
        timeout = self._client.master_read_timeout
        try:
            if timeout is None:
                child = await self._master.receive_child()
            else:
                with trio.move_on_after(timeout):
                    return self._accept(await self._master.receive_child())
                message = f"no source announced within master_read_timeout ({timeout} s)"
                self._abort(ErrorCode.TIMEOUT, message)
                raise DeadlineExceeded(message, ErrorCode.TIMEOUT)
        except ChanservError as exc:
            self._request.fail(exc)
            self._client._report(exc, self._request.counters)
            raise
        except trio.EndOfChannel:
            self._request.announced = True
            self._master.end()  # no credits are needed any more
            raise
        if self._credit_batch:
            self._owed += 1
            if self._owed >= self._credit_batch:
                owed, self._owed = self._owed, 0
                # If the request is over, the next receive() says how.
                with contextlib.suppress(ChanservError, trio.ClosedResourceError):
                    await self._master.send(encode_credit(owed))
        return self._accept(child)

    def _accept(self, child: LinkStream) -> RemoteSource:
        if self._client.frame_buffer_size is not None:
            child.set_receive_window(self._client.frame_buffer_size)
        child.refuse_children()  # a source has frames, not streams of its own
        source = RemoteSource(child, None, self._client, self._request, self._service)
        self._request.counters.sources += 1
        sources = self._sources
        if len(sources) >= self._prune_at:
            # Amortized: a pass over the list once it has doubled, not one a source.
            sources = self._sources = [s for s in sources if not s._stream.is_finished]
            self._prune_at = max(_PRUNE_AT, 2 * len(sources))
        sources.append(source)
        return source

    def _abort(
        self, code: int = ErrorCode.CANCEL, message: str = "request abandoned by the client"
    ) -> None:
        self._master.reset(code, message)
        for source in self._sources:
            source._stream.reset(code, message)
        self._sources.clear()

    async def aclose(self) -> None:
        """Cancel the request: everything still running for it on the server stops."""
        self._abort()
        await trio.lowlevel.checkpoint()


class Client:
    """Posts requests to services reachable through a :class:`Multiplexer`.

    Options (all keyword, all optional):

    - ``dial_timeout``: seconds to wait for a node offering the service before
      :class:`~chanserv_trio.ServiceNotFound`.
    - ``fast_not_found``: raise :class:`~chanserv_trio.ServiceNotFound` at once, rather
      than after ``dial_timeout``, when no peer offers the service and the node knows
      every offer (:attr:`Multiplexer.offers_known
      <chanserv_trio.Multiplexer.offers_known>`: every link up, no dial, redial or
      registry pending, each peer's advertisement complete). Off by default: a server
      that starts listening before it registers its services, or re-registers one,
      would then be reported as not offering it for that moment.
    - ``on_error(exc)``: called with every error that ends a request or a source on
      this client, besides raising it to the consumer (for logging).
    - ``frame_read_timeout``: longest gap, in seconds, between two frames of a source;
      past it the source is cancelled and raises
      :class:`~chanserv_trio.DeadlineExceeded`.
    - ``master_read_timeout``: longest gap, in seconds, between two source
      announcements; past it the whole request is cancelled and the sources channel
      raises :class:`~chanserv_trio.DeadlineExceeded`.
    - ``source_buffer_size``: how many sources the server may announce ahead of the
      ones taken from the sources channel; it then waits (the announcing is flow
      controlled like frames are).
    - ``frame_buffer_size``: bytes each source may buffer ahead of its consumer (its
      flow-control window). Larger than the link's ``Settings.initial_stream_window``
      it is granted as soon as the source is announced; smaller, it takes effect once
      the first window's worth has been read.
    """

    def __init__(
        self,
        mpx: Multiplexer,
        *,
        dial_timeout: float = 10.0,
        fast_not_found: bool = False,
        on_error: Callable[[BaseException], object] | None = None,
        frame_read_timeout: float | None = None,
        master_read_timeout: float | None = None,
        frame_buffer_size: int | None = None,
        source_buffer_size: int | None = None,
    ) -> None:
        if dial_timeout < 0:
            raise ValueError("dial_timeout must not be negative")
        if frame_read_timeout is not None and frame_read_timeout <= 0:
            raise ValueError("frame_read_timeout must be positive")
        if master_read_timeout is not None and master_read_timeout <= 0:
            raise ValueError("master_read_timeout must be positive")
        self.master_read_timeout = master_read_timeout
        self.mpx = mpx
        self.dial_timeout = dial_timeout
        self.fast_not_found = fast_not_found
        self.on_error = on_error
        self.frame_read_timeout = frame_read_timeout
        if frame_buffer_size is not None and not 0 < frame_buffer_size < 2**31:
            raise ValueError("frame_buffer_size must be between 1 and 2**31 - 1 bytes")
        self.frame_buffer_size = frame_buffer_size
        if source_buffer_size is not None and not 0 < source_buffer_size < 2**31:
            raise ValueError("source_buffer_size must be between 1 and 2**31 - 1")
        self.source_buffer_size = source_buffer_size
        self._counters: dict[str, ServiceCounters] = {}

    def statistics(self) -> ClientStatistics:
        """A snapshot of what this client counted since it was made: requests by
        service and outcome, sources and frames received with their bytes, errors."""
        return ClientStatistics.of(
            {name: counters.snapshot() for name, counters in self._counters.items()}
        )

    def _counters_for(self, service: str) -> ServiceCounters:
        counters = self._counters.get(service)
        if counters is None:
            counters = self._counters[service] = ServiceCounters()
        return counters

    def _report(self, exc: BaseException, counters: ServiceCounters | None = None) -> None:
        logger.debug("request failed: %r", exc)
        if counters is not None:
            counters.errors += 1
        if self.on_error is not None:
            self.on_error(exc)

    @asynccontextmanager
    async def lookup_and_post(
        self, name: str, body: bytes = b"", tags: Mapping[str, str] | None = None
    ) -> AsyncIterator[SourceChannel]:
        """Post ``body`` to service ``name`` and receive the sources it announces.

        Yields a ``trio.abc.ReceiveChannel`` of :class:`RemoteSource`. Leaving the block
        cancels whatever is still running for the request on the server. The caller's
        effective deadline travels with the request, so the server stops in time too.
        Raises :class:`~chanserv_trio.ServiceNotFound` if no node offers ``name``
        within ``dial_timeout`` (or at once, with ``fast_not_found``, once nobody can).
        Among several nodes offering ``name`` one is picked at random;
        ``tags={"bucket": key}`` picks by consistent hashing of ``key`` instead, so the
        same key reaches the same node from every client.
        """
        deadline = trio.current_effective_deadline()
        request_tags = dict(tags or {})
        if self.source_buffer_size is not None:
            request_tags[SOURCE_WINDOW_TAG] = str(self.source_buffer_size)
        payload = bytes(body)

        def header() -> bytes:
            # Made once a node is found, so the time spent waiting for one counts.
            remaining = deadline - trio.current_time()
            timeout = None if math.isinf(deadline) else max(0.0, remaining)
            return encode_request(Request(payload, timeout, request_tags))

        counters = self._counters_for(name)
        counters.requests += 1
        counters.active += 1
        request = _Request(counters)
        try:
            try:
                master = await self.mpx.open_stream(
                    name,
                    header,
                    dial_timeout=self.dial_timeout,
                    local_open=self.source_buffer_size is not None,
                    route_key=_route_key(tags),
                    fast_not_found=self.fast_not_found,
                )
            except ChanservError as exc:
                request.fail(exc)
                self._report(exc, counters)
                raise
            # A server sends no data on the master stream, only sources under it.
            master.set_max_message_size(0)
            channel = SourceChannel(master, self, name, request)
            try:
                yield channel
            finally:
                channel._abort()
        except BaseException as exc:
            request.fail(exc)
            raise
        finally:
            counters.finished(request.outcome())


class _Request:
    """How one request is going on the client: its service's counters, whether every
    source was announced, and the first error met."""

    __slots__ = ("announced", "counters", "error")

    def __init__(self, counters: ServiceCounters) -> None:
        self.counters = counters
        self.announced = False
        self.error: BaseException | None = None

    def fail(self, exc: BaseException) -> None:
        if self.error is None:
            self.error = exc

    def outcome(self) -> str:
        """``ok`` when every source was announced and nothing failed; the first
        error's outcome otherwise; ``cancelled`` for a request left before its end."""
        if self.error is not None:
            return outcome_of(self.error)
        return "ok" if self.announced else "cancelled"


def _route_key(tags: Mapping[str, str] | None) -> bytes:
    """The route key of a request: the UTF-8 of its ``bucket`` tag, else none."""
    bucket = None if tags is None else tags.get("bucket")
    return b"" if bucket is None else bucket.encode()
