"""The frame codec: payload helpers, FrameDecoder, split feeds and hostile bytes (no I/O)."""

from __future__ import annotations

import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanserv_trio._errors import RemoteProtocolError
from chanserv_trio.wire._codec import (
    FLAGS,
    HEADER,
    HEADER_SIZE,
    MAGIC,
    MIN_PROTOCOL_VERSION,
    OK_STATUS,
    PROTOCOL_VERSION,
    DataFlags,
    ErrorCode,
    FrameDecoder,
    FrameType,
    Hello,
    HelloField,
    PingFlags,
    Setting,
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
)

FAST = settings(max_examples=150, deadline=None)

u8 = st.integers(0, 0xFF)
u16 = st.integers(0, 0xFFFF)
u32 = st.integers(0, 0xFFFF_FFFF)
u64 = st.integers(0, 2**64 - 1)

RawFrame = tuple[int, int, int, bytes]


def raw_frames(max_payload: int = 300) -> st.SearchStrategy[RawFrame]:
    return st.tuples(u8, u8, u32, st.binary(max_size=max_payload))


def encode_all(frames: list[RawFrame]) -> bytes:
    return b"".join(encode_frame(t, f, s, p) for t, f, s, p in frames)  # type: ignore[arg-type]


def decode_all(decoder: FrameDecoder, chunks: list[bytes]) -> list[RawFrame]:
    out: list[RawFrame] = []
    for chunk in chunks:
        decoder.feed(chunk)
        out.extend(decoder.frames())
    return out


# ------------------------------------------------------------------ frame header


def test_header_layout_is_ten_bytes_big_endian() -> None:
    assert HEADER_SIZE == 10
    data = encode_frame(FrameType.DATA, 0x01, 0x01020304, b"xyz")
    assert data == b"\x00\x00\x00\x03" + b"\x02" + b"\x01" + b"\x01\x02\x03\x04" + b"xyz"


@FAST
@given(st.lists(raw_frames(), max_size=12))
def test_frames_round_trip(frames: list[RawFrame]) -> None:
    decoder = FrameDecoder(max_payload=300)
    assert decode_all(decoder, [encode_all(frames)]) == frames
    assert decoder.buffered == 0


def test_every_frame_type_round_trips_with_its_payload_helper() -> None:
    payloads = {
        FrameType.HELLO: encode_hello({Setting.MAX_FRAME_PAYLOAD: 4096}),
        FrameType.OPEN: encode_open(3, "svc", b"hdr", b"key"),
        FrameType.DATA: b"message",
        FrameType.END: encode_status(Status(ErrorCode.APPLICATION_ERROR, "E", "m")),
        FrameType.RESET: encode_status(Status(ErrorCode.CANCEL)),
        FrameType.WINDOW: (1234).to_bytes(4, "big"),
        FrameType.PING: b"12345678",
        FrameType.GOAWAY: encode_goaway(7, ErrorCode.SHUTDOWN, "bye"),
        FrameType.SERVICE: b"svc",
    }
    assert set(payloads) == set(FrameType)
    stream = b"".join(encode_frame(t, 0, 5, p) for t, p in payloads.items())
    decoder = FrameDecoder(max_payload=1000)
    decoded = decode_all(decoder, [stream])
    assert [(t, f, s) for t, f, s, _ in decoded] == [(int(t), 0, 5) for t in payloads]
    by_type = {t: p for t, _, _, p in decoded}
    assert decode_hello(by_type[FrameType.HELLO]) == Hello(
        PROTOCOL_VERSION, 0, {Setting.MAX_FRAME_PAYLOAD: 4096}
    )
    assert decode_open(by_type[FrameType.OPEN]) == (3, "svc", b"hdr", b"key")
    assert decode_status(by_type[FrameType.END]) == Status(ErrorCode.APPLICATION_ERROR, "E", "m")
    assert decode_status(by_type[FrameType.RESET]) == Status(ErrorCode.CANCEL)
    assert decode_u32(by_type[FrameType.WINDOW], "WINDOW") == 1234
    assert by_type[FrameType.PING] == b"12345678"
    assert decode_goaway(by_type[FrameType.GOAWAY]) == (7, ErrorCode.SHUTDOWN, "bye")


def test_each_frame_type_has_its_own_flags_and_no_aliases() -> None:
    for frame, flags in FLAGS.items():
        members = list(flags.__members__.values())
        assert len({int(member) for member in members}) == len(members), frame
    # The same bit means different things on different frames: distinct members.
    assert PingFlags.ACK is not DataFlags.MORE  # type: ignore[comparison-overlap]
    assert int(PingFlags.ACK) == int(DataFlags.MORE) == 0x1


# ------------------------------------------------------------------ payload helpers


