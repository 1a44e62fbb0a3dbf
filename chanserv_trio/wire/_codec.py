"""The frame codec of the chanserv_trio wire protocol (sans-IO: no trio, no sockets).

Every frame is a 10-byte header followed by ``length`` payload bytes::

    +----------------+--------+--------+-------------------+
    | length: u32 BE | type:u8|flags:u8 | stream id: u32 BE |  payload (length bytes)
    +----------------+--------+--------+-------------------+

``docs/protocol.md`` describes each frame type's payload; this module is the
reference. :class:`FrameDecoder` can be fed bytes split at any point and yields
whole frames; anything malformed raises :class:`RemoteProtocolError` with the code
that goes on the wire in the GOAWAY frame.
"""

from __future__ import annotations

import enum
import struct
import sys
from collections.abc import Iterator, Mapping
from typing import Final

import attrs

from .._errors import RemoteProtocolError

__all__ = [
    "FLAGS",
    "HEADER",
    "HEADER_SIZE",
    "MAGIC",
    "MAX_HELLO_SIZE",
    "MIN_PROTOCOL_VERSION",
    "OK_STATUS",
    "OPEN_OVERHEAD",
    "PROTOCOL_VERSION",
    "DataFlags",
    "ErrorCode",
    "Frame",
    "FrameDecoder",
    "FrameType",
    "Hello",
    "HelloField",
    "OpenFlags",
    "PingFlags",
    "ResumeSetting",
    "ServiceFlags",
    "Setting",
    "Status",
    "decode_goaway",
    "decode_hello",
    "decode_open",
    "decode_status",
    "encode_frame",
    "encode_goaway",
    "encode_hello",
    "encode_open",
    "encode_status",
]

HEADER: Final = struct.Struct(">IBBI")
HEADER_SIZE: Final = HEADER.size  # 10
_unpack_header = HEADER.unpack_from
MAGIC: Final = b"CSTR"
PROTOCOL_VERSION: Final = 2
#: The oldest version this one talks to: a HELLO below it is VERSION_MISMATCH.
MIN_PROTOCOL_VERSION: Final = 2
#: A HELLO frame larger than this is refused before the peer's limits are known.
MAX_HELLO_SIZE: Final = 4096
#: The most an OPEN payload carries besides its header: parent, the longest service
#: name and the longest route key, each name with its u16 length (4+2+65535+2+65535).
OPEN_OVERHEAD: Final = 131078

_U16 = struct.Struct(">H")
_U32 = struct.Struct(">I")
_OPEN = struct.Struct(
    ">IH"
)  # parent stream id, service name length; then the route key's u16 length
_STATUS = struct.Struct(">IH")  # code, kind length
_GOAWAY = struct.Struct(">II")  # last stream id, code
_MAGIC_VERSION = struct.Struct(">4sH")  # magic, version
_HELLO = struct.Struct(">4sHQH")  # magic, version, role nonce, number of settings
_SETTING = struct.Struct(">HQ")  # setting id, value
_FIELD = struct.Struct(">HH")  # field id, field length


class FrameType(enum.IntEnum):
    """The type byte of a frame."""

    HELLO = 0
    OPEN = 1
    DATA = 2
    END = 3
    RESET = 4
    WINDOW = 5
    PING = 6
    GOAWAY = 7
    SERVICE = 8


class OpenFlags(enum.IntFlag):
    """Flag bits of OPEN, in terms of the stream's two halves."""

    NONE = 0
    #: The opener sends no data on this stream: its half starts closed.
    NO_SEND = 0x1
    #: The accepting side must not send data: its half starts closed.
    NO_REPLY = 0x2


class DataFlags(enum.IntFlag):
    """Flag bits of DATA."""

    NONE = 0
    #: The message continues in the next DATA frame of this stream.
    MORE = 0x1
    #: The payload is LZ4-compressed: u32 BE original length, then an LZ4 block.
    COMPRESSED = 0x2


class PingFlags(enum.IntFlag):
    """Flag bits of PING."""

    NONE = 0
    #: This is the answer to a PING with the same payload.
    ACK = 0x1


class ServiceFlags(enum.IntFlag):
    """Flag bits of SERVICE."""

    NONE = 0
    #: The named service is withdrawn rather than offered.
    REMOVE = 0x1
    #: Offered through the sender, a router that relays to a node serving it; a router
    #: must not offer it further (routes are one hop, so they cannot loop).
    RELAYED = 0x2
    #: The end-of-advertisement marker: every name the sender offers has been
    #: advertised before this frame. Sent with an empty name and ``REMOVE``, so that a
    #: peer that does not know the flag reads a withdrawal of no name, and ignores it.
    COMPLETE = 0x4


