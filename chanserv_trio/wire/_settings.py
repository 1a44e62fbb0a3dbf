"""The limits and windows one side announces in HELLO (sans-IO).

Each side enforces its own :class:`Settings` on what it receives and learns the peer's
from the peer's HELLO; ``to_wire`` / ``from_wire`` convert to and from the setting ids
that HELLO carries.
"""

from __future__ import annotations

from typing import Any, Final

import attrs

from .._errors import RemoteProtocolError
from ._codec import ErrorCode, Setting
from ._compression import lz4_available

__all__ = ["MAX_WINDOW", "MIN_FRAME_PAYLOAD", "Settings"]

#: The largest window, and the largest value of any size setting: 2**31 - 1.
MAX_WINDOW: Final = 2**31 - 1
#: Every peer accepts frames this large (the least ``max_frame_payload`` allowed).
MIN_FRAME_PAYLOAD: Final = 1024


@attrs.frozen
class Settings:
    """Limits one side announces in HELLO and enforces on what it receives."""

    #: Bytes of complete, unconsumed messages the peer may send ahead on one stream.
    initial_stream_window: int = 1 << 20
    #: Bytes the peer may have in transit on the whole connection.
    connection_window: int = 16 << 20
    #: Largest DATA payload in one frame; longer messages are sent in chunks.
    max_frame_payload: int = 1 << 20
    #: Largest message (all chunks joined).
    max_message_size: int = 100 << 20
    #: Largest OPEN header (a source header or a request body).
    max_open_payload: int = 1 << 20
    #: Most streams the peer may have open towards us at once.
    max_concurrent_streams: int = 16384
    #: Ask for LZ4 compression of DATA payloads; used on a link when both ends ask and
    #: both have the ``lz4`` package (``pip install 'chanserv-trio[lz4]'``).
    compression: bool = False

    def __attrs_post_init__(self) -> None:
        for name in (
            "initial_stream_window",
            "connection_window",
            "max_frame_payload",
            "max_message_size",
            "max_open_payload",
            "max_concurrent_streams",
        ):
            value = getattr(self, name)
            if not 0 < value <= MAX_WINDOW:
                raise ValueError(f"{name} must be between 1 and {MAX_WINDOW}, not {value}")
        if self.max_frame_payload < MIN_FRAME_PAYLOAD:
            raise ValueError("max_frame_payload must be at least 1024")

    def to_wire(self) -> dict[Setting, int]:
        """The settings as HELLO carries them (COMPRESSION only when asked for and
        the ``lz4`` package is installed here)."""
        values = {
            Setting.INITIAL_STREAM_WINDOW: self.initial_stream_window,
            Setting.CONNECTION_WINDOW: self.connection_window,
            Setting.MAX_FRAME_PAYLOAD: self.max_frame_payload,
            Setting.MAX_MESSAGE_SIZE: self.max_message_size,
            Setting.MAX_OPEN_PAYLOAD: self.max_open_payload,
            Setting.MAX_CONCURRENT_STREAMS: self.max_concurrent_streams,
        }
        if self.compression and lz4_available():
            values[Setting.COMPRESSION] = 1
        return values

    @classmethod
    def from_wire(cls, values: dict[int, int]) -> Settings:
        """Settings from a HELLO; missing ids take their defaults, unknown ids are ignored."""
        known = {setting.value: setting.name.lower() for setting in Setting}
        kwargs: dict[str, Any] = {
            known[key]: value for key, value in values.items() if key in known
        }
        if "compression" in kwargs:
            kwargs["compression"] = kwargs["compression"] == 1
        try:
            return cls(**kwargs)
        except ValueError as exc:
            raise RemoteProtocolError(
                f"bad HELLO setting: {exc}", ErrorCode.PROTOCOL_ERROR
            ) from None