@FAST
@given(
    st.dictionaries(st.sampled_from(list(Setting)), u64, max_size=6),
    st.integers(MIN_PROTOCOL_VERSION, 0xFFFF),
    u64,
    st.dictionaries(u16, st.binary(max_size=40), max_size=4),
)
def test_hello_round_trip(
    values: dict[Setting, int], version: int, nonce: int, fields: dict[int, bytes]
) -> None:
    payload = encode_hello(values, version, nonce=nonce, fields=fields)
    assert payload[:4] == MAGIC
    assert decode_hello(payload) == Hello(
        version, nonce, {int(k): v for k, v in values.items()}, fields
    )
    # magic, version, nonce, n settings, n x 10, m fields, m x (4 + length)
    assert len(payload) == 16 + 10 * len(values) + 2 + sum(4 + len(v) for v in fields.values())


def test_hello_keeps_unknown_setting_ids_as_ints() -> None:
    payload = struct.pack(">4sHQH", MAGIC, 2, 7, 1) + struct.pack(">HQ", 999, 5) + b"\x00\x00"
    assert decode_hello(payload) == Hello(2, 7, {999: 5}, {})


def test_hello_below_version_2_is_a_version_mismatch_before_anything_else_is_read() -> None:
    version_1 = struct.pack(">4sHH", MAGIC, 1, 1) + struct.pack(">HQ", 1, 5)
    for payload in (version_1, version_1[:6], encode_hello({}, 0)):
        with pytest.raises(RemoteProtocolError, match="version") as info:
            decode_hello(payload)
        assert info.value.code == ErrorCode.VERSION_MISMATCH


def test_hello_fields_are_kept_by_id_and_appear_once() -> None:
    payload = encode_hello({}, nonce=9, fields={HelloField.CREDENTIAL: b"secret", 77: b""})
    assert decode_hello(payload).fields == {HelloField.CREDENTIAL: b"secret", 77: b""}
    twice = struct.pack(">4sHQH", MAGIC, 2, 9, 0) + b"\x00\x02" + b"\x00\x01\x00\x00" * 2
    with pytest.raises(RemoteProtocolError, match="appears twice") as info:
        decode_hello(twice)
    assert info.value.code == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"CSTR\x00", "too short"),
        (b"XXXX\x00\x01\x00\x00", "does not speak"),
        (encode_hello({Setting.CONNECTION_WINDOW: 1})[:-1], "wrong length"),
        (encode_hello({Setting.CONNECTION_WINDOW: 1}) + b"\x00", "wrong length"),
        (struct.pack(">4sHQH", MAGIC, 2, 0, 2) + struct.pack(">HQ", 1, 5), "wrong length"),
        (encode_hello({}, fields={1: b"abc"})[:-1], "wrong length"),
        (encode_hello({}, fields={1: b"abc"}) + b"\x00", "wrong length"),
    ],
)
def test_malformed_hello_is_a_protocol_error(payload: bytes, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError, match=fragment) as info:
        decode_hello(payload)
    assert info.value.code == ErrorCode.PROTOCOL_ERROR


@FAST
@given(u32, st.text(max_size=40), st.binary(max_size=100), st.binary(max_size=40))
def test_open_round_trip(parent: int, service: str, header: bytes, route_key: bytes) -> None:
    payload = encode_open(parent, service, header, route_key)
    assert decode_open(payload) == (parent, service, header, route_key)
    # parent, name length, name, route key length, route key, header
    assert len(payload) == 4 + 2 + len(service.encode()) + 2 + len(route_key) + len(header)


def test_open_layout_puts_the_route_key_between_the_service_and_the_header() -> None:
    assert encode_open(7, "s", b"HEAD", b"rk") == (
        b"\x00\x00\x00\x07" + b"\x00\x01s" + b"\x00\x02rk" + b"HEAD"
    )


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [
        (b"\x00\x00\x00\x01\x00", "too short"),
        (b"\x00\x00\x00\x01\x00\x05abc", "overruns"),
        (b"\x00\x00\x00\x01\x00\x02\xff\xfe", "not UTF-8"),
        (b"\x00\x00\x00\x01\x00\x01s\x00", "too short for its route key"),
        (b"\x00\x00\x00\x01\x00\x01s\x00\x03ab", "route key overruns"),
    ],
)
def test_malformed_open_is_a_protocol_error(payload: bytes, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError, match=fragment) as info:
        decode_open(payload)
    assert info.value.code == ErrorCode.PROTOCOL_ERROR


@FAST
@given(u32, st.text(max_size=40), st.text(max_size=100))
def test_status_round_trip(code: int, kind: str, message: str) -> None:
    assert decode_status(encode_status(Status(code, kind, message))) == Status(code, kind, message)