#: The flag class of each frame type that has flags (the others send 0 and ignore them).
FLAGS: Final[dict[FrameType, type[enum.IntFlag]]] = {
    FrameType.OPEN: OpenFlags,
    FrameType.DATA: DataFlags,
    FrameType.PING: PingFlags,
    FrameType.SERVICE: ServiceFlags,
}


class ErrorCode(enum.IntEnum):
    """Codes carried by END, RESET and GOAWAY frames."""

    OK = 0
    PROTOCOL_ERROR = 1
    INTERNAL_ERROR = 2
    FLOW_CONTROL_ERROR = 3
    FRAME_SIZE_ERROR = 4
    REFUSED_STREAM = 5
    CANCEL = 6
    SERVICE_NOT_FOUND = 7
    APPLICATION_ERROR = 8
    TIMEOUT = 9
    SHUTDOWN = 10
    VERSION_MISMATCH = 11
    ENHANCE_YOUR_CALM = 12
    CONNECTION_LOST = 13
    #: The accepting side refused the dialer's credential (GOAWAY, sent instead of HELLO).
    AUTHENTICATION_FAILED = 14
    #: The service refused the request for the identity it came from (END of a master
    #: stream).
    PERMISSION_DENIED = 15
    #: A resuming HELLO names a token or a position the receiver does not hold.
    RESUME_REFUSED = 16

    @classmethod
    def coerce(cls, value: int) -> ErrorCode | int:
        """The enum member for a known code, the plain int for an unknown one."""
        try:
            return cls(value)
        except ValueError:
            return value

    @classmethod
    def name_of(cls, value: int) -> str | None:
        """``"SHUTDOWN"`` for a known code, None for an unknown one.

        Works alike in the compiled wire layer, where a value typed ``ErrorCode | int``
        arrives as a plain int and ``isinstance(..., ErrorCode)`` is false.
        """
        try:
            return cls(value).name
        except ValueError:
            return None


class HelloField(enum.IntEnum):
    """Ids of the byte fields HELLO carries after the settings. Unknown ids are ignored
    by receivers; each id appears at most once."""

    #: Bytes the dialing side presents to be let in (``Multiplexer(credential=...)``).
    CREDENTIAL = 1
    #: The link's resume token: issued in the accepting side's first HELLO, presented
    #: in a resuming HELLO (``wire._resume``).
    RESUME_TOKEN = 2


class Setting(enum.IntEnum):
    """Setting ids carried in HELLO. Unknown ids are ignored by receivers."""

    INITIAL_STREAM_WINDOW = 1
    CONNECTION_WINDOW = 2
    MAX_FRAME_PAYLOAD = 3
    MAX_MESSAGE_SIZE = 4
    MAX_OPEN_PAYLOAD = 5
    MAX_CONCURRENT_STREAMS = 6
    #: 1: the sender can decompress LZ4 DATA payloads and asks for compression.
    COMPRESSION = 7


class ResumeSetting(enum.IntEnum):
    """Setting ids of resumption (``wire._resume``), carried in HELLO beside the
    :class:`Setting` ids but not limits, so not part of ``Settings``."""

    #: Milliseconds the sender keeps a detached link (sent only with resumption on).
    RESUME_TIMEOUT = 8
    #: Bytes of unconfirmed frames the sender keeps for replay.
    RESUME_BUFFER = 9
    #: In a resuming HELLO only: the sender's received position.
    RESUME_POSITION = 10


@attrs.frozen
class Frame:
    """One decoded frame."""

    #: What kind of frame this is.
    type: FrameType
    #: The flag bits, interpreted per type.
    flags: int
    #: The stream it belongs to; 0 for connection-wide frames.
    stream_id: int
    #: The payload bytes.
    payload: bytes


@attrs.frozen
class Status:
    """How a stream ended: the body of END and RESET frames."""

    #: :class:`ErrorCode` (``OK`` for a normal end).
    code: int
    #: For ``APPLICATION_ERROR``: the type name of the remote exception; else free text.
    kind: str = ""
    #: Human-readable detail.
    message: str = ""


