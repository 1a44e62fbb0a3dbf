"""The connection state machine of the chanserv_trio wire protocol (sans-IO: no trio).

Feed received bytes to :meth:`Connection.receive_data` and act on the events it
returns; call the ``open_stream`` / ``send_data`` / ``end_stream`` / ``reset_stream``
methods to act, then write out what :meth:`Connection.take_outgoing` returns. The
class never blocks and never does I/O, so every rule of the protocol can be tested by
pushing bytes through two instances.

When things may happen is decided by the state table in :mod:`~chanserv_trio.wire._state`: every
action and every received frame passes it first (a forbidden action raises
:class:`~chanserv_trio.LocalProtocolError`, a forbidden frame
:class:`~chanserv_trio.RemoteProtocolError`); once the connection is closed no action
queues a byte.

Flow control. Each stream has a receive window (``initial_stream_window``): every DATA
byte is charged to it, and the application returns credit with
:meth:`Connection.acknowledge` as it consumes whole messages (each
:class:`MessageReceived` says how much). So that a message larger than the window still
gets through, the chunks of a message in assembly are credited back on arrival, but only
while the application holds no unconsumed message of that stream (once it consumes them
all, the chunks that arrived meanwhile are credited). Per stream, buffered memory is
thus bounded by the window plus one message (``max_message_size``), whatever the sender
does and however slowly the application reads.
The connection window bounds bytes in transit: its credit is returned as soon as the
bytes are handed to a stream, so a stream nobody reads stalls only itself.
The counting lives in :class:`~chanserv_trio.wire._windows.Windows`, one per stream and one for the
connection.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from typing import Final

from .._errors import LocalProtocolError, RemoteProtocolError
from ._codec import (
    HEADER,
    MAX_HELLO_SIZE,
    OK_STATUS,
    OPEN_OVERHEAD,
    PROTOCOL_VERSION,
    DataFlags,
    ErrorCode,
    FrameDecoder,
    FrameType,
    HelloField,
    OpenFlags,
    PingFlags,
    ResumeSetting,
    ServiceFlags,
    Status,
    decode_goaway,
    decode_hello,
    decode_open,
    decode_status,
    decode_u32,
    encode_frame,
    encode_goaway,
    encode_hello,
    encode_open,
    encode_status,
    frame_too_large,
)
from ._compression import MIN_COMPRESS_SIZE, compress, declared_size, decompress, lz4_available
from ._events import (
    AdmissionRequested,
    ConnectionTerminated,
    Event,
    GoAwayReceived,
    HandshakeCompleted,
    MessageReceived,
    PingAcknowledged,
    Resumed,
    ResumeRequested,
    ServiceAdvertised,
    StreamEnded,
    StreamOpened,
    StreamReset,
    WindowOpened,
)
from ._resume import (
    MIN_RESUME_BUFFER,
    POSITION_WINDOW,
    TOKEN_SIZE,
    ResumeBuffer,
    ResumeOptions,
    new_token,
    pack_position_window,
)
from ._settings import MAX_WINDOW, MIN_FRAME_PAYLOAD, Settings
from ._state import (
    CONNECTION_NEXT,
    FORBIDDEN,
    IGNORED,
    LOCAL_OPEN,
    REMOTE_OPEN,
    STREAM_NEXT,
    ConnectionInput,
    ConnectionState,
    StreamInput,
    StreamState,
    reject_connection_input,
    reject_stream_input,
)
from ._windows import Windows

__all__ = [
    "ACCEPTING_NONCE",
    "CONTROL_RESERVE",
    "DIALING_NONCE",
    "MESSAGE_COST",
    "STREAM_COST",
    "Connection",
    "Settings",
    "check_memory_budget",
    "role_nonce",
]

#: What one received message costs besides its bytes while it is held (its bytes
#: object, its place in a stream's inbox): charged to the memory budget, so that many
#: tiny or empty messages, which flow control does not bound, are bounded too.
MESSAGE_COST: Final = 128
#: What one stream the peer opened costs besides its OPEN payload while it is open
#: (its state here and in the driver, and the handler a node runs for it: a chanserv
#: request measured 13.4 KiB): charged to the memory budget.
STREAM_COST: Final = 16 << 10
#: Bytes of a memory budget set aside for queued control replies (a driver stops
#: reading the peer well before: the link's ``CONTROL_LIMIT`` and one read's answers).
CONTROL_RESERVE: Final = 1 << 20
#: No budget: a Connection made without one holds what its windows allow.
_UNBOUNDED = 2**62

# Plain ints for the hot paths: IntFlag arithmetic is far slower than int arithmetic.
_DATA = int(FrameType.DATA)
_HELLO = int(FrameType.HELLO)
_OPEN = int(FrameType.OPEN)
_END = int(FrameType.END)
_RESET = int(FrameType.RESET)
_WINDOW = int(FrameType.WINDOW)
_PING = int(FrameType.PING)
_SERVICE = int(FrameType.SERVICE)
_GOAWAY = int(FrameType.GOAWAY)
_pack_header = HEADER.pack
_unpack_header = HEADER.unpack_from
_new_tuple = tuple.__new__
_HANDSHAKE = int(ConnectionState.HANDSHAKE)
_CLOSED = int(ConnectionState.CLOSED)
_GOING_AWAY = (int(ConnectionState.LOCAL_GOAWAY), int(ConnectionState.BOTH_GOAWAY))
_CI = ConnectionInput
_SI = StreamInput
_SEND_DATA = int(_CI.SEND_DATA)
_SEND_WINDOW = int(_CI.SEND_WINDOW)
_RECV_DATA = int(_CI.RECV_DATA)
_STREAM_CLOSED = int(StreamState.CLOSED)
_STREAM_SEND_DATA = int(_SI.SEND_DATA)
_STREAM_SEND_WINDOW = int(_SI.SEND_WINDOW)
_STREAM_RECV_DATA = int(_SI.RECV_DATA)
# (And the per-stream inputs, checked for every stream opened and ended.)
_SEND_OPEN = int(_CI.SEND_OPEN)
_SEND_END = int(_CI.SEND_END)
_SEND_RESET = int(_CI.SEND_RESET)
_RECV_UNKNOWN = int(_CI.RECV_UNKNOWN)
_STREAM_SEND_END = int(_SI.SEND_END)
_STREAM_SEND_RESET = int(_SI.SEND_RESET)
_STREAM_RECV_END = int(_SI.RECV_END)
_STREAM_RECV_RESET = int(_SI.RECV_RESET)
_STREAM_RECV_WINDOW = int(_SI.RECV_WINDOW)
#: The input each known frame type is to the connection's table (GOAWAY: see _on_goaway).
_RECEIVED = {
    _HELLO: _CI.RECV_HELLO,
    _OPEN: _CI.RECV_OPEN,
    _DATA: _CI.RECV_DATA,
    _END: _CI.RECV_END,
    _RESET: _CI.RECV_RESET,
    _WINDOW: _CI.RECV_WINDOW,
    _PING: _CI.RECV_PING,
    _SERVICE: _CI.RECV_SERVICE,
}
_MORE = int(DataFlags.MORE)
#: A whole small message is queued as one piece, header and payload copied together,
#: up to this size (larger ones go as two: no copy of the payload).
_COPY_UP_TO = 4096
_COMPRESSED = int(DataFlags.COMPRESSED)
_NO_SEND = int(OpenFlags.NO_SEND)
_NO_REPLY = int(OpenFlags.NO_REPLY)
#: HELLO field ids this version knows; the others are ignored.
_KNOWN_FIELDS = frozenset(HelloField)
#: The longest exception type name an END or RESET carries.
_MAX_KIND = 256
#: The resume room of a link that does not resume: no limit.
_NO_LIMIT = 1 << 62
_RESUME_TIMEOUT = int(ResumeSetting.RESUME_TIMEOUT)
_RESUME_BUFFER = int(ResumeSetting.RESUME_BUFFER)
_RESUME_POSITION = int(ResumeSetting.RESUME_POSITION)


def _reserve(settings: Settings) -> int:
    """What a memory budget sets aside for what is bounded on its own rather than
    charged: the receive buffer (twice the largest frame, see ``FrameDecoder``) and
    queued control replies (``CONTROL_RESERVE``)."""
    largest = max(settings.max_frame_payload, settings.max_open_payload + OPEN_OVERHEAD)
    return 2 * (largest + HEADER.size) + CONTROL_RESERVE


def check_memory_budget(budget: int, settings: Settings) -> None:
    """Raise ``ValueError`` if ``budget`` cannot hold the connection window, the
    receive buffer and one stream under ``settings``."""
    least = settings.connection_window + STREAM_COST + _reserve(settings)
    if budget < least:
        raise ValueError(
            f"a memory budget of {budget} bytes cannot hold the connection window "
            f"({settings.connection_window} bytes), the receive buffer and one stream: "
            f"it must be at least {least}"
        )


def _too_many_messages(budget: int) -> RemoteProtocolError:
    # Flow control bounds bytes, not messages: only many tiny or empty ones get here.
    return RemoteProtocolError(
        f"peer sent more messages than the link's memory budget holds "
        f"({budget} bytes, {MESSAGE_COST} a message besides its bytes)",
        ErrorCode.ENHANCE_YOUR_CALM,
    )


def _clip(text: str, limit: int) -> str:
    """``text`` cut to at most ``limit`` UTF-8 bytes, on a character boundary."""
    data = text.encode()
    if len(data) <= limit:
        return text
    return data[: max(limit, 0)].decode(errors="ignore")


def _code_name(code: int) -> str:
    """``SHUTDOWN`` for a known code, the number for an unknown one."""
    return ErrorCode.name_of(code) or str(code)


#: What the first bytes of other protocols look like, and what to tell the user.
_FOREIGN_PREFIXES = (
    (b"HTTP/", "the peer answered in HTTP, not chanserv_trio (a WebSocket endpoint? use ws://)"),
    (b"\x16\x03", "the peer speaks TLS, not plain chanserv_trio (use tls:// or wss://)"),
    (b"\x15\x03", "the peer answered with a TLS alert (it expects TLS: use tls:// or wss://)"),
)
_HTTP_METHODS = (b"GET ", b"POST", b"PUT ", b"HEAD", b"OPTI", b"DELE", b"PATC", b"CONN")


def _foreign_protocol(first: bytes) -> str | None:
    """A message naming the protocol the first bytes received belong to, if not ours."""
    for prefix, message in _FOREIGN_PREFIXES:
        if first.startswith(prefix):
            return message
    if first[:4] in _HTTP_METHODS:
        return "the peer sent an HTTP request, not chanserv_trio (it expects an HTTP server)"
    return None


class _Stream:
    """Per-stream protocol state."""

    __slots__ = (
        "assembling",
        "chunks",
        "cost",
        "max_message",
        "may_credit",
        "may_receive",
        "may_send",
        "messages",
        "parent",
        "state",
        "stream_id",
        "windows",
    )

    def __init__(
        self,
        stream_id: int,
        parent: int,
        state: int,
        send_window: int,
        recv_window: int,
        max_message: int,
    ) -> None:
        self.stream_id = stream_id
        self.parent = parent
        self.enter(state)
        #: Its flow-control windows, both ways.
        self.windows = Windows(send_window, recv_window)
        #: The non-empty chunks of the message in assembly (None until the first: most
        #: streams never assemble one).
        self.chunks: list[bytes] | None = None
        #: A DATA frame with MORE arrived and the message has not completed yet.
        self.assembling = False
        #: What the stream's own state is charged to the memory budget.
        self.cost = 0
        #: Whole messages held (handed over, not yet acknowledged).
        self.messages = 0
        #: The largest message accepted on this stream (-1: no DATA at all): the
        #: connection's ``max_message_size`` (one over it breaks the connection), unless
        #: lowered by ``set_max_message_size`` (one over it resets the stream).
        self.max_message = max_message

    def enter(self, state: int) -> None:
        """Move to ``state`` (a :class:`StreamState` value), reading ahead in the table
        what the hot paths ask about each frame."""
        #: A :class:`StreamState` value (a plain int for the hot paths).
        self.state = state
        row = STREAM_NEXT[state]
        #: The table allows SEND_DATA / RECV_DATA now (both leave the state as it is);
        #: the connection clears them when it closes, so they stand for its table too.
        self.may_send = row[_STREAM_SEND_DATA] >= 0
        self.may_receive = row[_STREAM_RECV_DATA] >= 0
        #: The table allows SEND_WINDOW now (after the peer's END it is ignored).
        self.may_credit = row[_STREAM_SEND_WINDOW] >= 0

    @property
    def local_open(self) -> bool:
        """We may still send DATA and END."""
        return bool(self.state & LOCAL_OPEN)

    @property
    def remote_open(self) -> bool:
        """The peer may still send DATA and END."""
        return bool(self.state & REMOTE_OPEN)


#: The role nonces of the side that dialed and of the side that accepted; a side that
#: did neither draws one in between, so that either fixed role wins over it.
DIALING_NONCE: Final = 2**64 - 1
ACCEPTING_NONCE: Final = 0


def role_nonce(initiator: bool | None) -> int:
    """The nonce a side sends in HELLO: the larger one takes the odd stream ids."""
    if initiator is None:
        return secrets.randbelow(DIALING_NONCE - 1) + 1  # 1 .. 2**64 - 2
    return DIALING_NONCE if initiator else ACCEPTING_NONCE


class Connection:
    """Both ends of the protocol are the same class; the handshake picks the roles.

    Each HELLO carries a role nonce; the side with the larger one opens odd stream ids,
    the other even ones, so both may open streams without coordination. A side that
    dialed passes ``initiator=True`` (nonce 2**64-1), one that accepted ``False``
    (nonce 0); ``None`` draws a random nonce, so two ends that each just have a stream
    need not agree on who is who. Equal nonces fail the handshake.

    ``credential``: bytes our HELLO carries in field CREDENTIAL. ``defer_hello``: the
    side that authenticates its peer sends its HELLO only once it has admitted the
    peer: the peer's HELLO then yields :class:`AdmissionRequested` and nothing after it
    is processed (nor anything of ours sent) until :meth:`admit` or :meth:`refuse`.
    """

    def __init__(
        self,
        *,
        initiator: bool | None = None,
        settings: Settings | None = None,
        credential: bytes | None = None,
        defer_hello: bool = False,
        memory_budget: int | None = None,
        resume: ResumeOptions | None = None,
    ) -> None:
        #: The nonce our HELLO carries.
        self.nonce = role_nonce(initiator)
        self._credential = credential
        # Authentication: our HELLO waits for admit(); until then nothing is written,
        # and nothing the peer sent after its HELLO is processed.
        self._admission_required = defer_hello
        #: The peer's HELLO arrived and waits for :meth:`admit` or :meth:`refuse`.
        self.admission_pending = False
        # Resumption (wire._resume): asked for only by a side of a fixed role.
        self._resume_options = None if initiator is None else resume
        #: Both HELLOs agreed to resumption: the link may move to a new transport.
        self.resumable = False
        #: The link's resume token (None: not resumable).
        self.resume_token: bytes | None = None
        #: Seconds a detached link is kept: the smaller of both sides' (resumable only).
        self.resume_timeout: float | None = None
        #: On an accepting connection whose first HELLO was a resuming one: the token
        #: and the peer's received position (the connection reads nothing more).
        self.resume_request: tuple[bytes, int] | None = None
        #: The transport broke; :meth:`begin_resume` / :meth:`accept_resume` undo it.
        self.detached = False
        # Frames sent and unconfirmed (kept from the first frame after our HELLO, so
        # that the handshake may still say the link resumes; dropped if not).
        self._resume_buffer = None if self._resume_options is None else ResumeBuffer()
        # DATA may fill the buffer up to this; the last eighth is kept for control
        # frames, which are always queued.
        self._resume_limit = (
            _NO_LIMIT
            if self._resume_options is None
            else self._resume_options.buffer_size - self._resume_options.buffer_size // 8
        )
        self._unconfirmed = 0
        # What the peer may hold unconfirmed before it must confirm (a quarter of our
        # buffer): room this far below the limit always comes back.
        self._confirmed_after = (
            0 if self._resume_options is None else self._resume_options.buffer_size // 4
        )
        # Bytes fed to the current decoder, and the received position's offset from it.
        self._fed = 0
        self._recv_base = 0
        # The received position we last told the peer, and how often we must.
        self._told = 0
        self._confirm_every = MIN_RESUME_BUFFER // 4
        # What goes out before the frames of the stream and is never replayed: a HELLO,
        # and after a resuming one, the replay.
        self._preamble: list[bytes | memoryview] = []
        self._preamble_size = 0
        # Our HELLO waits: for admit() (authentication), or, on an accepting side that
        # resumes, until it read the peer's.
        self._hello_deferred = defer_hello or (
            self._resume_options is not None and initiator is False
        )
        # We sent a resuming HELLO and wait for its answer: nothing else goes out.
        self._resume_wait = False
        # The answer was a plain HELLO: a refusal (GOAWAY) follows.
        self._refusal_expected = False
        #: True once the handshake gave us the odd stream ids (the dialing side's role),
        #: False for the even ones; None until the peer's HELLO arrives.
        self.initiator: bool | None = None
        #: The peer's HELLO fields of the ids this version knows (``HelloField``).
        self.peer_fields: dict[HelloField, bytes] = {}
        self._local_settings = settings or Settings()
        # Plain ints for the hot paths: the limits we enforce.
        self._max_frame_payload = self._local_settings.max_frame_payload
        self._max_message_size = self._local_settings.max_message_size
        #: Bytes this side may hold on the peer's behalf (None: what the windows allow).
        self.memory_budget = memory_budget
        if memory_budget is not None:
            check_memory_budget(memory_budget, self._local_settings)
        self._budget = (
            _UNBOUNDED if memory_budget is None else memory_budget - _reserve(self._local_settings)
        )
        # What is held on the peer's behalf (docs/errors.md, "Memory budget"): bytes of
        # DATA received and not yet acknowledged (whole messages and messages in
        # assembly), MESSAGE_COST per whole message held, the state of the streams the
        # peer opened, and what the driver holds for it (``hold``). One sum, kept as
        # things come and go (O(1) per frame).
        self._held = 0
        # Bytes of frames other than DATA queued (control frames: answers, credit, ...).
        self._control_queued = 0
        #: The peer's settings; defaults until its HELLO arrives.
        self.peer_settings = Settings()
        #: The protocol version spoken, once the peer's HELLO arrived (0 before).
        self.version = 0
        self.compressing = False
        # Messages shorter than this go out as one piece (header and payload copied
        # together): those not worth compressing, up to 4 KiB.
        self._copy_below = _COPY_UP_TO + 1
        self._decoder = FrameDecoder(MAX_HELLO_SIZE)
        self._streams: dict[int, _Stream] = {}
        self._enter(_HANDSHAKE)
        self._next_local_id = 0  # 1 or 2 once the roles are known
        self._highest_peer_id = 0
        self._local_open_count = 0
        self._peer_open_count = 0
        #: The connection's flow-control windows (send: the peer's connection window).
        self._windows = Windows(
            self.peer_settings.connection_window, self.local_settings.connection_window
        )
        self._outgoing: list[bytes | memoryview] = []
        self._outgoing_size = 0
        #: The peer sent GOAWAY: ``(last_stream_id, code)``.
        self.peer_goaway: tuple[int, int] | None = None
        #: We sent GOAWAY (graceful or not).
        self.local_goaway = False
        self.bytes_received = 0
        self.bytes_sent = 0
        self.messages_received = 0
        self.messages_sent = 0
        if not self._hello_deferred:
            self._queue_hello()

    # ------------------------------------------------------------------ queries

    @property
    def local_settings(self) -> Settings:
        """The settings we announced and enforce (fixed for the connection's life)."""
        return self._local_settings

    @property
    def state(self) -> ConnectionState:
        """Where the connection is in the state table."""
        return ConnectionState(self._state)

    @property
    def handshake_done(self) -> bool:
        """The peer's HELLO arrived and was accepted (it stays True once closed)."""
        return self.version != 0

    @property
    def closed(self) -> bool:
        """Nothing more is sent or processed: an error GOAWAY, or the byte stream ended."""
        return self._state == _CLOSED

    def stream_state(self, stream_id: int) -> StreamState:
        """The stream's state; ``CLOSED`` for one that is gone (or never was)."""
        stream = self._streams.get(stream_id)
        return StreamState.CLOSED if stream is None else StreamState(stream.state)

    @property
    def open_stream_count(self) -> int:
        """Streams not yet closed in both directions."""
        return len(self._streams)

    @property
    def outgoing_size(self) -> int:
        """Bytes queued for writing (and that :meth:`take_outgoing` would return)."""
        if self._hello_deferred or self._resume_wait:
            return self._preamble_size
        return self._outgoing_size + self._preamble_size

    @property
    def control_queued(self) -> int:
        """Bytes of frames other than DATA queued for writing (PING answers, WINDOW,
        RESET, ...): what a peer that sends without reading makes us queue."""
        return self._control_queued

    @property
    def held_bytes(self) -> int:
        """Bytes held on the peer's behalf and charged to the memory budget: DATA not
        yet acknowledged, ``MESSAGE_COST`` per message held, ``STREAM_COST`` plus the
        OPEN payload per stream the peer opened, and what :meth:`hold` added."""
        return self._held

    @property
    def receive_buffer_size(self) -> int:
        """Bytes of memory the receive buffer occupies (received, not yet a frame)."""
        return self._decoder.allocated

    def hold(self, size: int) -> bool:
        """The driver holds ``size`` more bytes on the peer's behalf (service names,
        ...): charged to the memory budget (:meth:`release` gives them back); False,
        charging nothing, if they do not fit."""
        if self._held + size + self._windows.receive > self._budget:
            return False
        self._held += size
        return True

    def release(self, size: int) -> None:
        """Give back bytes charged with :meth:`hold`."""
        self._held -= size
        windows = self._windows
        if windows.owed >= windows.size >> 2 and self._may_credit:
            # Credit the budget withheld (otherwise it went out with the bytes' arrival).
            self._grant_connection()

    @property
    def received_position(self) -> int:
        """Bytes of whole frames received and processed after the peer's first HELLO."""
        return self._recv_base + self._fed - self._decoder.buffered

    @property
    def sent_position(self) -> int:
        """Bytes of frames handed out by :meth:`take_outgoing` after our first HELLO
        (resumable links only; 0 otherwise)."""
        buffer = self._resume_buffer
        return 0 if buffer is None else buffer.end

    @property
    def resume_held(self) -> int:
        """Bytes of frames after our HELLO not yet confirmed by the peer: sent and
        held for replay, or queued (what ``resume_buffer_size`` bounds)."""
        if self._resume_buffer is None:
            return 0
        return self._unconfirmed + self._outgoing_size

    @property
    def resume_peak(self) -> int:
        """The most bytes the resume buffer held at once."""
        return 0 if self._resume_buffer is None else self._resume_buffer.peak

    def _resume_room(self) -> int:
        """DATA payload bytes that fit the resume buffer now (a frame header aside)."""
        return max(0, self._resume_limit - self._unconfirmed - self._outgoing_size - 10)

    def can_open_stream(self) -> bool:
        """Whether a stream may be opened now: the state allows it (handshake done, no
        GOAWAY from the peer, not closed) and so does the peer's concurrency limit."""
        return (
            CONNECTION_NEXT[self._state][_SEND_OPEN] >= 0
            and self._local_open_count < self.peer_settings.max_concurrent_streams
            and not self._hello_deferred
        )

    def is_open(self, stream_id: int) -> bool:
        """Whether the stream is still known (not closed both ways, not reset)."""
        return stream_id in self._streams

    def can_send(self, stream_id: int) -> bool:
        """Whether DATA and END may be sent on the stream: our half is open and the
        connection is not closed."""
        if not self._may_send:
            return False
        stream = self._streams.get(stream_id)
        return stream is not None and stream.may_send

    def send_window(self, stream_id: int) -> int:
        """Bytes of DATA we may send on the stream right now."""
        if not self.can_send(stream_id):
            return 0
        window = min(self._streams[stream_id].windows.send, self._windows.send)
        if self._resume_limit != _NO_LIMIT:
            window = min(window, self._resume_room())
        return window

    def send_window_for(self, stream_id: int, wanted: int) -> int:
        """How many of ``wanted`` bytes of DATA to send on the stream in the next frame
        now: as many as :meth:`send_window` allows, except on a resumable link when only
        the room left in the resume buffer holds them back and all of them fit in it
        once the peer confirms what is in flight: then 0, and the sender waits for that
        confirmation (which the peer sends once what we hold unconfirmed reaches a
        quarter of our buffer) rather than cutting the message into a piece that fits
        now and a rest, which the peer would have to assemble. More than fits then
        is sent in the parts that fit."""
        if not self.can_send(stream_id):
            return 0
        window = min(self._streams[stream_id].windows.send, self._windows.send, wanted)
        if self._resume_limit != _NO_LIMIT:
            room = self._resume_room()
            if room < window:
                whole = window + 10 <= self._resume_limit - self._confirmed_after
                window = 0 if whole else room
        return window

    def connection_send_window(self) -> int:
        """The connection-wide send credit left (on a resumable link, no more than the
        room left in the resume buffer)."""
        if self._resume_limit != _NO_LIMIT:
            return min(self._windows.send, self._resume_room())
        return self._windows.send

    def buffered_bytes(self) -> int:
        """Bytes received into streams but not yet acknowledged by the application."""
        return sum(stream.windows.buffered for stream in self._streams.values())

    # ---------------------------------------------------------------- outgoing

    def take_outgoing(self) -> list[bytes | memoryview]:
        """Everything queued for the wire, in order; the queue is emptied. On a link
        that may resume, the frames after our HELLO are also held for replay until
        the peer confirms them."""
        if self._hello_deferred or self._resume_wait:
            # Only a HELLO may go out now; the frames wait behind it.
            out = self._preamble
            self.bytes_sent += self._preamble_size
            self._preamble = []
            self._preamble_size = 0
            return out
        out = self._outgoing
        size = self._outgoing_size
        self._outgoing = []
        self._outgoing_size = 0
        self._control_queued = 0
        buffer = self._resume_buffer
        if buffer is not None and size:
            buffer.extend(out, size)
            self._unconfirmed = buffer.size
        if self._preamble:
            out = self._preamble + out
            size += self._preamble_size
            self._preamble = []
            self._preamble_size = 0
        self.bytes_sent += size
        return out

    def _queue(self, ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> None:
        header = _pack_header(len(payload), ftype, flags, stream_id)
        if payload:
            self._outgoing.append(header + payload)
        else:
            self._outgoing.append(header)
        size = len(header) + len(payload)
        self._outgoing_size += size
        self._control_queued += size

    def _peer_frame_limit(self) -> int:
        """The largest payload the peer is sure to accept for a control frame."""
        if not self.handshake_done:
            return MIN_FRAME_PAYLOAD
        return self.peer_settings.max_frame_payload

    def _status_payload(self, status: Status) -> bytes:
        """An END or RESET payload, with texts cut so that the peer accepts the frame."""
        kind = _clip(status.kind, _MAX_KIND)
        # 6 bytes of code and kind length precede the texts.
        room = self._peer_frame_limit() - 6 - len(kind.encode())
        return encode_status(Status(status.code, kind, _clip(status.message, room)))

    def _queue_hello(self, *, token: bytes | None = None, position: int | None = None) -> None:
        """Queue our HELLO ahead of every frame: with our credential if we have one, the
        resumption settings when we ask for it, the token when one is issued or
        presented, the received position in a resuming HELLO."""
        settings = {int(key): value for key, value in self.local_settings.to_wire().items()}
        options = self._resume_options
        if options is not None:
            settings[_RESUME_TIMEOUT] = options.timeout_ms
            settings[_RESUME_BUFFER] = options.buffer_size
            if position is not None:
                settings[_RESUME_POSITION] = position
        fields: dict[HelloField, bytes] = {}
        if self._credential is not None:
            fields[HelloField.CREDENTIAL] = self._credential
        if token is not None:
            fields[HelloField.RESUME_TOKEN] = token
        frame = encode_frame(
            FrameType.HELLO, 0, 0, encode_hello(settings, nonce=self.nonce, fields=fields)
        )
        self._preamble.append(frame)
        self._preamble_size += len(frame)

    # -------------------------------------------------------------- admission

    def admit(self) -> list[Event]:
        """Let the peer in once its HELLO was judged: our HELLO goes out ahead of
        everything queued meanwhile, and the frames that followed the peer's HELLO are
        processed now; returns their events (:class:`HandshakeCompleted` first).
        Raises :class:`RemoteProtocolError` as :meth:`receive_data` does."""
        if not self.admission_pending:
            raise LocalProtocolError("no peer is waiting to be admitted")
        self.admission_pending = False
        self._hello_deferred = False
        # Our HELLO goes out ahead of what was queued meanwhile (take_outgoing).
        self._queue_hello(token=self.resume_token)
        events: list[Event] = [HandshakeCompleted(self.version)]
        self._process(events)
        return events

    def refuse(self, message: str, code: int = ErrorCode.AUTHENTICATION_FAILED) -> None:
        """Refuse the peer waiting for admission: a GOAWAY with ``code`` and
        ``message`` is all it receives (none of what was queued meanwhile, not even
        our HELLO), and the connection closes."""
        if not self.admission_pending:
            raise LocalProtocolError("no peer is waiting to be admitted")
        self.admission_pending = False
        self._hello_deferred = False
        self._outgoing, self._outgoing_size = [], 0
        self.go_away(code, message)

    # ------------------------------------------------------------- state table

    def _enter(self, state: int) -> None:
        """Move to ``state`` (IGNORED: stay), reading ahead in the table what the hot
        paths ask about each message."""
        if state < 0:
            return
        #: A :class:`ConnectionState` value (a plain int for the hot paths).
        self._state = state
        row = CONNECTION_NEXT[state]
        #: The table allows SEND_DATA / RECV_DATA / SEND_WINDOW now (leaving the state).
        self._may_send = row[_SEND_DATA] >= 0
        self._may_receive = row[_RECV_DATA] >= 0
        self._may_credit = row[_SEND_WINDOW] >= 0
        if state == _CLOSED:
            # Every state that has streams allows these inputs but CLOSED, which is
            # final: so the streams' read-ahead flags stand for both tables.
            for stream in self._streams.values():
                stream.may_send = stream.may_receive = stream.may_credit = False

    def _check(self, event: int, frame_type: int | None = None) -> int:
        """The state after ``event`` (or IGNORED); raises if the table forbids it now.
        The caller moves the connection to the returned state once the input is done."""
        next_state = CONNECTION_NEXT[self._state][event]
        if next_state == FORBIDDEN:
            reject_connection_input(self._state, event, frame_type)
        return next_state

    @staticmethod
    def _check_stream(stream: _Stream | None, event: int, stream_id: int) -> int:
        """The same for a stream (``None``: one that is gone, in state CLOSED)."""
        state = 0 if stream is None else stream.state
        next_state = STREAM_NEXT[state][event]
        if next_state == FORBIDDEN:
            reject_stream_input(state, event, stream_id)
        return next_state

    # ----------------------------------------------------------------- actions

    def open_stream(
        self,
        service: str,
        header: bytes,
        *,
        parent: int = 0,
        local_open: bool = True,
        remote_open: bool = True,
        route_key: bytes = b"",
    ) -> int:
        """Open a stream and return its id.

        ``local_open=False``: we will send no data (our half starts closed, flag
        NO_SEND); ``remote_open=False``: the peer must send none (flag NO_REPLY).
        ``route_key``: opaque bytes a router picks its next hop by (empty: none).
        Raises :class:`LocalProtocolError` when the peer's concurrency limit is reached
        (check :meth:`can_open_stream` first) or the header is larger than the peer
        accepts.
        """
        self._check(_SEND_OPEN)
        if self._local_open_count >= self.peer_settings.max_concurrent_streams:
            raise LocalProtocolError("no stream may be opened now: the peer's limit is reached")
        if len(header) > self.peer_settings.max_open_payload:
            raise LocalProtocolError(
                f"header of {len(header)} bytes exceeds the peer's limit of "
                f"{self.peer_settings.max_open_payload}"
            )
        if parent and parent not in self._streams:
            raise LocalProtocolError(f"parent stream {parent} is not open")
        if len(service.encode()) > 0xFFFF:
            raise LocalProtocolError("service name longer than 65535 bytes")
        if len(route_key) > 0xFFFF:
            raise LocalProtocolError("route key longer than 65535 bytes")
        stream_id = self._next_local_id
        self._next_local_id += 2
        stream = _Stream(
            stream_id,
            parent,
            (LOCAL_OPEN if local_open else 0) | (REMOTE_OPEN if remote_open else 0),
            self.peer_settings.initial_stream_window,
            self.local_settings.initial_stream_window,
            self._max_message_size,
        )
        self._streams[stream_id] = stream
        self._local_open_count += 1
        flags = (0 if local_open else _NO_SEND) | (0 if remote_open else _NO_REPLY)
        self._queue(_OPEN, flags, stream_id, encode_open(parent, service, header, route_key))
        self._maybe_forget(stream)
        return stream_id

    def send_data(self, stream_id: int, data: bytes | memoryview, *, more: bool = False) -> None:
        """Queue one DATA frame; ``more`` says the message continues in the next one.

        ``len(data)`` must fit :meth:`send_window` and the peer's ``max_frame_payload``.
        """
        self._check(_SEND_DATA)
        stream = self._streams.get(stream_id)
        self._check_stream(stream, _STREAM_SEND_DATA, stream_id)
        assert stream is not None
        size = len(data)
        if size > stream.windows.send or size > self._windows.send:
            raise LocalProtocolError("DATA exceeds the flow-control window")
        if size > self.peer_settings.max_frame_payload:
            raise LocalProtocolError("DATA exceeds the peer's max_frame_payload")
        if size and self._resume_limit != _NO_LIMIT and size > self._resume_room():
            raise LocalProtocolError("DATA exceeds the room left in the resume buffer")
        stream.windows.spend(size)
        self._windows.spend(size)
        self._queue_data(stream_id, data, _MORE if more else 0)
        if not more:
            self.messages_sent += 1

    def try_send_message(self, stream_id: int, data: bytes) -> bool:
        """Queue ``data`` as one whole message in one DATA frame if the windows and the
        peer's frame limit allow it now; return False (queueing nothing) otherwise.

        The fast path for small messages; :meth:`send_data` does the general case.
        """
        # The tables, read ahead (SEND_DATA leaves both states as they are). No stream
        # exists before the handshake, and closing clears every stream's flag.
        stream = self._streams.get(stream_id)
        if stream is None or not stream.may_send:
            return False
        size = len(data)
        windows = stream.windows
        connection = self._windows
        queued = self._outgoing_size
        if (
            size > windows.send
            or size > connection.send
            or size > self.peer_settings.max_frame_payload
            or size + 10 > self._resume_limit - self._unconfirmed - queued
        ):
            return False
        # Windows.spend, inline on this hot path.
        windows.send -= size
        connection.send -= size
        self.messages_sent += 1
        if size < self._copy_below:  # the most frequent case: small, not compressed
            self._outgoing.append(_pack_header(size, 2, 0, stream_id) + data)  # DATA
            self._outgoing_size = queued + 10 + size
        elif self.compressing and size >= MIN_COMPRESS_SIZE:
            self._queue_data(stream_id, data, 0)
        elif size <= _COPY_UP_TO:  # one small copy beats one more piece for the writer to join
            self._outgoing.append(_pack_header(size, _DATA, 0, stream_id) + data)
            self._outgoing_size += 10 + size
        else:
            self._outgoing.append(_pack_header(size, _DATA, 0, stream_id))
            self._outgoing.append(data)
            self._outgoing_size += 10 + size
        return True

    def _queue_data(self, stream_id: int, data: bytes | memoryview, flags: int) -> None:
        """Queue a DATA frame, compressed when the link agreed to it and it pays."""
        payload: bytes | memoryview = data
        if self.compressing and len(data) >= MIN_COMPRESS_SIZE:
            packed = compress(data)
            if packed is not None:
                payload = packed
                flags |= _COMPRESSED
        size = len(payload)
        self._outgoing.append(_pack_header(size, _DATA, flags, stream_id))
        if size:
            self._outgoing.append(payload)
        self._outgoing_size += 10 + size

    def end_stream(self, stream_id: int, status: Status = OK_STATUS) -> None:
        """Close our half of the stream with a status (OK or an error)."""
        self._check(_SEND_END)
        stream = self._streams.get(stream_id)
        next_state = self._check_stream(stream, _STREAM_SEND_END, stream_id)
        assert stream is not None
        ok = status is OK_STATUS or status == OK_STATUS
        payload = b"" if ok else self._status_payload(status)
        self._queue(_END, 0, stream_id, payload)
        stream.enter(next_state)
        self._maybe_forget(stream)

    def reset_stream(self, stream_id: int, status: Status) -> bool:
        """Abort the stream both ways. Returns False (and sends nothing) if already gone,
        or if the connection is closed or not yet through its handshake."""
        if self._check(_SEND_RESET) == IGNORED:
            return False
        stream = self._streams.get(stream_id)
        if self._check_stream(stream, _STREAM_SEND_RESET, stream_id) == IGNORED:
            return False
        assert stream is not None
        self._queue(_RESET, 0, stream_id, self._status_payload(status))
        self._forget(stream)
        return True

    def acknowledge(self, stream_id: int, credit: int, messages: int = 0) -> None:
        """The application consumed ``credit`` bytes of the stream's messages (``messages``
        of them: each stops counting ``MESSAGE_COST`` to the memory budget)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return  # (no stream exists before the handshake)
        windows = stream.windows
        if (
            self._inline_messages
            and 0 < credit <= windows.held
            and 0 <= messages <= stream.messages
            and stream.may_credit
            and self._may_credit
            and not windows.prepaid
            and not windows.debt
            and windows.assembly == windows.assembly_credited
        ):
            # The most frequent case, inline: whole messages consumed, credit owed
            # back (Windows.consume with nothing prepaid, withheld or waiting).
            stream.messages -= messages
            windows.held -= credit
            self._held -= credit + messages * 128  # MESSAGE_COST
            owed = windows.owed + credit
            if owed < windows.size >> 2:
                windows.owed = owed
            else:
                windows.owed = 0
                windows.receive += owed
                self._queue(_WINDOW, 0, stream_id, owed.to_bytes(4, "big"))
            connection = self._windows
            if connection.owed >= connection.size >> 2:
                self._grant_connection()
            return
        held = self._held
        if messages:
            if messages > stream.messages:
                messages = stream.messages
            stream.messages -= messages
            held -= messages * MESSAGE_COST
        if credit > 0:
            windows = stream.windows
            before = windows.held
            if not self._may_credit:
                windows.consumed(credit)  # nobody to credit any more
            elif not stream.may_credit:
                # The peer sends no more: nothing to tell it.
                windows.settle(windows.consumed(credit))
            else:
                increment = windows.consume(credit)
                if increment:
                    self._queue(_WINDOW, 0, stream_id, increment.to_bytes(4, "big"))
            held -= before - windows.held
        self._held = held
        connection = self._windows
        if connection.owed >= connection.size >> 2 and self._may_credit:
            # Credit the budget withheld (otherwise it went out with the bytes' arrival).
            self._grant_connection()

    def set_receive_window(self, stream_id: int, window: int) -> None:
        """Change how many bytes the peer may send ahead on one stream.

        A larger window is granted at once with a WINDOW frame. A smaller one takes
        effect as the application consumes: credit is withheld until the peer is
        within the new window (what it was already granted may still arrive).
        """
        if not 0 < window <= MAX_WINDOW:
            raise LocalProtocolError(f"a window must be between 1 and {MAX_WINDOW}")
        if self._check(_SEND_WINDOW) == IGNORED:
            return
        stream = self._streams.get(stream_id)
        if self._check_stream(stream, _STREAM_SEND_WINDOW, stream_id) == IGNORED:
            return  # gone, or the peer sends no more: its window no longer matters
        assert stream is not None
        change = stream.windows.resize(window)
        if change:
            self._queue(_WINDOW, 0, stream_id, change.to_bytes(4, "big"))

    def _return_credit(self, stream: _Stream, credit: int) -> None:
        if not stream.may_credit:
            # The peer sends no more: restore the window without telling it.
            stream.windows.settle(credit)
            return
        increment = stream.windows.owe(credit)
        if increment:
            self._queue(_WINDOW, 0, stream.stream_id, increment.to_bytes(4, "big"))

    def ping(self, payload: bytes) -> None:
        """Queue a PING; its echo comes back as :class:`PingAcknowledged`."""
        if len(payload) != 8:
            raise LocalProtocolError("PING payload must be 8 bytes")
        if self._check(_CI.SEND_PING) != IGNORED:
            self._queue(_PING, 0, 0, payload)

    def advertise(self, name: str, available: bool = True, *, relayed: bool = False) -> None:
        """Tell the peer we offer (or no longer offer) a named service; ``relayed``:
        we offer it by relaying to another node."""
        if self._check(_CI.SEND_SERVICE) != IGNORED:
            flags = (0 if available else ServiceFlags.REMOVE) | (
                ServiceFlags.RELAYED if relayed else 0
            )
            self._queue(_SERVICE, flags, 0, name.encode())

    def advertise_complete(self) -> None:
        """Tell the peer that every service we offer has been advertised (a SERVICE
        with ``COMPLETE``, an empty name and ``REMOVE``; protocol.md section 13)."""
        if self._check(_CI.SEND_SERVICE) != IGNORED:
            self._queue(_SERVICE, ServiceFlags.REMOVE | ServiceFlags.COMPLETE, 0)

    def go_away(self, code: int = ErrorCode.OK, message: str = "") -> None:
        """Refuse new streams from the peer; with an error code, close the connection."""
        graceful = code == ErrorCode.OK
        next_state = self._check(_CI.SEND_GOAWAY if graceful else _CI.SEND_GOAWAY_ERROR)
        if next_state == IGNORED:
            return
        self.local_goaway = True
        # 8 bytes of last stream id and code precede the message.
        message = _clip(message, self._peer_frame_limit() - 8)
        self._queue(_GOAWAY, 0, 0, encode_goaway(self._highest_peer_id, code, message))
        self._enter(next_state)

    # ---------------------------------------------------------------- incoming

    def receive_data(self, data: bytes | bytearray | memoryview) -> list[Event]:
        """Feed received bytes; ``b""`` means the byte stream ended.

        Returns the events, in order. On a protocol violation a GOAWAY with the
        error code is queued, the connection is marked closed and
        :class:`RemoteProtocolError` is raised.
        """
        if self._state == _CLOSED:
            return []  # the table ignores every frame once closed
        events: list[Event] = []
        if not data:
            self._enter(self._check(_CI.RECV_EOF))
            events.append(
                ConnectionTerminated(ErrorCode.CONNECTION_LOST, "peer closed the connection")
            )
            return events
        if not self.bytes_received:
            foreign = _foreign_protocol(bytes(data[:8]))
            if foreign is not None:
                self.bytes_received += len(data)
                self.go_away(ErrorCode.PROTOCOL_ERROR, foreign)
                raise RemoteProtocolError(foreign, ErrorCode.PROTOCOL_ERROR)
        self.bytes_received += len(data)
        self._fed += len(data)
        self._decoder.feed(data)
        if not self.admission_pending:
            self._process(events)
        return events

    def _process(self, events: list[Event]) -> None:
        """Handle the whole frames buffered, until the connection closes or a peer
        waits for admission (its later frames stay buffered)."""
        try:
            if (self._resume_wait or self._refusal_expected) and not self._receive_resuming(
                events
            ):
                return
            decoder = self._decoder
            next_frame = decoder.next_frame
            # The frames of the current read first, parsed here (most are whole
            # messages in one DATA frame); then the one that spans reads, if any.
            while self._receive_contiguous(events):
                frame = next_frame()
                if frame is None:
                    break
                ftype, flags, stream_id, payload = frame
                if ftype == _DATA:
                    self._on_data(flags, stream_id, payload, events)
                    continue
                self._handle_frame(ftype, flags, stream_id, payload, events)
                if self._state == _CLOSED or self.admission_pending:
                    break
                if self.resume_request is not None:
                    break
        except RemoteProtocolError as exc:
            if self.admission_pending or (self._hello_deferred and self._admission_required):
                # Nothing of ours went out yet: the GOAWAY goes alone.
                self.admission_pending = self._hello_deferred = False
                self._outgoing, self._outgoing_size = [], 0
            if exc.code == ErrorCode.RESUME_REFUSED:
                # Nothing queued for the stream may reach the peer unreplayed.
                self._outgoing = []
                self._outgoing_size = 0
                self._resume_wait = False
            self.go_away(exc.code, exc.message)
            raise
        if self._may_credit:
            self._grant_connection()

    #: Whether :meth:`_receive_contiguous` takes whole messages in one DATA frame
    #: itself, and :meth:`acknowledge` whole consumed messages (the tests compare
    #: both with the general paths: ``_on_data`` and ``Windows.consume``).
    _inline_messages = True

    #: Report the whole messages the fast path takes as plain :data:`MessageTuple`
    #: tuples instead of :class:`MessageReceived` (same fields, same order among the
    #: events). Off by default; the trio driver sets it: see :data:`MessageTuple` for
    #: why it matters at many small messages per read.
    message_tuples = False

    def _receive_contiguous(self, events: list[Event]) -> bool:
        """Handle the whole frames that lie in the decoder's current read, as
        ``FrameDecoder.next_frame`` would return them. Returns False when reading
        must stop (closed, a peer waiting for admission, a resume request).

        A whole message in one DATA frame (no flags) on a stream that receives and has
        no message in assembly, within every limit, is handled inline: the same checks
        and counts as ``_on_data``, which handles every other DATA frame, and any
        such frame that is over a limit (and so raises or resets the stream).
        """
        decoder = self._decoder
        buffer = decoder._buffer
        offset = decoder._offset
        available = len(buffer)
        if available - offset < 10:
            return True
        limit = decoder.max_payload
        unpack = _unpack_header
        streams_get = self._streams.get
        append = events.append
        connection = self._windows
        # (Within the decoder's limit, which only a HELLO changes.)
        max_frame = min(self._max_frame_payload, limit)
        budget = self._budget
        inline = self._may_receive and self._inline_messages
        plain = self.message_tuples
        # The counts the inline path moves, kept here and stored back before anything
        # else runs (or raises): the connection window, what is held, messages.
        receive = connection.receive
        owed = connection.owed
        held = self._held
        count = self.messages_received
        while available - offset >= 10:
            length, ftype, flags, stream_id = unpack(buffer, offset)
            end = offset + 10 + length
            if ftype == 2 and not flags and inline and end <= available:
                stream = streams_get(stream_id)
                if (
                    stream is not None
                    and stream.may_receive
                    and not stream.assembling
                    and length <= max_frame
                    and length <= receive
                    and length <= stream.windows.receive
                    and length <= stream.max_message
                ):
                    # _on_data for this case: handed off the connection window, a
                    # whole message held (Windows.message with nothing in assembly).
                    payload = buffer[offset + 10 : end]
                    offset = end
                    receive -= length
                    owed += length
                    windows = stream.windows
                    windows.receive -= length
                    windows.held += length
                    stream.messages += 1
                    held += length + 128  # MESSAGE_COST
                    if held + receive > budget:
                        decoder._offset = offset
                        connection.receive = receive
                        connection.owed = owed
                        self._held = held
                        self.messages_received = count
                        raise _too_many_messages(budget)
                    count += 1
                    if plain:
                        append((stream_id, payload, length))
                    else:
                        append(_new_tuple(MessageReceived, (stream_id, payload, length)))
                    continue
            # Anything else: as FrameDecoder.next_frame returns it, handled by the
            # general path, with the counts stored back first and read again after.
            decoder._offset = offset
            connection.receive = receive
            connection.owed = owed
            self._held = held
            self.messages_received = count
            if length > limit:
                raise frame_too_large(length, limit)
            if end > available:
                return True
            payload = buffer[offset + 10 : end]
            decoder._offset = offset = end
            if ftype == 2:  # DATA
                self._on_data(flags, stream_id, payload, events)
            else:
                self._handle_frame(ftype, flags, stream_id, payload, events)
                if (
                    self._state == _CLOSED
                    or self.admission_pending
                    or self.resume_request is not None
                ):
                    return False
                # A HELLO raises the limit and opens the table.
                limit = decoder.max_payload
                max_frame = min(self._max_frame_payload, limit)
                inline = self._may_receive and self._inline_messages
            receive = connection.receive
            owed = connection.owed
            held = self._held
            count = self.messages_received
        decoder._offset = offset
        connection.receive = receive
        connection.owed = owed
        self._held = held
        self.messages_received = count
        return True

    def _grant_connection(self) -> None:
        """Grant the connection credit owed (once it reaches a quarter of the window),
        as far as the memory budget has room for it: what is held plus what the peer
        may send never exceeds the budget. Past that the peer waits (back-pressure)
        until the application consumes; what is withheld is granted then. On a
        resumable link the same WINDOW frame confirms our received position, which
        also goes out alone once the peer's buffer needs it (``wire._resume``)."""
        windows = self._windows
        owed = windows.owed
        quarter = windows.size >> 2
        increment = 0
        if owed >= quarter:
            room = self._budget - self._held - windows.receive
            if room < owed:
                owed = room if room >= quarter else 0
            if owed:
                windows.owed -= owed
                windows.receive += owed
                increment = owed
        if self.resumable:
            position = self.received_position
            if increment or position - self._told >= self._confirm_every:
                self._told = position
                self._queue(_WINDOW, 0, 0, pack_position_window(increment, position))
        elif increment:
            self._queue(_WINDOW, 0, 0, increment.to_bytes(4, "big"))

    def _handle_frame(
        self, ftype: int, flags: int, stream_id: int, payload: bytes, events: list[Event]
    ) -> None:
        if ftype == _GOAWAY:
            self._on_goaway(stream_id, payload, events)
            return
        event = _RECEIVED.get(ftype, _RECV_UNKNOWN)
        next_state = self._check(event, ftype)
        if ftype == _HELLO:
            self._on_hello(payload, events)
        elif ftype == _OPEN:
            self._on_open(flags, stream_id, payload, events)
        elif ftype == _END:
            self._on_end(stream_id, payload, events)
        elif ftype == _RESET:
            self._on_reset(stream_id, payload, events)
        elif ftype == _WINDOW:
            self._on_window(stream_id, payload, events)
        elif ftype == _PING:
            if stream_id or len(payload) != 8:
                raise RemoteProtocolError("malformed PING", ErrorCode.PROTOCOL_ERROR)
            if flags & PingFlags.ACK:
                events.append(PingAcknowledged(payload))
            else:
                self._queue(_PING, PingFlags.ACK, 0, payload)
        elif ftype == _SERVICE:
            if stream_id:
                raise RemoteProtocolError("SERVICE on a stream", ErrorCode.PROTOCOL_ERROR)
            if flags & ServiceFlags.COMPLETE:
                # The end-of-advertisement marker: its name (empty) and other bits say nothing.
                events.append(ServiceAdvertised("", False, complete=True))
            else:
                try:
                    name = payload.decode()
                except UnicodeDecodeError:
                    raise RemoteProtocolError(
                        "SERVICE name not UTF-8", ErrorCode.PROTOCOL_ERROR
                    ) from None
                events.append(
                    ServiceAdvertised(
                        name, not flags & ServiceFlags.REMOVE, bool(flags & ServiceFlags.RELAYED)
                    )
                )
        self._enter(next_state)

    def _on_hello(self, payload: bytes, events: list[Event]) -> None:
        hello = decode_hello(payload)
        token = hello.fields.get(HelloField.RESUME_TOKEN)
        if self._hello_deferred and token is not None:
            # A resuming HELLO: the node finds the link it names (and answers for it).
            position = hello.settings.get(_RESUME_POSITION)
            if position is None or len(token) != TOKEN_SIZE:
                raise RemoteProtocolError(
                    "resuming HELLO without a received position or with a malformed token",
                    ErrorCode.PROTOCOL_ERROR,
                )
            self.resume_request = (token, position)
            credential = hello.fields.get(HelloField.CREDENTIAL, b"")
            events.append(ResumeRequested(token, position, credential))
            return
        if token is not None and self.nonce == ACCEPTING_NONCE and not self._resume_options:
            raise RemoteProtocolError(
                "resumption failed: resumption is off on this node (resume_timeout=None)",
                ErrorCode.RESUME_REFUSED,
            )
        peer_settings = Settings.from_wire(hello.settings)
        if hello.nonce == self.nonce:
            raise RemoteProtocolError(
                f"both ends chose the same role (nonce {self.nonce}): one must dial or "
                f"pass initiator=True, the other accept or pass initiator=False, or both "
                f"leave initiator=None",
                ErrorCode.PROTOCOL_ERROR,
            )
        self.initiator = self.nonce > hello.nonce
        self._next_local_id = 1 if self.initiator else 2
        self.peer_fields = {
            HelloField(key): value for key, value in hello.fields.items() if key in _KNOWN_FIELDS
        }
        self.version = min(hello.version, PROTOCOL_VERSION)
        self.peer_settings = peer_settings
        self._settle_resumption(hello.settings, token)
        self._windows.send = self.peer_settings.connection_window
        #: Both ends asked for compression (and both have lz4): DATA may be compressed.
        self.compressing = (
            self.local_settings.compression and self.peer_settings.compression and lz4_available()
        )
        self._copy_below = MIN_COMPRESS_SIZE if self.compressing else _COPY_UP_TO + 1
        local = self.local_settings
        # OPEN frames carry a parent, a service name and a route key besides the header.
        self._decoder.max_payload = max(
            local.max_frame_payload, local.max_open_payload + OPEN_OVERHEAD
        )
        if self._hello_deferred:
            self.admission_pending = True
            events.append(AdmissionRequested(self.peer_fields.get(HelloField.CREDENTIAL, b"")))
            return
        events.append(HandshakeCompleted(self.version))

    # -------------------------------------------------------------- resumption

    def _settle_resumption(self, settings: dict[int, int], token: bytes | None) -> None:
        """The peer's first HELLO says whether the link resumes (``wire._resume``)."""
        options = self._resume_options
        peer_timeout = settings.get(_RESUME_TIMEOUT)
        if options is not None and peer_timeout:
            if self._hello_deferred:
                self.resume_token = new_token()
            elif token is not None and len(token) == TOKEN_SIZE:
                self.resume_token = token
        if self.resume_token is not None and options is not None and peer_timeout:
            self.resumable = True
            self.resume_timeout = min(options.timeout, peer_timeout / 1000)
            peer_buffer = max(settings.get(_RESUME_BUFFER, MIN_RESUME_BUFFER), MIN_RESUME_BUFFER)
            self._confirm_every = peer_buffer // 4
            # Position 0 is right after the peer's HELLO.
            self._recv_base = -(self._fed - self._decoder.buffered)
        else:
            self._resume_buffer = None
            self._resume_limit = _NO_LIMIT
            self._unconfirmed = 0
        if self._hello_deferred and not self._admission_required:
            self._hello_deferred = False
            self._queue_hello(token=self.resume_token)

    def detach(self) -> None:
        """The transport broke: forget its partial frames and anything not yet written
        of a resuming handshake; the streams and everything queued stay. Resumable
        links only."""
        assert self.resumable
        self._recv_base = self.received_position
        self._fed = 0
        self._decoder = FrameDecoder(MAX_HELLO_SIZE)
        self._preamble = []
        self._preamble_size = 0
        self._resume_wait = False
        self._refusal_expected = False
        self.detached = True

    def begin_resume(self) -> None:
        """The dialing side, over a new transport: queue a resuming HELLO. Nothing else
        goes out until the answer arrives (:class:`Resumed`)."""
        if not self.detached:
            self.detach()
        assert self.resume_token is not None
        self._queue_hello(token=self.resume_token, position=self.received_position)
        self._resume_wait = True

    def can_resume_from(self, position: int) -> bool:
        """Whether every frame after the peer's received ``position`` is still held."""
        buffer = self._resume_buffer
        return buffer is not None and buffer.holds(position)

    def accept_resume(self, position: int) -> int:
        """The accepting side, over a new transport whose resuming HELLO gave the
        peer's ``position`` (checked with :meth:`can_resume_from`): queue our answer,
        then the replay, ahead of what was queued meanwhile. Feed the new transport's
        bytes to :meth:`receive_data` from then on. Returns the bytes replayed."""
        if not self.detached:
            self.detach()
        self._decoder.max_payload = self._frame_limit()
        self._queue_hello(token=self.resume_token, position=self.received_position)
        replayed = self._replay(position)
        self.detached = False
        return replayed

    def confirm_position(self) -> bool:
        """Tell the peer our received position if it grew since we last did (with each
        keepalive PING); True if a frame was queued."""
        if not self.resumable or not self._may_credit or self.detached:
            return False
        position = self.received_position
        if position == self._told:
            return False
        self._told = position
        self._queue(_WINDOW, 0, 0, pack_position_window(0, position))
        return True

    def take_unread(self) -> bytes:
        """Bytes received on this connection after its last processed frame (after a
        :class:`ResumeRequested`: what the resumed link must read next)."""
        return self._decoder.take_rest()

    def _frame_limit(self) -> int:
        local = self.local_settings
        return max(local.max_frame_payload, local.max_open_payload + OPEN_OVERHEAD)

    def _replay(self, position: int) -> int:
        buffer = self._resume_buffer
        assert buffer is not None
        chunks = buffer.replay(position)
        self._unconfirmed = buffer.size
        self._told = self.received_position
        size = buffer.size
        self._preamble.extend(chunks)
        self._preamble_size += size
        return size

    def _receive_resuming(self, events: list[Event]) -> bool:
        """The frames that answer our resuming HELLO; True once it is answered and the
        rest is read as usual."""
        for ftype, _flags, stream_id, payload in self._decoder.frames():
            if ftype == FrameType.HELLO and self._resume_wait and not self._refusal_expected:
                self._on_resume_answer(payload, events)
                if not self._resume_wait:
                    return True
            elif ftype == FrameType.GOAWAY:
                self._on_goaway(stream_id, payload, events)
                return False
            elif not self._refusal_expected:
                raise RemoteProtocolError(
                    f"expected the answer to our resuming HELLO, got frame type {ftype}",
                    ErrorCode.PROTOCOL_ERROR,
                )
            # (After a plain HELLO, frames until the refusal's GOAWAY are skipped.)
        return False

    def _on_resume_answer(self, payload: bytes, events: list[Event]) -> None:
        hello = decode_hello(payload)
        token = hello.fields.get(HelloField.RESUME_TOKEN)
        position = hello.settings.get(_RESUME_POSITION)
        # Its HELLO is not part of the stream: position 0 of this transport is after it.
        self._recv_base -= self._fed - self._decoder.buffered
        self._decoder.max_payload = self._frame_limit()
        if token is None or position is None:
            self._refusal_expected = True  # a GOAWAY says why
            return
        if token != self.resume_token:
            raise RemoteProtocolError(
                "the answer to our resuming HELLO carries another token",
                ErrorCode.PROTOCOL_ERROR,
            )
        if not self.can_resume_from(position):
            raise RemoteProtocolError(
                f"resumption failed: the peer has received {position} bytes, and we no "
                f"longer hold what follows (we hold {self._held_range()})",
                ErrorCode.RESUME_REFUSED,
            )
        self._resume_wait = False
        replayed = self._replay(position)
        self.detached = False
        events.append(Resumed(position, replayed))

    def _held_range(self) -> str:
        buffer = self._resume_buffer
        return "nothing" if buffer is None else f"bytes {buffer.start} to {buffer.end}"

    def _confirmed(self, position: int) -> int:
        buffer = self._resume_buffer
        assert buffer is not None
        try:
            dropped = buffer.confirm(position)
        except ValueError as exc:
            raise RemoteProtocolError(
                f"confirmed position: {exc}", ErrorCode.PROTOCOL_ERROR
            ) from None
        self._unconfirmed = buffer.size
        return dropped

    def _is_peer_id(self, stream_id: int) -> bool:
        return (stream_id % 2 == 0) == self.initiator

    def _was_used(self, stream_id: int) -> bool:
        if self._is_peer_id(stream_id):
            return stream_id <= self._highest_peer_id
        return stream_id < self._next_local_id

    def _lookup(self, stream_id: int, what: str) -> _Stream | None:
        """The stream, or None for one that existed and closed; errors for one never opened."""
        if stream_id == 0:
            raise RemoteProtocolError(f"{what} on stream 0", ErrorCode.PROTOCOL_ERROR)
        stream = self._streams.get(stream_id)
        if stream is None and not self._was_used(stream_id):
            raise RemoteProtocolError(
                f"{what} on stream {stream_id}, which was never opened", ErrorCode.PROTOCOL_ERROR
            )
        return stream

    def _on_open(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0 or not self._is_peer_id(stream_id):
            raise RemoteProtocolError(f"OPEN with bad id {stream_id}", ErrorCode.PROTOCOL_ERROR)
        if stream_id <= self._highest_peer_id:
            raise RemoteProtocolError(f"OPEN reuses id {stream_id}", ErrorCode.PROTOCOL_ERROR)
        self._highest_peer_id = stream_id
        parent, service, header, route_key = decode_open(payload)
        if len(header) > self.local_settings.max_open_payload:
            raise RemoteProtocolError("OPEN header exceeds the limit", ErrorCode.FRAME_SIZE_ERROR)
        if self._state in _GOING_AWAY:
            self._queue(
                _RESET,
                0,
                stream_id,
                encode_status(Status(ErrorCode.REFUSED_STREAM, "", "going away")),
            )
            return
        if self._peer_open_count >= self.local_settings.max_concurrent_streams:
            self._queue(
                _RESET,
                0,
                stream_id,
                encode_status(Status(ErrorCode.REFUSED_STREAM, "", "too many concurrent streams")),
            )
            return
        cost = STREAM_COST + len(payload)
        if self._held + cost + self._windows.receive > self._budget:
            # The stream's state would not fit the memory budget: refused, as over the
            # concurrency limit (the peer may retry once streams close).
            self._queue(
                _RESET,
                0,
                stream_id,
                encode_status(
                    Status(ErrorCode.REFUSED_STREAM, "", "the link's memory budget is full")
                ),
            )
            return
        if parent and parent not in self._streams:
            if not self._was_used(parent):
                raise RemoteProtocolError(
                    f"OPEN with unknown parent {parent}", ErrorCode.PROTOCOL_ERROR
                )
            # The parent closed while this OPEN was in flight: refuse the child quietly.
            self._queue(
                _RESET,
                0,
                stream_id,
                encode_status(Status(ErrorCode.CANCEL, "", "parent stream closed")),
            )
            return
        stream = _Stream(
            stream_id,
            parent,
            (0 if flags & _NO_REPLY else LOCAL_OPEN) | (0 if flags & _NO_SEND else REMOTE_OPEN),
            self.peer_settings.initial_stream_window,
            self.local_settings.initial_stream_window,
            self._max_message_size,
        )
        stream.cost = cost
        self._held += cost
        self._streams[stream_id] = stream
        self._peer_open_count += 1
        events.append(
            StreamOpened(
                stream_id,
                parent,
                service,
                header,
                stream.remote_open,
                stream.local_open,
                route_key,
            )
        )
        self._maybe_forget(stream)

    def _on_data(self, flags: int, stream_id: int, payload: bytes, events: list[Event]) -> None:
        # The table, read ahead: RECV_DATA leaves both states as they are.
        if not self._may_receive:
            reject_connection_input(self._state, _RECV_DATA)
        compressed = flags & _COMPRESSED
        if compressed:
            if not self.compressing:
                raise RemoteProtocolError(
                    "compressed DATA on a link that did not agree to it", ErrorCode.PROTOCOL_ERROR
                )
            # Charged by the size it declares, before anything is decompressed.
            size = declared_size(payload, self._max_frame_payload)
        else:
            size = len(payload)
            if size > self._max_frame_payload:
                raise RemoteProtocolError(
                    "DATA exceeds max_frame_payload", ErrorCode.FRAME_SIZE_ERROR
                )
        connection = self._windows
        if size > connection.receive:
            raise RemoteProtocolError(
                "DATA exceeds the connection window", ErrorCode.FLOW_CONTROL_ERROR
            )
        # Handed off at once (see Windows): charged, and owed back. Inline, as this runs
        # for every DATA frame.
        connection.receive -= size
        connection.owed += size
        stream = self._streams.get(stream_id)
        if stream is None:
            self._lookup(stream_id, "DATA")  # raises for a stream never opened
            return  # closed or reset on our side: drop it (never decompressed)
        if not stream.may_receive:
            reject_stream_input(stream.state, _STREAM_RECV_DATA, stream_id)
        windows = stream.windows
        if size > windows.receive:
            raise RemoteProtocolError(
                f"DATA exceeds the window of stream {stream_id}", ErrorCode.FLOW_CONTROL_ERROR
            )
        if windows.assembly + size > stream.max_message:
            if stream.max_message >= self._max_message_size:
                raise RemoteProtocolError(
                    f"message exceeds max_message_size ({self._max_message_size})",
                    ErrorCode.FRAME_SIZE_ERROR,
                )
            self._refuse_data(stream, events)
            return
        if compressed:
            payload = decompress(payload, size)
        if flags & _MORE:
            stream.assembling = True
            if size:
                chunks = stream.chunks
                if chunks is None:
                    stream.chunks = [payload]
                else:
                    chunks.append(payload)
            self._held += size
            # Credited back at once while nothing is held, or a message larger than
            # the window could never complete.
            credit = windows.chunk(size)
            if credit:
                self._return_credit(stream, credit)
            if (
                size  # (the chunk that spent the last credit: checked once, not per empty one)
                and not connection.receive
                and self._budget - self._held < connection.size >> 2
                and not any(other.windows.held for other in self._streams.values())
            ):
                # The peer has no credit left, none can be granted, and nothing held can
                # be consumed to make room: only unfinished messages fill the budget.
                raise RemoteProtocolError(
                    f"unfinished messages fill the link's memory budget ({self._budget} bytes)",
                    ErrorCode.ENHANCE_YOUR_CALM,
                )
            return
        if stream.assembling:  # the last chunk of a message
            chunks = stream.chunks
            if chunks:
                chunks.append(payload)
                payload = b"".join(chunks)
                stream.chunks = None
            stream.assembling = False
            total = windows.message(size)
        else:
            # A message in one frame: Windows.message with nothing in assembly, inline
            # (the most frequent frame of all).
            windows.receive -= size
            windows.held += size
            total = size
        stream.messages += 1
        held = self._held = self._held + size + 128  # MESSAGE_COST
        if held + connection.receive > self._budget:
            raise _too_many_messages(self._budget)
        self.messages_received += 1
        events.append(MessageReceived(stream_id, payload, total))

    def _refuse_data(self, stream: _Stream, events: list[Event]) -> None:
        """DATA over the stream's own limit (``set_max_message_size``): the stream is
        reset, the link carries on."""
        if stream.max_message < 0:
            message = "this stream accepts no data"
        else:
            message = f"message exceeds this stream's limit of {stream.max_message} bytes"
        status = Status(ErrorCode.FRAME_SIZE_ERROR, "", message)
        stream_id = stream.stream_id
        if self.reset_stream(stream_id, status):
            events.append(StreamReset(stream_id, status, local=True))

    def set_max_message_size(self, stream_id: int, size: int) -> bool:
        """Accept messages of at most ``size`` bytes on one stream (0: no DATA at all,
        not even empty messages); more resets the stream with ``FRAME_SIZE_ERROR``
        (a :class:`StreamReset` event with ``local`` set) and the link carries on.
        Returns True when the message in assembly is already over it (the caller
        then resets the stream)."""
        stream = self._streams.get(stream_id)
        if stream is None:
            return False
        stream.max_message = min(size, self._max_message_size) if size > 0 else -1
        return stream.assembling and (size <= 0 or stream.windows.assembly > size)

    def _on_end(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        status = decode_status(payload)
        stream = self._lookup(stream_id, "END")
        next_state = self._check_stream(stream, _STREAM_RECV_END, stream_id)
        if stream is None:
            return
        if stream.assembling:
            raise RemoteProtocolError(
                f"END inside a message on stream {stream_id}", ErrorCode.PROTOCOL_ERROR
            )
        stream.enter(next_state)
        events.append(StreamEnded(stream_id, status))
        self._maybe_forget(stream)

    def _on_reset(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        status = decode_status(payload)
        stream = self._lookup(stream_id, "RESET")
        if self._check_stream(stream, _STREAM_RECV_RESET, stream_id) == IGNORED:
            return
        assert stream is not None
        self._forget(stream)
        events.append(StreamReset(stream_id, status))

    def _on_window(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        if stream_id == 0 and self.resumable:
            if len(payload) != POSITION_WINDOW.size:
                raise RemoteProtocolError(
                    "WINDOW on stream 0 of a resumable link must be 12 bytes",
                    ErrorCode.PROTOCOL_ERROR,
                )
            increment, position = POSITION_WINDOW.unpack(payload)
            if self._confirmed(position) or increment:
                if increment and not self._windows.granted(increment):
                    raise RemoteProtocolError(
                        "connection window overflow", ErrorCode.FLOW_CONTROL_ERROR
                    )
                events.append(WindowOpened(0))
            return
        increment = decode_u32(payload, "WINDOW")
        if increment == 0:
            raise RemoteProtocolError("WINDOW increment of 0", ErrorCode.PROTOCOL_ERROR)
        if stream_id == 0:
            if not self._windows.granted(increment):
                raise RemoteProtocolError(
                    "connection window overflow", ErrorCode.FLOW_CONTROL_ERROR
                )
            events.append(WindowOpened(0))
            return
        stream = self._lookup(stream_id, "WINDOW")
        if self._check_stream(stream, _STREAM_RECV_WINDOW, stream_id) == IGNORED:
            return
        assert stream is not None
        if not stream.windows.granted(increment):
            raise RemoteProtocolError("stream window overflow", ErrorCode.FLOW_CONTROL_ERROR)
        events.append(WindowOpened(stream_id))

    def _on_goaway(self, stream_id: int, payload: bytes, events: list[Event]) -> None:
        # Both kinds are allowed in the same states; the code picks the next one.
        graceful = len(payload) < 8 or payload[4:8] == bytes(4)
        next_state = self._check(_CI.RECV_GOAWAY if graceful else _CI.RECV_GOAWAY_ERROR)
        if stream_id:
            raise RemoteProtocolError("GOAWAY on a stream", ErrorCode.PROTOCOL_ERROR)
        last, code, message = decode_goaway(payload)
        self.peer_goaway = (last, code)
        # Before the peer's HELLO (a refused credential) any GOAWAY ends the connection.
        before_hello = self._state == _HANDSHAKE
        self._enter(next_state)
        if code != ErrorCode.OK or before_hello:
            events.append(ConnectionTerminated(code, message or _code_name(code)))
            return
        events.append(GoAwayReceived(last, code, message))
        # Our streams the peer will never process are refused now.
        refused = Status(ErrorCode.REFUSED_STREAM, "", "peer is going away")
        for stream in list(self._streams.values()):
            sid = stream.stream_id
            if not self._is_peer_id(sid) and sid > last:
                self._forget(stream)
                events.append(StreamReset(sid, refused))

    # ------------------------------------------------------------------ upkeep

    def _maybe_forget(self, stream: _Stream) -> None:
        if stream.state == _STREAM_CLOSED:
            self._forget(stream)

    def _forget(self, stream: _Stream) -> None:
        stream.enter(_STREAM_CLOSED)
        if self._streams.pop(stream.stream_id, None) is None:
            return
        # What it held is no longer charged (what its reader still holds of it is the
        # application's, once the stream is closed both ways or reset).
        windows = stream.windows
        self._held -= (
            stream.cost + windows.held + windows.assembly + stream.messages * MESSAGE_COST
        )
        stream.cost = stream.messages = 0
        stream.chunks = None
        windows = self._windows
        if windows.owed >= windows.size >> 2 and self._may_credit:
            # Credit the budget withheld (otherwise it went out with the bytes' arrival).
            self._grant_connection()
        if self._is_peer_id(stream.stream_id):
            self._peer_open_count -= 1
        else:
            self._local_open_count -= 1

    def stream_ids(self) -> Sequence[int]:
        """Ids of every stream still open."""
        return list(self._streams)
