"""The chanserv request envelope, carried in the master stream's OPEN header (sans-IO).

::

    version: u8 (1) | timeout: u64 BE microseconds (2**64-1 = no deadline)
    | tag count: u16 BE | per tag: key length u16, key, value length u16, value (UTF-8)
    | body (the rest)
"""

from __future__ import annotations

import math
import struct
from typing import Final

import attrs

from .._errors import RemoteProtocolError
from ..wire._codec import ErrorCode

__all__ = [
    "SOURCE_WINDOW_TAG",
    "Request",
    "decode_credit",
    "decode_request",
    "encode_credit",
    "encode_request",
    "source_window_of",
]

#: A reserved tag: the client asks the server to announce at most this many sources
#: ahead of the ones it accepted, and grants more with credit messages on the master
#: stream (each a u32 BE count of sources accepted).
SOURCE_WINDOW_TAG: Final = "chanserv.source_window"
_CREDIT = struct.Struct(">I")

ENVELOPE_VERSION: Final = 1
NO_DEADLINE: Final = 2**64 - 1
_HEAD = struct.Struct(">BQH")
_LEN = struct.Struct(">H")


@attrs.frozen
class Request:
    """A decoded request."""

    #: The request body the client posted.
    body: bytes
    #: Seconds the client is willing to wait, or None for no deadline.
    timeout: float | None = None
    #: Routing and user tags.
    tags: dict[str, str] = attrs.field(factory=dict)


def encode_request(request: Request) -> bytes:
    """The OPEN header of a master stream."""
    if request.timeout is None or math.isinf(request.timeout):
        micros = NO_DEADLINE
    else:
        micros = max(0, min(NO_DEADLINE - 1, int(request.timeout * 1_000_000)))
    parts = [_HEAD.pack(ENVELOPE_VERSION, micros, len(request.tags))]
    for key, value in request.tags.items():
        for text in (key, value):
            raw = text.encode()
            if len(raw) > 0xFFFF:
                raise ValueError("a tag key or value is longer than 65535 bytes")
            parts.append(_LEN.pack(len(raw)))
            parts.append(raw)
    parts.append(request.body)
    return b"".join(parts)


def decode_request(header: bytes) -> Request:
    """Parse a master stream's OPEN header; raises :class:`RemoteProtocolError` if malformed."""
    if len(header) < _HEAD.size:
        raise RemoteProtocolError("request envelope too short", ErrorCode.PROTOCOL_ERROR)
    version, micros, count = _HEAD.unpack_from(header)
    if version != ENVELOPE_VERSION:
        raise RemoteProtocolError(
            f"request envelope version {version} is not supported", ErrorCode.VERSION_MISMATCH
        )
    offset = _HEAD.size
    tags: dict[str, str] = {}
    try:
        for _ in range(count):
            texts = []
            for _ in range(2):
                (length,) = _LEN.unpack_from(header, offset)
                offset += 2
                if offset + length > len(header):
                    raise RemoteProtocolError("tag overruns envelope", ErrorCode.PROTOCOL_ERROR)
                texts.append(header[offset : offset + length].decode())
                offset += length
            tags[texts[0]] = texts[1]
    except (struct.error, UnicodeDecodeError):
        raise RemoteProtocolError("malformed request tags", ErrorCode.PROTOCOL_ERROR) from None
    timeout = None if micros == NO_DEADLINE else micros / 1_000_000
    return Request(header[offset:], timeout, tags)


def source_window_of(request: Request) -> int | None:
    """The source window a request asks for, or None; a protocol error if malformed."""
    text = request.tags.get(SOURCE_WINDOW_TAG)
    if text is None:
        return None
    if not text.isdigit() or not 0 < int(text) < 2**31:
        raise RemoteProtocolError(f"bad {SOURCE_WINDOW_TAG}: {text!r}", ErrorCode.PROTOCOL_ERROR)
    return int(text)


def encode_credit(count: int) -> bytes:
    """A credit message: the client accepted ``count`` more sources."""
    return _CREDIT.pack(count)


def decode_credit(message: bytes) -> int:
    """The count in a credit message; a protocol error if malformed."""
    if len(message) != _CREDIT.size:
        raise RemoteProtocolError("a source credit is 4 bytes", ErrorCode.PROTOCOL_ERROR)
    count: int = _CREDIT.unpack(message)[0]
    return count