def encode_frame(type: FrameType, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    """Encode a whole frame (header and payload) into one bytes object."""
    return HEADER.pack(len(payload), type, flags, stream_id) + payload


@attrs.frozen
class Hello:
    """A decoded HELLO payload."""

    #: The protocol version the sender speaks.
    version: int
    #: The sender's role nonce: the side with the larger one opens the odd stream ids.
    nonce: int
    #: Setting id -> value; unknown ids are kept as ints.
    settings: dict[int, int]
    #: Field id -> bytes; unknown ids are kept as ints.
    fields: dict[int, bytes] = attrs.field(factory=dict)


def encode_hello(
    settings: Mapping[Setting, int] | Mapping[int, int],
    version: int = PROTOCOL_VERSION,
    *,
    nonce: int = 0,
    fields: Mapping[HelloField, bytes] | Mapping[int, bytes] | None = None,
) -> bytes:
    """The payload of a HELLO frame (``nonce`` 0 is the accepting side's)."""
    parts = [_HELLO.pack(MAGIC, version, nonce, len(settings))]
    parts.extend(_SETTING.pack(key, value) for key, value in settings.items())
    fields = fields or {}
    parts.append(_U16.pack(len(fields)))
    for key, value in fields.items():
        parts.append(_FIELD.pack(key, len(value)))
        parts.append(value)
    return b"".join(parts)


def decode_hello(payload: bytes) -> Hello:
    """Parse a HELLO payload. The version is checked right after the magic, before the
    rest is read: a peer of another layout gets VERSION_MISMATCH, not a parse error."""
    if len(payload) < _MAGIC_VERSION.size:
        raise RemoteProtocolError("HELLO frame too short", ErrorCode.PROTOCOL_ERROR)
    magic, version = _MAGIC_VERSION.unpack_from(payload)
    if magic != MAGIC:
        raise RemoteProtocolError("peer does not speak chanserv_trio", ErrorCode.PROTOCOL_ERROR)
    if version < MIN_PROTOCOL_VERSION:
        raise RemoteProtocolError(
            f"peer speaks version {version}, we need {MIN_PROTOCOL_VERSION} or later",
            ErrorCode.VERSION_MISMATCH,
        )
    if len(payload) < _HELLO.size + _U16.size:
        raise RemoteProtocolError("HELLO frame too short", ErrorCode.PROTOCOL_ERROR)
    _, _, nonce, count = _HELLO.unpack_from(payload)
    offset = _HELLO.size + count * _SETTING.size
    if len(payload) < offset + _U16.size:
        raise RemoteProtocolError("HELLO settings have the wrong length", ErrorCode.PROTOCOL_ERROR)
    settings: dict[int, int] = {}
    for index in range(count):
        key, value = _SETTING.unpack_from(payload, _HELLO.size + index * _SETTING.size)
        settings[key] = value
    (field_count,) = _U16.unpack_from(payload, offset)
    offset += _U16.size
    fields: dict[int, bytes] = {}
    for _ in range(field_count):
        if len(payload) < offset + _FIELD.size:
            raise RemoteProtocolError(
                "HELLO fields have the wrong length", ErrorCode.PROTOCOL_ERROR
            )
        key, length = _FIELD.unpack_from(payload, offset)
        offset += _FIELD.size
        if key in fields:
            raise RemoteProtocolError(f"HELLO field {key} appears twice", ErrorCode.PROTOCOL_ERROR)
        fields[key] = payload[offset : offset + length]
        offset += length
    if offset != len(payload):
        raise RemoteProtocolError(
            "HELLO settings or fields have the wrong length", ErrorCode.PROTOCOL_ERROR
        )
    return Hello(version, nonce, settings, fields)


def encode_open(parent: int, service: str, header: bytes, route_key: bytes = b"") -> bytes:
    """The payload of an OPEN frame: parent stream id, service name, route key (empty:
    none), opaque header."""
    name = service.encode()
    return b"".join(
        (_OPEN.pack(parent, len(name)), name, _U16.pack(len(route_key)), route_key, header)
    )


def decode_open(payload: bytes) -> tuple[int, str, bytes, bytes]:
    """Return ``(parent, service, header, route_key)`` from an OPEN payload (the order
    :func:`encode_open` takes them in)."""
    if len(payload) < _OPEN.size:
        raise RemoteProtocolError("OPEN frame too short", ErrorCode.PROTOCOL_ERROR)
    parent, name_len = _OPEN.unpack_from(payload)
    end = _OPEN.size + name_len
    if end > len(payload):
        raise RemoteProtocolError("OPEN service name overruns frame", ErrorCode.PROTOCOL_ERROR)
    try:
        service = payload[_OPEN.size : end].decode()
    except UnicodeDecodeError:
        raise RemoteProtocolError(
            "OPEN service name not UTF-8", ErrorCode.PROTOCOL_ERROR
        ) from None
    if end + _U16.size > len(payload):
        raise RemoteProtocolError(
            "OPEN frame too short for its route key", ErrorCode.PROTOCOL_ERROR
        )
    (key_len,) = _U16.unpack_from(payload, end)
    key_end = end + _U16.size + key_len
    if key_end > len(payload):
        raise RemoteProtocolError("OPEN route key overruns frame", ErrorCode.PROTOCOL_ERROR)
    return parent, service, payload[key_end:], payload[end + _U16.size : key_end]


def encode_status(status: Status) -> bytes:
    """The payload of END and RESET frames."""
    kind = status.kind.encode()
    return _STATUS.pack(status.code, len(kind)) + kind + status.message.encode()


#: A normal end: what an empty END or RESET payload decodes to, and the default status
#: of an END (one frozen instance, shared, so an ``is`` test finds it).
OK_STATUS: Final = Status(ErrorCode.OK)


def decode_status(payload: bytes) -> Status:
    """Parse an END or RESET payload (an empty payload means ``OK``)."""
    if not payload:
        return OK_STATUS
    if len(payload) < _STATUS.size:
        raise RemoteProtocolError("status too short", ErrorCode.PROTOCOL_ERROR)
    code, kind_len = _STATUS.unpack_from(payload)
    end = _STATUS.size + kind_len
    if end > len(payload):
        raise RemoteProtocolError("status kind overruns frame", ErrorCode.PROTOCOL_ERROR)
    kind = payload[_STATUS.size : end].decode(errors="replace")
    message = payload[end:].decode(errors="replace")
    return Status(code, kind, message)


def encode_goaway(last_stream_id: int, code: int, message: str) -> bytes:
    """The payload of a GOAWAY frame."""
    return _GOAWAY.pack(last_stream_id, code) + message.encode()


def decode_goaway(payload: bytes) -> tuple[int, int, str]:
    """Return ``(last_stream_id, code, message)`` from a GOAWAY payload."""
    if len(payload) < _GOAWAY.size:
        raise RemoteProtocolError("GOAWAY frame too short", ErrorCode.PROTOCOL_ERROR)
    last, code = _GOAWAY.unpack_from(payload)
    return last, code, payload[_GOAWAY.size :].decode(errors="replace")


def decode_u32(payload: bytes, what: str) -> int:
    """A payload that must be exactly one u32 (WINDOW)."""
    if len(payload) != 4:
        raise RemoteProtocolError(f"{what} payload must be 4 bytes", ErrorCode.PROTOCOL_ERROR)
    value: int = _U32.unpack(payload)[0]
    return value


#: Received chunks shorter than this are gathered into one ``bytearray`` while a frame
#: is incomplete, instead of being kept one object each.
_SMALL_CHUNK = 4096


class FrameDecoder:
    """Turns a byte stream into frames; bytes may be fed split at any offset.

    ``max_payload`` bounds every frame's payload, so a hostile length field can
    never make the decoder buffer more than one header plus ``max_payload`` bytes.

    Received chunks are kept as they came: while a large frame is still incomplete
    they wait in a list and are joined once, when the frame is whole, so a frame
    costs at most one join and one slice however it was split. What it holds costs at
    most about twice the bytes held, however they were split (:attr:`allocated`):
    chunks shorter than 4 KiB are gathered into one ``bytearray`` rather than kept one
    object each (a frame trickled in 1-byte segments once cost 44 times its size), and
    when a read's whole frames are out and only a short start of the next one is left,
    that start is copied out rather than keeping the whole read alive.

    A reader in a hurry may parse the whole frames of the current read itself, as
    :meth:`next_frame` does (``_buffer`` from ``_offset`` on, the same header, the same
    ``max_payload`` check), moving ``_offset`` past each one before it acts on it, and
    call :meth:`next_frame` for the rest: the connection's receive path does, so that
    a DATA frame costs no call here.
    """

    __slots__ = ("_buffer", "_offset", "_pending", "_pending_size", "max_payload")

    def __init__(self, max_payload: int) -> None:
        self._buffer = b""
        self._offset = 0
        self._pending: list[bytes | bytearray] = []
        self._pending_size = 0
        self.max_payload = max_payload

    @property
    def buffered(self) -> int:
        """Bytes received but not yet returned as frames."""
        return len(self._buffer) - self._offset + self._pending_size

    @property
    def allocated(self) -> int:
        """Bytes of memory the buffered chunks occupy (objects and capacity included)."""
        size = sys.getsizeof(self._buffer) if len(self._buffer) > self._offset else 0
        pending = self._pending
        if pending:
            size += sys.getsizeof(pending) + sum(sys.getsizeof(chunk) for chunk in pending)
        return size

    def feed(self, data: bytes | bytearray | memoryview) -> None:
        """Append received bytes."""
        if not data:
            return
        pending = self._pending
        if self._offset == len(self._buffer) and not pending:
            self._buffer = data if type(data) is bytes else bytes(data)
            self._offset = 0
            return
        size = len(data)
        if size < _SMALL_CHUNK:
            last = pending[-1] if pending else None
            if type(last) is bytearray:
                last += data
            else:
                pending.append(bytearray(data))
        else:
            pending.append(data if type(data) is bytes else bytes(data))
        self._pending_size += size

    def take_rest(self) -> bytes:
        """Every byte fed and not yet returned as a frame; the decoder is left empty
        (for handing a transport's further bytes to another decoder)."""
        rest = b"".join([self._buffer[self._offset :], *self._pending])
        self._buffer = b""
        self._offset = 0
        self._pending = []
        self._pending_size = 0
        return rest

    def _take_spanning(self, missing: int) -> bytes:
        """The payload of the frame whose header starts the buffer and whose last
        ``missing`` bytes wait in the pending chunks: joined in one copy."""
        pieces: list[bytes | bytearray | memoryview] = [
            memoryview(self._buffer)[self._offset + HEADER_SIZE :]
        ]
        pending = self._pending
        index = 0
        rest = b""
        while missing:
            chunk = pending[index]
            index += 1
            if len(chunk) <= missing:
                pieces.append(chunk)
                missing -= len(chunk)
            else:
                pieces.append(memoryview(chunk)[:missing])
                rest = bytes(memoryview(chunk)[missing:])
                missing = 0
        payload = b"".join(pieces)
        del pieces
        self._buffer = rest
        self._offset = 0
        self._pending = pending[index:]
        self._pending_size = sum(len(chunk) for chunk in self._pending)
        return payload

    def _merge(self) -> None:
        self._pending.insert(0, self._buffer[self._offset :])
        self._buffer = b"".join(self._pending)
        self._offset = 0
        self._pending = []
        self._pending_size = 0

    def _settle(self) -> None:
        """Once the whole frames are out: drop the read they came in, or keep only the
        start of the next frame if it is short beside the read."""
        buffer = self._buffer
        offset = self._offset
        if offset == len(buffer):
            if offset:
                self._buffer = b""
                self._offset = 0
        elif offset and len(buffer) - offset < len(buffer) >> 1:
            self._buffer = buffer[offset:]
            self._offset = 0

    def next_frame(self) -> tuple[int, int, int, bytes] | None:
        """``(type, flags, stream_id, payload)`` of the next complete frame buffered,
        or None when there is none (what is left is then settled, see ``frames``)."""
        while True:
            buffer = self._buffer
            offset = self._offset
            contiguous = len(buffer) - offset
            if contiguous < HEADER_SIZE:
                if contiguous + self._pending_size < HEADER_SIZE:
                    self._settle()
                    return None
                self._merge()
                continue
            length, ftype, flags, stream_id = _unpack_header(buffer, offset)
            # Read the limit per frame: the caller may raise it between frames
            # (once HELLO is handled, with more frames of the same read pending).
            limit = self.max_payload
            if length > limit:
                raise frame_too_large(length, limit)
            end = offset + HEADER_SIZE + length
            if end > len(buffer):
                if contiguous + self._pending_size < HEADER_SIZE + length:
                    self._settle()
                    return None
                return ftype, flags, stream_id, self._take_spanning(end - len(buffer))
            self._offset = end
            return ftype, flags, stream_id, buffer[offset + HEADER_SIZE : end]

    def frames(self) -> Iterator[tuple[int, int, int, bytes]]:
        """Yield ``(type, flags, stream_id, payload)`` for each complete frame buffered.

        Types are returned as plain ints (unknown types are the caller's to judge);
        raises :class:`RemoteProtocolError` on an oversized length field.
        """
        next_frame = self.next_frame
        while (frame := next_frame()) is not None:
            yield frame


def frame_too_large(length: int, limit: int) -> RemoteProtocolError:
    """The error for a length field over the decoder's limit."""
    return RemoteProtocolError(
        f"frame of {length} bytes exceeds the limit of {limit}", ErrorCode.FRAME_SIZE_ERROR
    )
