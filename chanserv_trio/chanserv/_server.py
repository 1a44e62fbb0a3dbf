"""The chanserv Server: answers each request with a stream of sources, each with frames.

For every request a client posts to a service, the server calls the user's *source
function* with the request body. It returns an async iterable of :class:`Source`; each
announced source becomes a child stream of the request's master stream, fed from the
source's ``frames`` by its own task in the request's nursery.
"""

from __future__ import annotations

import inspect
import logging
import types
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from typing import Protocol, SupportsBytes, TypeVar

import attrs
import trio

from .._errors import ChanservError, RemoteProtocolError
from ..link._auth import Identity
from ..link._link import LinkStream
from ..node._multiplexer import Multiplexer
from ..wire._codec import ErrorCode, Status
from ._context import RequestContext, reset_current, set_current
from ._envelope import decode_credit, decode_request, source_window_of
from ._statistics import ServerStatistics, ServiceCounters, outcome_of

T = TypeVar("T")
#: The size of a source credit message, the only data a client sends on a master stream.
_CREDIT_SIZE = 4

__all__ = ["AllowFunction", "FrameLike", "Server", "Source", "SourceFunction"]

#: Source functions and frame producers that raised (ERROR, with the traceback); bad
#: requests, the server's own timeouts, error masses (WARNING).
logger = logging.getLogger("chanserv_trio.server")

#: The name of every source's pump task (what trio's task tree and tracebacks show).
_PUMP_TASK_NAME = "chanserv_trio.Server source pump"

#: Anything that can be sent as a frame.
FrameLike = bytes | bytearray | memoryview | SupportsBytes


class SourceFunction(Protocol):
    """``source_fn(request)`` returns the request's sources as an async iterable."""

    def __call__(self, request: bytes, /) -> AsyncIterable[Source]: ...


#: ``allow(identity)``, plain or async: whether a request from ``identity`` (None: the
#: link was not authenticated) may be served.
AllowFunction = Callable[[Identity | None], "bool | Awaitable[bool]"]


@attrs.define
class Source:
    """One source a server announces: a header and a stream of frames.

    ``frames`` is any async iterable of frames (an async generator, a trio memory
    receive channel, ...). A frame is ``bytes``, ``bytearray``, ``memoryview`` or any
    object with ``__bytes__``.
    """

    #: Sent to the client when the source is announced.
    header: bytes = b""
    #: The source's frames, sent in order.
    frames: AsyncIterable[FrameLike] = attrs.field(factory=lambda: _no_frames())


async def _no_frames() -> AsyncIterable[FrameLike]:  # pragma: no cover - trivially empty
    return
    yield b""


def frame_bytes(frame: object) -> bytes:
    """The bytes of a frame; a clear ``TypeError`` for things that are not frames."""
    if type(frame) is bytes:
        return frame
    if isinstance(frame, bytearray | memoryview):
        return bytes(frame)
    if isinstance(frame, int) or not hasattr(frame, "__bytes__"):
        raise TypeError(
            f"a frame must be bytes, bytearray, memoryview or have __bytes__, "
            f"not {type(frame).__name__}"
        )
    return bytes(frame)


def _error_status(exc: BaseException) -> Status:
    return Status(ErrorCode.APPLICATION_ERROR, type(exc).__name__, str(exc))


def _unfinished_generator(iterable: object) -> bool:
    """An async generator that has not run to its end (and so needs closing)."""
    return isinstance(iterable, types.AsyncGeneratorType) and iterable.ag_frame is not None


class _TimedOut(Exception):
    """One of the server's own timeouts expired. Kept apart from a ``TooSlowError``
    raised by the application's code, which is the application's failure like any
    other; ``on_error`` hears of it as the ``trio.TooSlowError`` in :attr:`error`."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.error = trio.TooSlowError(message)


async def _within(limit: float | None, message: str, step: Awaitable[T]) -> T:
    """Await ``step``, within ``limit`` seconds if one is set; :class:`_TimedOut`
    carrying ``message`` when it expires."""
    if limit is None:
        return await step
    with trio.move_on_after(limit):
        return await step
    raise _TimedOut(message)


async def _aclose_if_generator(iterable: object) -> None:
    if isinstance(iterable, types.AsyncGeneratorType):
        await iterable.aclose()


class _Record:
    """How one request is going: its service's counters, and the first failure."""

    __slots__ = ("counters", "outcome")

    def __init__(self, counters: ServiceCounters) -> None:
        self.counters = counters
        self.outcome = "ok"

    def fail(self, outcome: str) -> None:
        """The request failed with ``outcome``, unless it had failed already."""
        if self.outcome == "ok":
            self.outcome = outcome