def test_empty_status_means_ok() -> None:
    assert decode_status(b"") == Status(ErrorCode.OK, "", "")
    # The one shared instance, which the connection and the driver end streams with.
    assert decode_status(b"") is OK_STATUS


def test_status_with_bad_utf8_is_replaced_not_rejected() -> None:
    payload = struct.pack(">IH", ErrorCode.APPLICATION_ERROR, 2) + b"\xff\xfe" + b"m\xff"
    status = decode_status(payload)
    assert status.code == ErrorCode.APPLICATION_ERROR
    assert status.kind == "\ufffd\ufffd"
    assert status.message == "m\ufffd"


@pytest.mark.parametrize(
    ("payload", "fragment"),
    [(b"\x00\x00\x00", "too short"), (b"\x00\x00\x00\x01\x00\x09ab", "overruns")],
)
def test_malformed_status_is_a_protocol_error(payload: bytes, fragment: str) -> None:
    with pytest.raises(RemoteProtocolError, match=fragment) as info:
        decode_status(payload)
    assert info.value.code == ErrorCode.PROTOCOL_ERROR


@FAST
@given(u32, u32, st.text(max_size=100))
def test_goaway_round_trip(last: int, code: int, message: str) -> None:
    assert decode_goaway(encode_goaway(last, code, message)) == (last, code, message)


def test_short_goaway_is_a_protocol_error() -> None:
    with pytest.raises(RemoteProtocolError) as info:
        decode_goaway(b"\x00" * 7)
    assert info.value.code == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize("payload", [b"", b"\x00\x00\x01", b"\x00\x00\x00\x01\x00"])
def test_u32_payload_must_be_four_bytes(payload: bytes) -> None:
    with pytest.raises(RemoteProtocolError, match="WINDOW payload must be 4 bytes"):
        decode_u32(payload, "WINDOW")


def test_error_code_coerce_keeps_unknown_codes_as_ints() -> None:
    assert ErrorCode.coerce(4) is ErrorCode.FRAME_SIZE_ERROR
    assert ErrorCode.coerce(4242) == 4242
    assert not isinstance(ErrorCode.coerce(4242), ErrorCode)


def test_error_code_name_of_names_known_codes_only() -> None:
    assert ErrorCode.name_of(4) == "FRAME_SIZE_ERROR"
    assert ErrorCode.name_of(ErrorCode.SHUTDOWN) == "SHUTDOWN"
    assert ErrorCode.name_of(0) == "OK"
    assert ErrorCode.name_of(4242) is None


def test_remote_protocol_error_carries_code_and_message() -> None:
    exc = RemoteProtocolError("too much", ErrorCode.FLOW_CONTROL_ERROR)
    assert exc.code is ErrorCode.FLOW_CONTROL_ERROR
    assert exc.message == "too much"
    assert str(exc) == "FLOW_CONTROL_ERROR: too much"


# ------------------------------------------------------------------ FrameDecoder

SAMPLE_FRAMES: list[RawFrame] = [
    (FrameType.HELLO, 0, 0, encode_hello({Setting.INITIAL_STREAM_WINDOW: 10})),
    (FrameType.OPEN, 3, 1, encode_open(0, "svc", b"header")),
    (FrameType.DATA, 1, 1, b"first chunk"),
    (FrameType.DATA, 0, 1, b""),
    (FrameType.WINDOW, 0, 0, b"\x00\x00\x10\x00"),
    (FrameType.END, 0, 1, encode_status(Status(ErrorCode.TIMEOUT, "", "slow"))),
    (FrameType.PING, 1, 0, b"pingpong"),
    (200, 0xFF, 0xFFFF_FFFF, b"unknown type is returned as an int"),
]
SAMPLE_BYTES = encode_all(SAMPLE_FRAMES)


def test_split_at_every_offset_yields_identical_frames() -> None:
    for cut in range(len(SAMPLE_BYTES) + 1):
        decoder = FrameDecoder(max_payload=100)
        frames = decode_all(decoder, [SAMPLE_BYTES[:cut], SAMPLE_BYTES[cut:]])
        assert frames == SAMPLE_FRAMES, f"split at {cut}"
        assert decoder.buffered == 0


def test_split_at_every_pair_of_offsets_yields_identical_frames() -> None:
    data = SAMPLE_BYTES[: len(encode_all(SAMPLE_FRAMES[:3])) + 5]  # three frames and a part
    expected = decode_all(FrameDecoder(max_payload=100), [data])
    assert len(expected) == 3
    for first in range(len(data) + 1):
        for second in range(first, len(data) + 1):
            decoder = FrameDecoder(max_payload=100)
            chunks = [data[:first], data[first:second], data[second:]]
            assert decode_all(decoder, chunks) == expected
            assert decoder.buffered == len(data) - len(encode_all(expected))


