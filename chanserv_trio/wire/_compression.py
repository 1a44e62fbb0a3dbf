"""LZ4 compression of DATA payloads (sans-IO), used when both ends of a link ask for it.

A compressed payload is ``u32 BE original length`` followed by one LZ4 block; the frame
carries the ``COMPRESSED`` flag, so no payload is ever guessed at from its bytes. The
``lz4`` package is an optional extra (``pip install 'chanserv-trio[lz4]'``).
"""

from __future__ import annotations

import struct
from typing import Any, Final

from .._errors import RemoteProtocolError
from ._codec import ErrorCode

__all__ = ["MIN_COMPRESS_SIZE", "compress", "declared_size", "decompress", "lz4_available"]

#: Payloads shorter than this are sent as they are: LZ4 rarely wins on them.
MIN_COMPRESS_SIZE: Final = 512
_LENGTH = struct.Struct(">I")

_lz4: Any
try:
    import lz4.block as _lz4  # type: ignore[import-untyped,no-redef]
except ImportError:  # pragma: no cover - depends on the environment
    _lz4 = None


def lz4_available() -> bool:
    """Whether the lz4 package is installed."""
    return _lz4 is not None


def compress(data: bytes | memoryview) -> bytes | None:
    """The compressed payload, or None when compressing would not make it smaller."""
    assert _lz4 is not None
    block: bytes = _lz4.compress(data, store_size=False)
    if len(block) + _LENGTH.size >= len(data):
        return None
    return _LENGTH.pack(len(data)) + block


def declared_size(payload: bytes, limit: int) -> int:
    """The original length a compressed payload declares, read before anything is
    decompressed, so that it is charged (windows, limits, memory budget) first; a
    protocol error for a payload that is too short or declares more than ``limit``."""
    if _lz4 is None:
        raise RemoteProtocolError("compressed DATA, but no lz4 here", ErrorCode.PROTOCOL_ERROR)
    if len(payload) < _LENGTH.size:
        raise RemoteProtocolError("compressed DATA too short", ErrorCode.PROTOCOL_ERROR)
    (size,) = _LENGTH.unpack_from(payload)
    if size > limit:
        raise RemoteProtocolError(
            f"compressed DATA expands to {size} > {limit} bytes", ErrorCode.FRAME_SIZE_ERROR
        )
    size_: int = size
    return size_


def decompress(payload: bytes, limit: int) -> bytes:
    """The original bytes of a compressed payload; a protocol error for a payload that
    claims more than ``limit`` bytes or does not decompress to what it claims. The
    output is bounded by the declared size (never more is allocated)."""
    size = declared_size(payload, limit)
    try:
        data: bytes = _lz4.decompress(payload[_LENGTH.size :], uncompressed_size=size)
    except Exception as exc:  # lz4 raises its own LZ4BlockError
        raise RemoteProtocolError(f"bad LZ4 block: {exc}", ErrorCode.PROTOCOL_ERROR) from None
    if len(data) != size:
        raise RemoteProtocolError("LZ4 block has the wrong length", ErrorCode.PROTOCOL_ERROR)
    return data