class _SourceCredit:
    """How many more sources the client lets the server announce (``source_buffer_size``):
    it starts at the window the request asked for and grows with the client's credits."""

    def __init__(self, window: int) -> None:
        self.available = window
        self.scope = trio.CancelScope()
        self._lot = trio.lowlevel.ParkingLot()

    async def collect(self, master: LinkStream) -> None:
        """Read the client's credit messages until the announcing is over."""
        with self.scope:
            while True:
                try:
                    message = await master.receive()
                except (trio.EndOfChannel, trio.ClosedResourceError, ChanservError):
                    return
                try:
                    self.available += decode_credit(message)
                except RemoteProtocolError as exc:
                    master.reset(exc.code, exc.message)
                    return
                self._lot.unpark_all()

    async def acquire(self) -> None:
        """Wait until one more source may be announced, and take it."""
        await trio.lowlevel.checkpoint_if_cancelled()
        while self.available <= 0:
            await self._lot.park()
        self.available -= 1


class Server:
    """Serves source functions under service names on a :class:`Multiplexer`.

    Options (all keyword, all optional):

    - ``on_error(exc)``: called with every error the server meets (a failing source
      function or frames iterable, a malformed request); cancellations are not errors.
    - ``serving_timeout``: seconds a whole request may take, children included.
    - ``sourcing_timeout``: longest gap, in seconds, between two source announcements.
    - ``frame_write_timeout``: longest time one frame may wait for the client to make
      room for it (a client that stopped reading).
    - ``master_write_timeout``: longest time announcing one source may wait (for the
      client's limit on open streams to make room).
    - ``max_error_mass`` / ``on_max_error_mass(count, last_error)``: after that many
      errors without a request succeeding in between, the callback runs and the count
      starts again from zero.
    - ``max_request_size``: the largest request (its encoded envelope: body and tags)
      served; a larger one is refused with ``FRAME_SIZE_ERROR`` before the source
      function runs (the client's request raises :class:`~chanserv_trio.StreamError`).
      None: the link's ``max_open_payload`` (1 MiB by default).
    - ``compression``: ask for LZ4 compression on the multiplexer's links made from now
      on (it is agreed per link in the handshake, so the client side must ask too:
      ``cs.Settings(compression=True)``; needs ``pip install 'chanserv-trio[lz4]'``).

    By role, a master stream carries only the request (in its OPEN) and, when the
    client asked for a source window, 4-byte credit messages: any other data resets
    the request with ``FRAME_SIZE_ERROR`` as soon as it arrives (before it is held),
    and child streams the client opens under a request are reset with
    ``REFUSED_STREAM``.
    """

    def __init__(
        self,
        mpx: Multiplexer,
        *,
        on_error: Callable[[BaseException], object] | None = None,
        serving_timeout: float | None = None,
        sourcing_timeout: float | None = None,
        frame_write_timeout: float | None = None,
        master_write_timeout: float | None = None,
        compression: bool = False,
        max_error_mass: int | None = None,
        on_max_error_mass: Callable[[int, BaseException], object] | None = None,
        max_request_size: int | None = None,
    ) -> None:
        for name, value in (
            ("serving_timeout", serving_timeout),
            ("sourcing_timeout", sourcing_timeout),
            ("frame_write_timeout", frame_write_timeout),
            ("master_write_timeout", master_write_timeout),
        ):
            if value is not None and value <= 0:
                raise ValueError(f"{name} must be positive, not {value}")
        if max_error_mass is not None and max_error_mass < 1:
            raise ValueError("max_error_mass must be at least 1")
        if max_request_size is not None and max_request_size < 0:
            raise ValueError(f"max_request_size must not be negative, not {max_request_size}")
        self.max_request_size = max_request_size
        self.mpx = mpx
        if compression:
            mpx.request_compression()
        self.compression = compression
        self.on_error = on_error
        self.serving_timeout = serving_timeout
        self.sourcing_timeout = sourcing_timeout
        self.frame_write_timeout = frame_write_timeout
        self.master_write_timeout = master_write_timeout
        self.max_error_mass = max_error_mass
        self.on_max_error_mass = on_max_error_mass
        self._error_mass = 0
        self._counters: dict[str, ServiceCounters] = {}

    def statistics(self) -> ServerStatistics:
        """A snapshot of what this server counted since it was made: requests by
        service and outcome, sources announced, frames and bytes sent, errors."""
        return ServerStatistics.of(
            {name: counters.snapshot() for name, counters in self._counters.items()}
        )

    async def listen_and_serve(
        self, name: str, source_fn: SourceFunction, allow: AllowFunction | None = None
    ) -> None:
        """Serve ``source_fn`` as service ``name`` for as long as the multiplexer lives.

        Returns at once: the service is registered and advertised to every linked
        peer, and requests are handled in the multiplexer's tasks. Inside the source
        function and its frames, :func:`~chanserv_trio.current_request` tells who asked.

        ``allow(identity)`` (plain or async) runs before the source function for each
        request, with the :class:`~chanserv_trio.Identity` of the link it came on (None
        when that link was not authenticated); False refuses the request, and the
        client gets :class:`~chanserv_trio.PermissionDenied`.
        """

        counters = self._counters.get(name)
        if counters is None:
            counters = self._counters[name] = ServiceCounters()

        async def handler(master: LinkStream) -> None:
            await self._count_request(master, source_fn, counters, name, allow)

        self.mpx.handle(name, handler)
        await trio.lowlevel.checkpoint()

    def stop_serving(self, name: str) -> None:
        """Withdraw service ``name``; requests already running carry on."""
        self.mpx.unhandle(name)

    # ----------------------------------------------------------------- errors

    def _report(self, exc: BaseException, counters: ServiceCounters | None = None) -> None:
        if counters is not None:
            counters.errors += 1
        if self.on_error is not None:
            self.on_error(exc)
        if self.max_error_mass is not None:
            self._error_mass += 1
            if self._error_mass >= self.max_error_mass:
                count, self._error_mass = self._error_mass, 0
                logger.warning("%d errors without a success in between (max_error_mass)", count)
                if self.on_max_error_mass is not None:
                    self.on_max_error_mass(count, exc)

    def _refuse(self, master: LinkStream, exc: RemoteProtocolError, record: _Record) -> None:
        """A malformed request: reset its stream."""
        logger.warning("bad request to %r from %s: %s", master.service, master.remote_addr, exc)
        self._report(exc, record.counters)
        record.fail("error")
        master.reset(exc.code, exc.message)

    def _succeeded(self) -> None:
        self._error_mass = 0

    # --------------------------------------------------------------- requests

    async def _count_request(
        self,
        master: LinkStream,
        source_fn: SourceFunction,
        counters: ServiceCounters,
        name: str = "",
        allow: AllowFunction | None = None,
    ) -> None:
        counters.requests += 1
        counters.active += 1
        record = _Record(counters)
        try:
            await self._serve_request(master, source_fn, record, name, allow)
            if master.error is not None:
                # The client gave the request up (reset it) while its sources ran.
                record.fail(outcome_of(master.error))
        except trio.Cancelled:
            # The client reset the request, the link died, or the node shut down.
            error = master.error
            record.fail("cancelled" if error is None else outcome_of(error))
            raise
        except BaseException as exc:  # pragma: no cover - _serve_request handles errors
            record.fail(outcome_of(exc))
            raise
        finally:
            counters.finished(record.outcome)

    async def _serve_request(
        self,
        master: LinkStream,
        source_fn: SourceFunction,
        record: _Record,
        name: str = "",
        allow: AllowFunction | None = None,
    ) -> None:
        if not master.local_open:
            # Peer input, not our bug: an OPEN with NO_REPLY (with NO_SEND too, the
            # stream is closed both ways at once) leaves nothing to answer on.
            self._report(
                RemoteProtocolError(
                    f"a request to {name!r} was opened with NO_REPLY: it cannot be answered",
                    ErrorCode.PROTOCOL_ERROR,
                ),
                record.counters,
            )
            record.fail("error")
            master.reset(ErrorCode.PROTOCOL_ERROR, "a request needs a reply half (no NO_REPLY)")
            return
        # What a client may send besides the request: source credits, and no streams.
        master.refuse_children()
        limit = self.max_request_size
        if limit is not None and len(master.header) > limit:
            exc = RemoteProtocolError(
                f"request of {len(master.header)} bytes exceeds max_request_size ({limit})",
                ErrorCode.FRAME_SIZE_ERROR,
            )
            self._report(exc, record.counters)
            record.fail("error")
            master.reset(exc.code, exc.message)
            return
        try:
            request = decode_request(master.header)
        except RemoteProtocolError as exc:
            self._refuse(master, exc, record)
            return
        now = trio.current_time()
        deadline = float("inf")
        if request.timeout is not None:
            deadline = now + request.timeout
        if self.serving_timeout is not None:
            deadline = min(deadline, now + self.serving_timeout)
        try:
            window = source_window_of(request)
        except RemoteProtocolError as exc:
            self._refuse(master, exc, record)
            return
        master.set_max_message_size(0 if window is None else _CREDIT_SIZE)
        if master.is_finished:
            # It carried data other than credits: reset (the client gets FRAME_SIZE_ERROR).
            self._report(
                RemoteProtocolError(
                    "a request's master stream carried data other than source credits",
                    ErrorCode.FRAME_SIZE_ERROR,
                ),
                record.counters,
            )
            record.fail("error")
            return
        identity = master.link.identity
        if allow is not None:
            verdict = allow(identity)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if not verdict:
                who = "an unauthenticated peer" if identity is None else repr(identity.name)
                master.end(Status(ErrorCode.PERMISSION_DENIED, "", f"{who} may not use {name!r}"))
                record.fail("error")
                return
        token = set_current(
            RequestContext(
                service=name or master.service,
                identity=identity,
                remote_addr=master.link.remote_addr,
                # (The decoded request's own dict: nothing else holds it.)
                tags=types.MappingProxyType(request.tags),
                deadline=None if deadline == float("inf") else deadline,
            )
        )
        try:
            await self._serve_decoded(master, source_fn, request.body, deadline, window, record)
        finally:
            reset_current(token)

    async def _serve_decoded(
        self,
        master: LinkStream,
        source_fn: SourceFunction,
        body: bytes,
        deadline: float,
        window: int | None,
        record: _Record,
    ) -> None:
        ok = True
        # One scope for the request: the nursery's, with the request's deadline. (When
        # _announce cancels it, the master stream is finished and the request already
        # failed: the deadline branch below then changes nothing.)
        async with trio.open_nursery() as nursery:
            request_scope = nursery.cancel_scope
            if deadline != float("inf"):
                request_scope.deadline = deadline
            credit = None
            if window is not None:
                credit = _SourceCredit(window)
                nursery.start_soon(credit.collect, master)
            ok = await self._announce(master, source_fn, body, nursery, deadline, record, credit)
            if credit is not None:
                credit.scope.cancel()
                # The client ends its half once it has taken every source; resetting it
                # sooner could overtake our own END on its way (through a router).
                await master.wait_remote_end()
        if request_scope.cancelled_caught:
            master.end(Status(ErrorCode.TIMEOUT, "", "request deadline exceeded on the server"))
            record.fail("deadline_exceeded")
            ok = False
        if ok:
            self._succeeded()

    async def _announce(
        self,
        master: LinkStream,
        source_fn: SourceFunction,
        body: bytes,
        nursery: trio.Nursery,
        deadline: float,
        record: _Record,
        credit: _SourceCredit | None = None,
    ) -> bool:
        counters = record.counters
        iterator: AsyncIterator[Source] | None = None
        try:
            sources = source_fn(body)
            if isinstance(sources, types.CoroutineType):
                sources.close()  # never awaited: close it rather than leave a warning
                raise TypeError(
                    "a source function must return an async iterable of Source "
                    "(an async generator: use 'yield'), not a coroutine"
                )
            iterator = aiter(sources)
            sourcing_timeout = self.sourcing_timeout
            write_timeout = self.master_write_timeout
            pump = self._pump
            start_soon = nursery.start_soon
            while True:
                # The hot path (no timeouts, no source window) awaits the steps
                # themselves: no wrapper coroutine, no message made per source.
                if sourcing_timeout is None:
                    source = await anext(iterator, None)
                else:
                    source = await _within(
                        sourcing_timeout,
                        f"no source announced within sourcing_timeout ({sourcing_timeout} s)",
                        anext(iterator, None),
                    )
                if source is None:
                    break
                if type(source) is not Source and not isinstance(source, Source):
                    raise TypeError(
                        f"a source function must yield Source, not {type(source).__name__}"
                    )
                header = bytes(source.header)
                if write_timeout is None and credit is None:
                    child = await master.open_child(header)
                else:
                    child = await _within(
                        write_timeout,
                        f"a source could not be announced within master_write_timeout "
                        f"({write_timeout} s): the client holds too many open",
                        self._open_source(master, header, credit),
                    )
                counters.sources += 1
                # (A name of our own: trio would otherwise make one string per source.)
                start_soon(pump, child, source, deadline, record, name=_PUMP_TASK_NAME)
        except _TimedOut as exc:
            logger.warning("request to %r from %s: %s", master.service, master.remote_addr, exc)
            self._report(exc.error, counters)
            record.fail("deadline_exceeded")
            master.end(Status(ErrorCode.TIMEOUT, "", str(exc)))
            return False
        except Exception as exc:
            if isinstance(exc, ChanservError) and master.is_finished:
                # The master stream broke (client went away, link lost): nothing to tell.
                record.fail(outcome_of(master.error or exc))
                nursery.cancel_scope.cancel()
                return False
            # Anything else, chanserv errors included (a source function relaying another
            # service, a header over the client's limit), is the request's failure.
            logger.error(
                "source function of %r raised (request from %s)",
                master.service,
                master.remote_addr,
                exc_info=exc,
            )
            self._report(exc, counters)
            record.fail("remote_error")
            master.end(_error_status(exc))
            return False
        finally:
            if iterator is not None and _unfinished_generator(iterator):
                with trio.CancelScope(shield=True):
                    await _aclose_if_generator(iterator)
        master.end()
        return True

    @staticmethod
    async def _open_source(
        master: LinkStream, header: bytes, credit: _SourceCredit | None
    ) -> LinkStream:
        if credit is not None:
            await credit.acquire()
        return await master.open_child(header)

    async def _pump(
        self, child: LinkStream, source: Source, deadline: float, record: _Record
    ) -> None:
        frames = source.frames
        write_timeout = self.frame_write_timeout
        counters = record.counters
        send = child.send
        try:
            with child.cancel_on_reset():
                try:
                    async for frame in frames:
                        data = frame if type(frame) is bytes else frame_bytes(frame)
                        if write_timeout is None:  # the hot path: no wrapper per frame
                            await send(data)
                        else:
                            await _within(
                                write_timeout,
                                f"frame not taken within frame_write_timeout ({write_timeout} s)",
                                child.send(data),
                            )
                        counters.frames += 1
                        counters.bytes += len(data)
                finally:
                    if _unfinished_generator(frames):
                        with trio.CancelScope(shield=True):
                            await _aclose_if_generator(frames)
                child.end()
            if child.error is not None:
                # The client reset the source (closed it, or left the request).
                record.fail(outcome_of(child.error))
        except trio.Cancelled:
            if trio.current_time() >= deadline:
                child.reset(ErrorCode.TIMEOUT, "request deadline exceeded on the server")
            else:
                child.reset(ErrorCode.CANCEL, "cancelled on the server")
            raise
        except _TimedOut as exc:
            logger.warning("source on %s: %s", child.remote_addr, exc)
            self._report(exc.error, counters)
            record.fail("deadline_exceeded")
            child.reset(ErrorCode.TIMEOUT, str(exc))
        except Exception as exc:
            if isinstance(exc, ChanservError) and child.is_finished:
                # The stream broke under us: the client already knows.
                record.fail(outcome_of(child.error or exc))
                return
            # The frames iterable raised, or a frame was refused (over the client's
            # message limit) while the stream is fine: fail this source, on the wire.
            logger.error(
                "frames of source %r raised (request from %s)",
                source.header,
                child.remote_addr,
                exc_info=exc,
            )
            self._report(exc, counters)
            record.fail("remote_error")
            child.end(_error_status(exc))