def test_byte_at_a_time_yields_identical_frames() -> None:
    decoder = FrameDecoder(max_payload=100)
    chunks = [SAMPLE_BYTES[i : i + 1] for i in range(len(SAMPLE_BYTES))]
    assert decode_all(decoder, chunks) == SAMPLE_FRAMES


def test_decoder_accepts_bytearray_and_memoryview() -> None:
    decoder = FrameDecoder(max_payload=100)
    decoder.feed(bytearray(SAMPLE_BYTES[:25]))
    decoder.feed(memoryview(SAMPLE_BYTES)[25:])
    frames = list(decoder.frames())
    assert frames == SAMPLE_FRAMES
    assert all(type(payload) is bytes for _, _, _, payload in frames)


@FAST
@given(st.lists(raw_frames(), max_size=10), st.data())
def test_random_splits_yield_identical_frames(frames: list[RawFrame], data: st.DataObject) -> None:
    stream = encode_all(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=8)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    decoder = FrameDecoder(max_payload=300)
    assert decode_all(decoder, chunks) == frames
    assert decoder.buffered == 0


def test_payload_of_exactly_max_payload_is_accepted() -> None:
    decoder = FrameDecoder(max_payload=64)
    decoder.feed(encode_frame(FrameType.DATA, 0, 1, b"x" * 64))
    assert list(decoder.frames()) == [(FrameType.DATA, 0, 1, b"x" * 64)]


def test_oversized_length_field_fails_on_the_header_alone() -> None:
    decoder = FrameDecoder(max_payload=64)
    decoder.feed(HEADER.pack(65, FrameType.DATA, 0, 1))
    with pytest.raises(RemoteProtocolError, match="65 bytes exceeds the limit of 64") as info:
        list(decoder.frames())
    assert info.value.code == ErrorCode.FRAME_SIZE_ERROR
    # Nothing of the announced payload was waited for or buffered.
    assert decoder.buffered == HEADER_SIZE


def test_huge_length_field_after_good_frames_yields_them_then_fails() -> None:
    decoder = FrameDecoder(max_payload=64)
    good = encode_frame(FrameType.PING, 0, 0, b"12345678")
    decoder.feed(good + HEADER.pack(0xFFFF_FFFF, FrameType.DATA, 0, 1) + b"abc")
    frames = decoder.frames()
    assert next(frames) == (FrameType.PING, 0, 0, b"12345678")
    with pytest.raises(RemoteProtocolError) as info:
        next(frames)
    assert info.value.code == ErrorCode.FRAME_SIZE_ERROR


def test_partial_header_waits_for_more() -> None:
    decoder = FrameDecoder(max_payload=64)
    decoder.feed(HEADER.pack(0xFFFF_FFFF, FrameType.DATA, 0, 1)[:9])
    assert list(decoder.frames()) == []
    assert decoder.buffered == 9


def test_raising_the_limit_between_frames_applies_to_the_next_frame() -> None:
    # A connection raises the limit once HELLO is handled, while the bytes that
    # followed HELLO in the same read are still being decoded.
    decoder = FrameDecoder(max_payload=16)
    decoder.feed(
        encode_frame(FrameType.HELLO, 0, 0, b"h") + encode_frame(FrameType.DATA, 0, 1, b"d" * 100)
    )
    frames = decoder.frames()
    assert next(frames) == (FrameType.HELLO, 0, 0, b"h")
    decoder.max_payload = 1000
    assert next(frames) == (2, 0, 1, b"d" * 100)


def test_consumed_bytes_are_released() -> None:
    decoder = FrameDecoder(max_payload=1 << 16)
    frame = encode_frame(FrameType.DATA, 0, 1, b"z" * 1000)
    for _ in range(300):
        decoder.feed(frame + frame[:5])
        assert len(list(decoder.frames())) == 1
        decoder.feed(frame[5:])
        assert len(list(decoder.frames())) == 1
        assert decoder.buffered == 0
    assert len(decoder._buffer) < 2 * len(frame)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(min_size=1, max_size=64), max_size=20))
def test_random_bytes_give_frames_or_frame_size_error_and_stay_bounded(
    chunks: list[bytes],
) -> None:
    limit = 32
    decoder = FrameDecoder(max_payload=limit)
    try:
        for chunk in chunks:
            decoder.feed(chunk)
            for ftype, flags, stream_id, payload in decoder.frames():
                assert 0 <= ftype <= 0xFF and 0 <= flags <= 0xFF
                assert 0 <= stream_id <= 0xFFFF_FFFF
                assert len(payload) <= limit
            assert decoder.buffered < HEADER_SIZE + limit
    except RemoteProtocolError as exc:
        assert exc.code == ErrorCode.FRAME_SIZE_ERROR
