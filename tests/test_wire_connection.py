"""The connection state machine, driven by bytes alone: two Connections talking (no I/O)."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanserv_trio._errors import LocalProtocolError, RemoteProtocolError
from chanserv_trio.wire._codec import (
    HEADER,
    HEADER_SIZE,
    MAX_HELLO_SIZE,
    PROTOCOL_VERSION,
    DataFlags,
    ErrorCode,
    Frame,
    FrameDecoder,
    FrameType,
    HelloField,
    PingFlags,
    ServiceFlags,
    Setting,
    Status,
    decode_goaway,
    decode_status,
    encode_frame,
    encode_goaway,
    encode_hello,
    encode_open,
    encode_status,
)
from chanserv_trio.wire._connection import Connection, Settings
from chanserv_trio.wire._events import (
    ConnectionTerminated,
    Event,
    GoAwayReceived,
    HandshakeCompleted,
    MessageReceived,
    PingAcknowledged,
    ServiceAdvertised,
    StreamEnded,
    StreamOpened,
    StreamReset,
    WindowOpened,
)

#: Small limits so that windows, chunking and thresholds are reached with little data.
SMALL = Settings(
    initial_stream_window=4096,
    connection_window=16384,
    max_frame_payload=1024,
    max_message_size=32768,
    max_open_payload=2048,
    max_concurrent_streams=8,
)


def wire(conn: Connection) -> bytes:
    """Everything the connection queued, as one bytes object."""
    return b"".join(bytes(part) for part in conn.take_outgoing())


def frames_in(data: bytes) -> list[Frame]:
    decoder = FrameDecoder(max_payload=2**32)
    decoder.feed(data)
    return [Frame(FrameType(t), f, s, p) for t, f, s, p in decoder.frames()]


def sent_frames(conn: Connection) -> list[Frame]:
    return frames_in(wire(conn))


def deliver(src: Connection, dst: Connection) -> list[Event]:
    data = wire(src)
    return dst.receive_data(data) if data else []


def raw(ftype: int, flags: int, stream_id: int, payload: bytes = b"") -> bytes:
    return encode_frame(ftype, flags, stream_id, payload)  # type: ignore[arg-type]


class ConnectionPair:
    """A dialing and an accepting Connection with the handshake done."""

    def __init__(
        self, client_settings: Settings | None = SMALL, server_settings: Settings | None = SMALL
    ) -> None:
        self.client = Connection(initiator=True, settings=client_settings)
        self.server = Connection(initiator=False, settings=server_settings)
        assert self.to_server() == [HandshakeCompleted(PROTOCOL_VERSION)]
        assert self.to_client() == [HandshakeCompleted(PROTOCOL_VERSION)]

    def to_server(self) -> list[Event]:
        return deliver(self.client, self.server)

    def to_client(self) -> list[Event]:
        return deliver(self.server, self.client)

    def peer_of(self, conn: Connection) -> Connection:
        return self.server if conn is self.client else self.client

    def flush(self, conn: Connection) -> list[Event]:
        """Deliver what ``conn`` queued to its peer; return the peer's events."""
        return deliver(conn, self.peer_of(conn))


def send_message(
    pair: ConnectionPair, sender: Connection, stream_id: int, data: bytes
) -> list[MessageReceived]:
    """Send one message in chunks as the window allows; the receiver consumes at once."""
    receiver = pair.peer_of(sender)
    received: list[MessageReceived] = []
    offset = 0
    for _ in range(10_000):
        window = sender.send_window(stream_id)
        n = min(window, len(data) - offset, receiver.local_settings.max_frame_payload)
        if n or offset == len(data):
            more = offset + n < len(data)
            sender.send_data(stream_id, data[offset : offset + n], more=more)
            offset += n
        else:
            more = True
        for event in pair.flush(sender):
            assert isinstance(event, MessageReceived | WindowOpened), event
            if isinstance(event, MessageReceived):
                received.append(event)
                receiver.acknowledge(event.stream_id, event.credit)
        pair.flush(receiver)
        if not more:
            return received
    raise AssertionError(f"sender stalled after {offset} of {len(data)} bytes")


def expect_protocol_error(
    conn: Connection, data: bytes, code: ErrorCode, match: str | None = None
) -> RemoteProtocolError:
    with pytest.raises(RemoteProtocolError, match=match) as info:
        conn.receive_data(data)
    assert info.value.code == code
    assert conn.closed
    # The violator is told why, in a GOAWAY carrying the same code.
    goaway = sent_frames(conn)[-1]
    assert goaway.type == FrameType.GOAWAY
    assert decode_goaway(goaway.payload)[1] == code
    # Nothing more is processed once the connection failed.
    assert conn.receive_data(raw(FrameType.PING, 0, 0, b"12345678")) == []
    assert sent_frames(conn) == []
    return info.value


# ------------------------------------------------------------------ handshake


def test_handshake_exchanges_settings() -> None:
    client = Connection(initiator=True, settings=SMALL)
    server = Connection(initiator=False)
    assert not client.handshake_done and not client.can_open_stream()
    with pytest.raises(LocalProtocolError, match="handshake not complete"):
        client.open_stream("svc", b"")
    hello = sent_frames(client)
    assert [f.type for f in hello] == [FrameType.HELLO]
    server.receive_data(encode_frame(FrameType.HELLO, 0, 0, hello[0].payload))
    assert server.handshake_done and server.version == PROTOCOL_VERSION
    assert server.peer_settings == SMALL
    assert client.receive_data(wire(server)) == [HandshakeCompleted(PROTOCOL_VERSION)]
    assert client.peer_settings == Settings()
    assert client.can_open_stream() and server.can_open_stream()


def test_hello_split_at_every_offset_completes_the_handshake() -> None:
    hello = wire(Connection(initiator=True, settings=SMALL))
    for cut in range(len(hello) + 1):
        server = Connection(initiator=False)
        events = server.receive_data(hello[:cut]) if cut else []
        events += server.receive_data(hello[cut:]) if cut < len(hello) else []
        assert events == [HandshakeCompleted(PROTOCOL_VERSION)]
        assert server.peer_settings == SMALL


def test_hello_then_large_frames_in_one_read_are_accepted() -> None:
    # The accepting side may answer HELLO and open a stream with a header larger
    # than the pre-handshake HELLO limit; a driver writes both in one send_all.
    client = Connection(initiator=True)
    server = Connection(initiator=False)
    server.receive_data(wire(client))
    header = b"h" * (MAX_HELLO_SIZE + 1000)
    stream_id = server.open_stream("svc", header)
    server.send_data(stream_id, b"d" * (MAX_HELLO_SIZE * 2))
    events = client.receive_data(wire(server))
    assert events[0] == HandshakeCompleted(PROTOCOL_VERSION)
    assert events[1] == StreamOpened(2, 0, "svc", header, True, True)
    assert events[2] == MessageReceived(2, b"d" * (MAX_HELLO_SIZE * 2), MAX_HELLO_SIZE * 2)


def test_newer_peer_version_negotiates_down() -> None:
    conn = Connection(initiator=True)
    assert conn.receive_data(raw(FrameType.HELLO, 0, 0, encode_hello({}, version=7))) == [
        HandshakeCompleted(PROTOCOL_VERSION)
    ]
    assert conn.version == PROTOCOL_VERSION
    assert conn.peer_settings == Settings()


def test_unknown_hello_settings_are_ignored() -> None:
    payload = encode_hello({Setting.MAX_CONCURRENT_STREAMS: 3, 99: 2**64 - 1})
    conn = Connection(initiator=True)
    conn.receive_data(raw(FrameType.HELLO, 0, 0, payload))
    assert conn.peer_settings == Settings(max_concurrent_streams=3)


@pytest.mark.parametrize(
    ("data", "code", "match"),
    [
        (raw(FrameType.PING, 0, 0, b"12345678"), ErrorCode.PROTOCOL_ERROR, "must be HELLO"),
        (raw(FrameType.DATA, 0, 1, b"x"), ErrorCode.PROTOCOL_ERROR, "must be HELLO"),
        (raw(99, 0, 0), ErrorCode.PROTOCOL_ERROR, "must be HELLO"),
        (raw(FrameType.HELLO, 0, 0, b"HTTP/1.1"), ErrorCode.PROTOCOL_ERROR, "speak"),
        (
            raw(FrameType.HELLO, 0, 0, encode_hello({}, version=0)),
            ErrorCode.VERSION_MISMATCH,
            "version 0",
        ),
        (
            raw(FrameType.HELLO, 0, 0, encode_hello({Setting.MAX_FRAME_PAYLOAD: 100})),
            ErrorCode.PROTOCOL_ERROR,
            "bad HELLO setting",
        ),
        (
            raw(FrameType.HELLO, 0, 0, encode_hello({Setting.CONNECTION_WINDOW: 0})),
            ErrorCode.PROTOCOL_ERROR,
            "bad HELLO setting",
        ),
        (
            raw(FrameType.HELLO, 0, 0, encode_hello({Setting.INITIAL_STREAM_WINDOW: 2**31})),
            ErrorCode.PROTOCOL_ERROR,
            "bad HELLO setting",
        ),
        (
            HEADER.pack(MAX_HELLO_SIZE + 1, FrameType.HELLO, 0, 0),
            ErrorCode.FRAME_SIZE_ERROR,
            "exceeds the limit",
        ),
    ],
)
def test_bad_handshakes_are_protocol_errors(data: bytes, code: ErrorCode, match: str) -> None:
    conn = Connection(initiator=False)
    wire(conn)
    expect_protocol_error(conn, data, code, match)


@pytest.mark.parametrize(
    ("ours", "theirs"),
    [(True, False), (True, None), (None, False), (None, None)],
)
def test_the_larger_role_nonce_takes_the_odd_stream_ids(
    ours: bool | None, theirs: bool | None
) -> None:
    a, b = Connection(initiator=ours), Connection(initiator=theirs)
    assert a.initiator is None and not a.can_open_stream()
    b.receive_data(wire(a))
    a.receive_data(wire(b))
    assert a.initiator == (a.nonce > b.nonce) and b.initiator == (not a.initiator)
    if ours is not None and theirs is not None:
        assert a.initiator is ours  # fixed roles: the one that dialed is the initiator
    odd, even = (a, b) if a.initiator else (b, a)
    assert odd.open_stream("svc", b"") == 1 and even.open_stream("svc", b"") == 2
    assert [e.stream_id for e in even.receive_data(wire(odd))] == [1]
    assert [e.stream_id for e in odd.receive_data(wire(even))] == [2]


def test_a_side_that_neither_dialed_nor_accepted_draws_a_random_nonce() -> None:
    nonces = {Connection().nonce for _ in range(50)}
    assert len(nonces) == 50
    assert all(0 < nonce < 2**64 - 1 for nonce in nonces)
    assert Connection(initiator=True).nonce == 2**64 - 1
    assert Connection(initiator=False).nonce == 0


@pytest.mark.parametrize("role", [True, False])
def test_equal_nonces_are_a_clear_handshake_error(role: bool) -> None:
    a, b = Connection(initiator=role), Connection(initiator=role)
    hello_a, hello_b = wire(a), wire(b)
    for conn, hello in ((a, hello_b), (b, hello_a)):
        error = expect_protocol_error(conn, hello, ErrorCode.PROTOCOL_ERROR, "same role")
        assert f"nonce {conn.nonce}" in str(error)
        assert not conn.handshake_done and conn.initiator is None


def test_hello_fields_of_known_ids_are_kept_and_others_ignored() -> None:
    conn = Connection(initiator=False)
    fields = {HelloField.CREDENTIAL: b"let me in", 999: b"from the future"}
    hello = encode_hello(Settings().to_wire(), nonce=5, fields=fields)
    assert conn.receive_data(raw(FrameType.HELLO, 0, 0, hello)) == [
        HandshakeCompleted(PROTOCOL_VERSION)
    ]
    assert conn.peer_fields == {HelloField.CREDENTIAL: b"let me in"}


def test_hello_twice_is_a_protocol_error() -> None:
    pair = ConnectionPair()
    expect_protocol_error(
        pair.server, raw(FrameType.HELLO, 0, 0, encode_hello({})), ErrorCode.PROTOCOL_ERROR
    )


# ------------------------------------------------------------------ opening streams


def test_streams_open_both_ways_with_parity_ids() -> None:
    pair = ConnectionPair()
    assert [pair.client.open_stream("a", b"") for _ in range(3)] == [1, 3, 5]
    assert [pair.server.open_stream("b", b"") for _ in range(3)] == [2, 4, 6]
    assert pair.to_server() == [StreamOpened(i, 0, "a", b"", True, True) for i in (1, 3, 5)]
    assert pair.to_client() == [StreamOpened(i, 0, "b", b"", True, True) for i in (2, 4, 6)]
    assert pair.client.stream_ids() == [1, 3, 5, 2, 4, 6]
    assert pair.server.open_stream_count == 6
    for conn in (pair.client, pair.server):
        assert all(conn.is_open(i) and conn.can_send(i) for i in range(1, 7))


def test_open_carries_service_and_header() -> None:
    pair = ConnectionPair()
    header = bytes(range(256)) * 8
    pair.client.open_stream("échos", header)
    assert pair.to_server() == [StreamOpened(1, 0, "échos", header, True, True)]


def test_open_carries_the_route_key_and_refuses_one_too_long() -> None:
    pair = ConnectionPair()
    pair.client.open_stream("svc", b"header", route_key=b"\x00bucket\xff")
    assert pair.to_server() == [
        StreamOpened(1, 0, "svc", b"header", True, True, route_key=b"\x00bucket\xff")
    ]
    with pytest.raises(LocalProtocolError, match="route key"):
        pair.client.open_stream("svc", b"", route_key=b"k" * 0x10000)
    assert pair.client.outgoing_size == 0


def test_child_streams_name_their_parent_both_ways() -> None:
    pair = ConnectionPair()
    master = pair.client.open_stream("svc", b"request")
    pair.to_server()
    child = pair.server.open_stream("", b"source 0", parent=master, remote_open=False)
    assert child == 2
    assert pair.to_client() == [StreamOpened(2, master, "", b"source 0", True, False)]
    assert not pair.client.can_send(child)
    grandchild = pair.client.open_stream("", b"", parent=child)
    assert grandchild == 3
    assert pair.to_server() == [StreamOpened(3, child, "", b"", True, True)]


def test_open_flags_close_halves_from_the_start() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"", local_open=False)
    assert not pair.client.can_send(sid) and pair.client.send_window(sid) == 0
    assert pair.to_server() == [StreamOpened(sid, 0, "svc", b"", False, True)]
    with pytest.raises(LocalProtocolError, match="not open for sending"):
        pair.client.send_data(sid, b"x")
    # A stream closed both ways from the start is forgotten at once.
    both = pair.client.open_stream("svc", b"", local_open=False, remote_open=False)
    assert not pair.client.is_open(both)
    assert pair.to_server() == [StreamOpened(both, 0, "svc", b"", False, False)]
    assert not pair.server.is_open(both)


def test_local_open_misuse_is_refused_without_side_effects() -> None:
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError, match="parent stream 7 is not open"):
        pair.client.open_stream("", b"", parent=7)
    with pytest.raises(LocalProtocolError, match="exceeds the peer's limit"):
        pair.client.open_stream("svc", b"h" * (SMALL.max_open_payload + 1))
    assert pair.client.open_stream_count == 0
    assert pair.client.open_stream("svc", b"") == 1


@pytest.mark.parametrize(
    ("data", "code", "match"),
    [
        (raw(FrameType.OPEN, 0, 0, encode_open(0, "s", b"")), ErrorCode.PROTOCOL_ERROR, "bad id"),
        (raw(FrameType.OPEN, 0, 2, encode_open(0, "s", b"")), ErrorCode.PROTOCOL_ERROR, "bad id"),
        (
            raw(FrameType.OPEN, 0, 3, encode_open(0, "s", b""))
            + raw(FrameType.OPEN, 0, 1, encode_open(0, "s", b"")),
            ErrorCode.PROTOCOL_ERROR,
            "reuses id 1",
        ),
        (raw(FrameType.OPEN, 0, 1, b"\x00"), ErrorCode.PROTOCOL_ERROR, "too short"),
        (
            raw(FrameType.OPEN, 0, 1, encode_open(5, "", b"")),
            ErrorCode.PROTOCOL_ERROR,
            "unknown parent 5",
        ),
        (
            raw(FrameType.OPEN, 0, 1, encode_open(2, "", b"")),
            ErrorCode.PROTOCOL_ERROR,
            "unknown parent 2",
        ),
        (
            raw(FrameType.OPEN, 0, 1, encode_open(0, "s", b"h" * (SMALL.max_open_payload + 1))),
            ErrorCode.FRAME_SIZE_ERROR,
            "OPEN header exceeds",
        ),
    ],
)
def test_bad_open_frames_are_protocol_errors(data: bytes, code: ErrorCode, match: str) -> None:
    pair = ConnectionPair()
    expect_protocol_error(pair.server, data, code, match)


def test_child_whose_parent_closed_in_flight_is_refused_quietly() -> None:
    pair = ConnectionPair()
    master = pair.client.open_stream("svc", b"")
    pair.to_server()
    pair.server.reset_stream(master, Status(ErrorCode.CANCEL))
    # The client opens a child before it learns that the parent is gone.
    child = pair.client.open_stream("", b"", parent=master)
    assert pair.to_server() == []
    assert not pair.server.is_open(child)
    assert pair.to_client() == [
        StreamReset(master, Status(ErrorCode.CANCEL)),
        StreamReset(child, Status(ErrorCode.CANCEL, "", "parent stream closed")),
    ]
    assert pair.client.open_stream_count == 0 and pair.server.open_stream_count == 0


# ------------------------------------------------------------------ messages


def test_small_message_arrives_with_its_credit() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.client.send_data(sid, b"hello")
    pair.client.send_data(sid, b"")
    assert pair.to_server()[1:] == [
        MessageReceived(sid, b"hello", 5),
        MessageReceived(sid, b"", 0),
    ]
    assert pair.client.messages_sent == 2 and pair.server.messages_received == 2
    assert pair.client.send_window(sid) == SMALL.initial_stream_window - 5


def test_message_larger_than_max_frame_payload_is_chunked_and_reassembled() -> None:
    pair = ConnectionPair()
    sid = pair.server.open_stream("svc", b"")
    pair.to_client()
    message = bytes(i % 251 for i in range(3000))
    with pytest.raises(LocalProtocolError, match="max_frame_payload"):
        pair.server.send_data(sid, message)
    pair.server.send_data(sid, message[:1024], more=True)
    pair.server.send_data(sid, message[1024:2048], more=True)
    frames = frames_in(b"".join(bytes(p) for p in pair.server._outgoing))
    assert [(f.type, f.flags, len(f.payload)) for f in frames] == [
        (FrameType.DATA, DataFlags.MORE, 1024),
        (FrameType.DATA, DataFlags.MORE, 1024),
    ]
    assert pair.to_client() == []
    assert pair.client.buffered_bytes() == 2048
    pair.server.send_data(sid, message[2048:])
    events = pair.to_client()
    assert len(events) == 1
    assert events[0].data == message  # type: ignore[union-attr]
    assert pair.client.messages_received == 1 and pair.server.messages_sent == 1


def test_message_many_times_the_window_gets_through() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.to_server()
    message = bytes(i % 253 for i in range(6 * SMALL.initial_stream_window + 17))
    received = send_message(pair, pair.client, sid, message)
    assert [m.data for m in received] == [message]
    assert pair.server.buffered_bytes() == 0


def test_many_messages_in_order_with_acknowledgements() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.to_server()
    sent = [bytes([i]) * (i * 37 % 2500) for i in range(60)]
    received = [m.data for data in sent for m in send_message(pair, pair.client, sid, data)]
    assert received == sent
    assert pair.client.send_window(sid) >= SMALL.initial_stream_window * 3 // 4


# ------------------------------------------------------------------ flow control


def test_sender_blocks_at_the_window_until_credit_returns() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.to_server()
    for _ in range(4):
        pair.client.send_data(sid, b"x" * 1024)
    assert pair.client.send_window(sid) == 0
    with pytest.raises(LocalProtocolError, match="flow-control window"):
        pair.client.send_data(sid, b"x")
    pair.client.send_data(sid, b"")  # an empty message needs no credit
    events = pair.to_server()
    assert [e.credit for e in events if isinstance(e, MessageReceived)] == [1024] * 4 + [0]
    assert pair.server.buffered_bytes() == 4096
    # Credit below a quarter of the window is held back ...
    pair.server.acknowledge(sid, 1000)
    assert [f for f in sent_frames(pair.server) if f.stream_id == sid] == []
    assert pair.server.buffered_bytes() == 3096
    # ... and returned in one WINDOW frame once it reaches it.
    pair.server.acknowledge(sid, 24)
    window_frames = [f for f in sent_frames(pair.server) if f.stream_id == sid]
    assert window_frames == [Frame(FrameType.WINDOW, 0, sid, (1024).to_bytes(4, "big"))]
    pair.client.receive_data(encode_frame(*_astuple(window_frames[0])))
    assert pair.client.send_window(sid) == 1024
    pair.server.acknowledge(sid, 3072)
    assert pair.to_client() == [WindowOpened(sid)]
    assert pair.client.send_window(sid) == 4096
    assert pair.server.buffered_bytes() == 0


def _astuple(frame: Frame) -> tuple[FrameType, int, int, bytes]:
    return frame.type, frame.flags, frame.stream_id, frame.payload


def test_acknowledge_ignores_nonsense() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.to_server()
    pair.server.acknowledge(sid, 0)
    pair.server.acknowledge(sid, -5)
    pair.server.acknowledge(99, 5000)
    assert sent_frames(pair.server) == []


def test_connection_window_is_returned_as_bytes_reach_streams() -> None:
    pair = ConnectionPair()
    sids = [pair.client.open_stream("svc", b"") for _ in range(5)]
    pair.to_server()
    # Nobody reads these streams, yet the connection window comes back.
    for sid in sids[:4]:
        for _ in range(4):
            pair.client.send_data(sid, b"y" * 1024)
    assert pair.client.connection_send_window() == 0
    assert pair.client.send_window(sids[4]) == 0
    pair.to_server()
    connection_windows = [f for f in sent_frames(pair.server) if f.stream_id == 0]
    assert connection_windows == [Frame(FrameType.WINDOW, 0, 0, (16384).to_bytes(4, "big"))]
    pair.client.receive_data(encode_frame(*_astuple(connection_windows[0])))
    assert pair.client.connection_send_window() == 16384
    assert pair.client.send_window(sids[4]) == 4096
    assert pair.client.send_window(sids[0]) == 0
    assert pair.server.buffered_bytes() == 16384


def test_window_events_from_the_peer() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.to_server()
    events = pair.client.receive_data(
        raw(FrameType.WINDOW, 0, 0, (100).to_bytes(4, "big"))
        + raw(FrameType.WINDOW, 0, sid, (200).to_bytes(4, "big"))
    )
    assert events == [WindowOpened(0), WindowOpened(sid)]
    assert pair.client.connection_send_window() == SMALL.connection_window + 100
    assert pair.client.send_window(sid) == SMALL.initial_stream_window + 200


@pytest.mark.parametrize(
    ("data", "code", "match"),
    [
        (
            raw(FrameType.DATA, 0, 1, b"x" * (SMALL.max_frame_payload + 1)),
            ErrorCode.FRAME_SIZE_ERROR,
            "max_frame_payload",
        ),
        (
            raw(FrameType.DATA, 0, 1, b"x" * 1024) * 4 + raw(FrameType.DATA, 0, 1, b"x"),
            ErrorCode.FLOW_CONTROL_ERROR,
            "window of stream 1",
        ),
        (
            raw(FrameType.DATA, 0, 1, b"x" * 1024) * 3
            + raw(FrameType.DATA, 0, 1, b"x" * 1000)
            + raw(FrameType.DATA, DataFlags.MORE, 1, b"x" * 100),
            ErrorCode.FLOW_CONTROL_ERROR,
            "window of stream 1",
        ),
        (
            raw(FrameType.WINDOW, 0, 0, (2**31 - SMALL.connection_window).to_bytes(4, "big")),
            ErrorCode.FLOW_CONTROL_ERROR,
            "connection window overflow",
        ),
        (
            raw(FrameType.WINDOW, 0, 1, (2**31 - SMALL.initial_stream_window).to_bytes(4, "big")),
            ErrorCode.FLOW_CONTROL_ERROR,
            "stream window overflow",
        ),
        (raw(FrameType.WINDOW, 0, 1, bytes(4)), ErrorCode.PROTOCOL_ERROR, "increment of 0"),
        (raw(FrameType.WINDOW, 0, 1, bytes(3)), ErrorCode.PROTOCOL_ERROR, "4 bytes"),
    ],
)
def test_flow_control_violations(data: bytes, code: ErrorCode, match: str) -> None:
    pair = ConnectionPair()
    pair.client.open_stream("svc", b"")
    pair.server.open_stream("svc", b"")
    pair.to_server()
    pair.to_client()
    expect_protocol_error(pair.server, data, code, match)


def test_data_beyond_the_connection_window_is_a_flow_control_error() -> None:
    pair = ConnectionPair(server_settings=Settings(connection_window=8192, max_frame_payload=1024))
    a = pair.client.open_stream("svc", b"")
    b = pair.client.open_stream("svc", b"")
    pair.to_server()
    burst = (raw(FrameType.DATA, 0, a, b"x" * 1024) + raw(FrameType.DATA, 0, b, b"x" * 1024)) * 4
    expect_protocol_error(
        pair.server,
        burst + raw(FrameType.DATA, 0, a, b"x"),
        ErrorCode.FLOW_CONTROL_ERROR,
        "connection window",
    )


def test_message_beyond_max_message_size_is_a_frame_size_error() -> None:
    pair = ConnectionPair(
        client_settings=Settings(max_frame_payload=1024, max_message_size=3000),
    )
    sid = pair.server.open_stream("svc", b"")
    pair.to_client()
    for _ in range(2):
        pair.server.send_data(sid, b"x" * 1024, more=True)
    pair.to_client()
    # Even the last chunk counts.
    pair.server.send_data(sid, b"x" * 1000)
    with pytest.raises(RemoteProtocolError, match="max_message_size") as info:
        pair.to_client()
    assert info.value.code == ErrorCode.FRAME_SIZE_ERROR


def test_message_beyond_max_message_size_in_a_more_chunk_is_refused() -> None:
    pair = ConnectionPair(client_settings=Settings(max_frame_payload=1024, max_message_size=1500))
    pair.server.open_stream("svc", b"")
    pair.to_client()
    data = raw(FrameType.DATA, DataFlags.MORE, 2, b"x" * 1024) * 2
    expect_protocol_error(pair.client, data, ErrorCode.FRAME_SIZE_ERROR, "max_message_size")


def test_single_frame_message_beyond_max_message_size_is_refused() -> None:
    pair = ConnectionPair(client_settings=Settings(max_frame_payload=1024, max_message_size=100))
    pair.server.open_stream("svc", b"")
    pair.to_client()
    data = raw(FrameType.DATA, 0, 2, b"x" * 101)
    expect_protocol_error(pair.client, data, ErrorCode.FRAME_SIZE_ERROR, "max_message_size")


# ------------------------------------------------------------------ ending and resetting


def test_end_with_ok_and_with_an_error_status() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.to_server()
    pair.client.end_stream(sid)
    assert frames_in(b"".join(bytes(p) for p in pair.client._outgoing))[-1].payload == b""
    assert pair.to_server() == [StreamEnded(sid, Status(ErrorCode.OK))]
    assert not pair.client.can_send(sid) and pair.client.is_open(sid)
    with pytest.raises(LocalProtocolError):
        pair.client.end_stream(sid)
    pair.server.send_data(sid, b"last")
    failure = Status(ErrorCode.APPLICATION_ERROR, "ValueError", "bad request")
    pair.server.end_stream(sid, failure)
    assert pair.to_client() == [MessageReceived(sid, b"last", 4), StreamEnded(sid, failure)]
    assert pair.client.open_stream_count == 0 and pair.server.open_stream_count == 0
    assert not pair.client.is_open(sid) and not pair.server.is_open(sid)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (raw(FrameType.END, 0, 1) * 2, "END twice"),
        (raw(FrameType.END, 0, 1) + raw(FrameType.DATA, 0, 1, b"x"), "after its end"),
        (
            raw(FrameType.DATA, DataFlags.MORE, 1, b"x") + raw(FrameType.END, 0, 1),
            "inside a message",
        ),
        (
            raw(FrameType.DATA, DataFlags.MORE, 1, b"") + raw(FrameType.END, 0, 1),
            "inside a message",
        ),
        (raw(FrameType.END, 0, 1, b"\x00\x00"), "status too short"),
        (raw(FrameType.RESET, 0, 1, b"\x00\x00\x00\x08\x00\x07ab"), "overruns"),
    ],
)
def test_out_of_order_end_is_a_protocol_error(data: bytes, match: str) -> None:
    pair = ConnectionPair()
    pair.client.open_stream("svc", b"")
    pair.to_server()
    expect_protocol_error(pair.server, data, ErrorCode.PROTOCOL_ERROR, match)


def test_reset_aborts_both_ways_and_late_frames_are_ignored() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.to_server()
    pair.client.send_data(sid, b"in flight")
    pair.server.send_data(sid, b"also in flight")
    status = Status(ErrorCode.CANCEL, "", "caller left")
    assert pair.server.reset_stream(sid, status)
    assert not pair.server.is_open(sid)
    assert not pair.server.reset_stream(sid, status)
    assert sent_frames(pair.server)[-1] == Frame(FrameType.RESET, 0, sid, encode_status(status))
    # Frames the client sent before it heard of the reset are dropped quietly.
    received = pair.server.bytes_received
    pair.client.end_stream(sid)
    assert pair.to_server() == []
    assert pair.server.bytes_received > received
    late = raw(FrameType.WINDOW, 0, sid, (5).to_bytes(4, "big")) + raw(
        FrameType.RESET, 0, sid, encode_status(status)
    )
    assert pair.server.receive_data(late) == []
    assert pair.server.buffered_bytes() == 0
    # The client learns of it; then its late frames are dropped as well.
    pair.server.reset_stream(sid, status)
    pair.client.receive_data(raw(FrameType.RESET, 0, sid, encode_status(status)))
    assert not pair.client.is_open(sid)
    assert pair.client.receive_data(raw(FrameType.DATA, 0, sid, b"x")) == []
    assert pair.client.open_stream_count == 0 and pair.server.open_stream_count == 0


def test_reset_event_carries_the_status() -> None:
    pair = ConnectionPair()
    sid = pair.server.open_stream("svc", b"")
    pair.to_client()
    status = Status(ErrorCode.TIMEOUT, "", "frame_write_timeout")
    pair.client.reset_stream(sid, status)
    assert pair.to_server() == [StreamReset(sid, status)]
    assert pair.server.open_stream_count == 0


@pytest.mark.parametrize("ftype", [FrameType.DATA, FrameType.END, FrameType.RESET])
@pytest.mark.parametrize("stream_id", [0, 9, 10])
def test_frames_on_never_opened_streams_are_protocol_errors(
    ftype: FrameType, stream_id: int
) -> None:
    pair = ConnectionPair()
    pair.client.open_stream("svc", b"")
    pair.server.open_stream("svc", b"")
    pair.to_server()
    pair.to_client()
    match = "stream 0" if stream_id == 0 else "never opened"
    expect_protocol_error(
        pair.server, raw(ftype, 0, stream_id, b""), ErrorCode.PROTOCOL_ERROR, match
    )


@pytest.mark.parametrize("stream_id", [9, 10])
def test_window_on_never_opened_stream_is_a_protocol_error(stream_id: int) -> None:
    pair = ConnectionPair()
    data = raw(FrameType.WINDOW, 0, stream_id, (1).to_bytes(4, "big"))
    expect_protocol_error(pair.server, data, ErrorCode.PROTOCOL_ERROR, "never opened")


def test_unknown_frame_type_is_a_protocol_error() -> None:
    pair = ConnectionPair()
    expect_protocol_error(pair.client, raw(42, 0, 0), ErrorCode.PROTOCOL_ERROR, "type 42")


# ------------------------------------------------------------------ ping and service


def test_ping_is_answered_with_ack() -> None:
    pair = ConnectionPair()
    pair.client.ping(b"\x00\x01\x02\x03\x04\x05\x06\x07")
    assert pair.to_server() == []
    assert pair.to_client() == [PingAcknowledged(b"\x00\x01\x02\x03\x04\x05\x06\x07")]
    with pytest.raises(LocalProtocolError, match="8 bytes"):
        pair.client.ping(b"short")


@pytest.mark.parametrize(
    "data",
    [raw(FrameType.PING, 0, 0, b"1234567"), raw(FrameType.PING, 0, 1, b"12345678")],
)
def test_malformed_ping_is_a_protocol_error(data: bytes) -> None:
    pair = ConnectionPair()
    expect_protocol_error(pair.server, data, ErrorCode.PROTOCOL_ERROR, "malformed PING")


def test_services_are_advertised_and_withdrawn() -> None:
    pair = ConnectionPair()
    pair.server.advertise("chanserv")
    pair.server.advertise("échos")
    pair.server.advertise("chanserv", available=False)
    assert pair.to_client() == [
        ServiceAdvertised("chanserv", True),
        ServiceAdvertised("échos", True),
        ServiceAdvertised("chanserv", False),
    ]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (raw(FrameType.SERVICE, 0, 1, b"svc"), "SERVICE on a stream"),
        (raw(FrameType.SERVICE, 0, 0, b"\xff"), "not UTF-8"),
    ],
)
def test_malformed_service_is_a_protocol_error(data: bytes, match: str) -> None:
    pair = ConnectionPair()
    expect_protocol_error(pair.client, data, ErrorCode.PROTOCOL_ERROR, match)


# ------------------------------------------------------------------ going away


def test_graceful_goaway_refuses_only_streams_above_the_last_id() -> None:
    pair = ConnectionPair()
    kept = pair.client.open_stream("svc", b"")
    pair.to_server()
    pair.server.go_away(ErrorCode.OK, "draining")
    assert pair.server.local_goaway and not pair.server.closed
    # Opened by the client while the GOAWAY was in flight.
    late = pair.client.open_stream("svc", b"")
    assert pair.to_server() == []  # refused: the server is going away
    assert not pair.server.is_open(late)
    events = pair.to_client()
    assert events == [
        GoAwayReceived(kept, ErrorCode.OK, "draining"),
        StreamReset(late, Status(ErrorCode.REFUSED_STREAM, "", "peer is going away")),
    ]
    assert pair.client.peer_goaway == (kept, ErrorCode.OK)
    assert not pair.client.can_open_stream()
    with pytest.raises(LocalProtocolError, match="GOAWAY"):
        pair.client.open_stream("svc", b"")
    # The stream below the last id carries on to a normal end.
    pair.client.send_data(kept, b"still here")
    pair.client.end_stream(kept)
    assert pair.to_server() == [
        MessageReceived(kept, b"still here", 10),
        StreamEnded(kept, Status(ErrorCode.OK)),
    ]
    pair.server.end_stream(kept)
    assert pair.to_client() == [StreamEnded(kept, Status(ErrorCode.OK))]
    assert pair.client.open_stream_count == 0 and pair.server.open_stream_count == 0


def test_goaway_refusal_crossing_the_reset_is_ignored() -> None:
    pair = ConnectionPair()
    pair.server.go_away()
    late = pair.client.open_stream("svc", b"")
    pair.to_server()
    # The server's RESET of the refused stream arrives after the GOAWAY already
    # made the client forget it: no event, no error.
    assert pair.to_client() == [
        GoAwayReceived(0, ErrorCode.OK, ""),
        StreamReset(late, Status(ErrorCode.REFUSED_STREAM, "", "peer is going away")),
    ]
    assert pair.client.open_stream_count == 0


def test_goaway_with_an_error_terminates() -> None:
    pair = ConnectionPair()
    pair.client.open_stream("svc", b"")
    pair.to_server()
    pair.server.go_away(ErrorCode.SHUTDOWN, "server stopping")
    assert pair.server.closed
    with pytest.raises(LocalProtocolError, match="closed"):
        pair.server.open_stream("svc", b"")
    pair.server.go_away(ErrorCode.INTERNAL_ERROR, "ignored: already closed")
    pair.server.ping(b"12345678")
    pair.server.advertise("x")
    assert pair.to_client() == [ConnectionTerminated(ErrorCode.SHUTDOWN, "server stopping")]
    assert pair.client.closed and not pair.client.can_open_stream()
    assert pair.client.receive_data(raw(FrameType.PING, 0, 0, b"12345678")) == []


def test_goaway_with_unknown_code_and_no_message() -> None:
    conn = ConnectionPair().client
    events = conn.receive_data(raw(FrameType.GOAWAY, 0, 0, encode_goaway(0, 4242, "")))
    assert events == [ConnectionTerminated(4242, "4242")]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (raw(FrameType.GOAWAY, 0, 1, encode_goaway(0, 0, "")), "GOAWAY on a stream"),
        (raw(FrameType.GOAWAY, 0, 0, b"\x00" * 7), "GOAWAY frame too short"),
    ],
)
def test_malformed_goaway_is_a_protocol_error(data: bytes, match: str) -> None:
    pair = ConnectionPair()
    expect_protocol_error(pair.client, data, ErrorCode.PROTOCOL_ERROR, match)


def test_end_of_byte_stream_terminates() -> None:
    pair = ConnectionPair()
    assert pair.client.receive_data(b"") == [
        ConnectionTerminated(ErrorCode.CONNECTION_LOST, "peer closed the connection")
    ]
    assert pair.client.closed
    assert pair.client.receive_data(b"") == []


# ------------------------------------------------------------------ concurrency limit


def test_concurrency_limit_is_respected_and_enforced() -> None:
    pair = ConnectionPair(server_settings=Settings(max_concurrent_streams=2))
    first = pair.client.open_stream("svc", b"")
    pair.client.open_stream("svc", b"")
    assert not pair.client.can_open_stream()
    with pytest.raises(LocalProtocolError, match="limit"):
        pair.client.open_stream("svc", b"")
    assert len(pair.to_server()) == 2
    # Closing a stream frees a slot.
    pair.client.reset_stream(first, Status(ErrorCode.CANCEL))
    assert pair.client.can_open_stream()
    assert pair.client.open_stream("svc", b"") == 5
    assert pair.to_server() == [
        StreamReset(first, Status(ErrorCode.CANCEL)),
        StreamOpened(5, 0, "svc", b"", True, True),
    ]


def test_refused_stream_reaches_the_opener_as_a_reset() -> None:
    pair = ConnectionPair(server_settings=Settings(max_concurrent_streams=1))
    pair.client.open_stream("svc", b"")
    pair.to_server()
    # Pretend the client saw a larger limit (a stale or lying HELLO).
    pair.client.peer_settings = Settings(max_concurrent_streams=5)
    extra = pair.client.open_stream("svc", b"")
    assert pair.to_server() == []
    refusal = frames_in(b"".join(bytes(p) for p in pair.server._outgoing))
    assert [(f.type, f.stream_id) for f in refusal] == [(FrameType.RESET, extra)]
    assert decode_status(refusal[0].payload).code == ErrorCode.REFUSED_STREAM
    assert pair.to_client() == [
        StreamReset(extra, Status(ErrorCode.REFUSED_STREAM, "", "too many concurrent streams"))
    ]
    assert pair.client.open_stream_count == 1


# ------------------------------------------------------------------ accounting


def test_buffered_bytes_counts_unconsumed_messages_and_partial_chunks() -> None:
    pair = ConnectionPair()
    a = pair.client.open_stream("svc", b"")
    b = pair.client.open_stream("svc", b"")
    pair.to_server()
    assert pair.server.buffered_bytes() == 0
    pair.client.send_data(a, b"x" * 300)
    pair.client.send_data(b, b"y" * 200, more=True)
    pair.to_server()
    assert pair.server.buffered_bytes() == 500
    pair.server.acknowledge(a, 300)
    assert pair.server.buffered_bytes() == 200
    pair.client.send_data(b, b"y" * 50)
    (message,) = pair.to_server()
    # The whole message is held by the application until it acknowledges it.
    assert message == MessageReceived(b, b"y" * 250, 250)
    assert pair.server.buffered_bytes() == 250
    pair.server.acknowledge(b, message.credit)
    assert pair.server.buffered_bytes() == 0
    pair.client.send_data(a, b"z" * 10)
    pair.to_server()
    pair.server.reset_stream(a, Status(ErrorCode.CANCEL))
    assert pair.server.buffered_bytes() == 0


def test_buffered_bytes_drop_to_zero_after_the_peer_ended() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.to_server()
    pair.client.send_data(sid, b"x" * 100)
    pair.client.end_stream(sid)
    events = pair.to_server()
    assert events[-1] == StreamEnded(sid, Status(ErrorCode.OK))
    # The server still sends on this stream, and its application consumes the message.
    assert pair.server.can_send(sid)
    assert pair.server.buffered_bytes() == 100
    pair.server.acknowledge(sid, 100)
    assert pair.server.buffered_bytes() == 0
    assert sent_frames(pair.server) == []  # no WINDOW: the peer sends no more


def test_byte_and_message_counters() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.client.send_data(sid, b"abc")
    size = pair.client.outgoing_size
    assert size == sum(len(p) for p in pair.client._outgoing)
    before = pair.client.bytes_sent
    pair.to_server()
    assert pair.client.outgoing_size == 0
    assert pair.client.bytes_sent == before + size
    assert pair.server.bytes_received == pair.client.bytes_sent


def test_empty_chunks_do_not_accumulate() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.to_server()
    batch = raw(FrameType.DATA, DataFlags.MORE, sid, b"") * 2000
    tracemalloc.start()
    try:
        pair.server.receive_data(batch)
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(20):
            pair.server.receive_data(batch)
        grown = tracemalloc.get_traced_memory()[0] - baseline
    finally:
        tracemalloc.stop()
    assert grown < 64 * 1024, f"{grown} bytes kept for 40,000 empty chunks"
    pair.client.send_data(sid, b"end")
    assert pair.to_server() == [MessageReceived(sid, b"end", 3)]


# ------------------------------------------------------------------ hypothesis

HYPOTHESIS = settings(max_examples=150, deadline=None)

#: Ids that a peer (the client, opening odd ids) might use: ours, its own, unused ones.
stream_ids = st.sampled_from([0, 1, 2, 3, 4, 5, 7, 8, 2**32 - 1])
statuses = st.builds(Status, st.integers(0, 2**32 - 1), st.text(max_size=5), st.text(max_size=10))


def _status_payload(status: Status) -> bytes:
    return b"" if status == Status(ErrorCode.OK) else encode_status(status)


well_formed_frames: st.SearchStrategy[bytes] = st.one_of(
    st.builds(
        lambda sid, flags, parent, service, header: raw(
            FrameType.OPEN, flags, sid, encode_open(parent, service, header)
        ),
        stream_ids,
        st.sampled_from([0, 1, 2, 3]),
        stream_ids,
        st.text(max_size=5),
        st.binary(max_size=20),
    ),
    st.builds(
        lambda sid, more, data: raw(FrameType.DATA, DataFlags.MORE if more else 0, sid, data),
        stream_ids,
        st.booleans(),
        st.sampled_from([b"", b"m", b"x" * 700, b"y" * 1024]),
    ),
    st.builds(
        lambda sid, status: raw(FrameType.END, 0, sid, _status_payload(status)),
        stream_ids,
        statuses,
    ),
    st.builds(
        lambda sid, status: raw(FrameType.RESET, 0, sid, encode_status(status)),
        stream_ids,
        statuses,
    ),
    st.builds(
        lambda sid, inc: raw(FrameType.WINDOW, 0, sid, inc.to_bytes(4, "big")),
        stream_ids,
        st.sampled_from([1, 1024, 2**31 - 1]),
    ),
    st.builds(
        lambda ack: raw(FrameType.PING, PingFlags.ACK if ack else 0, 0, b"p" * 8), st.booleans()
    ),
    st.builds(
        lambda last, code, msg: raw(FrameType.GOAWAY, 0, 0, encode_goaway(last, code, msg)),
        stream_ids,
        st.sampled_from([ErrorCode.OK, ErrorCode.SHUTDOWN]),
        st.text(max_size=5),
    ),
    st.builds(
        lambda name, remove: raw(FrameType.SERVICE, ServiceFlags.REMOVE if remove else 0, 0, name),
        st.text(max_size=5).map(str.encode),
        st.booleans(),
    ),
    st.just(raw(FrameType.HELLO, 0, 0, encode_hello(SMALL.to_wire()))),
)


def _check_bounds(conn: Connection) -> None:
    decoder = conn._decoder
    assert decoder.buffered < HEADER_SIZE + decoder.max_payload
    limit = SMALL.initial_stream_window + SMALL.max_message_size
    assert 0 <= conn.buffered_bytes() <= conn.open_stream_count * limit
    assert conn.open_stream_count <= 2 * SMALL.max_concurrent_streams


def _feed_until_error(
    conn: Connection, chunks: list[bytes], on_events: Callable[[list[Event]], None]
) -> RemoteProtocolError | None:
    for chunk in chunks:
        try:
            on_events(conn.receive_data(chunk))
        except RemoteProtocolError as exc:
            assert conn.closed
            goaway = sent_frames(conn)[-1]
            assert goaway.type == FrameType.GOAWAY
            assert decode_goaway(goaway.payload)[1] == exc.code
            assert isinstance(exc.code, ErrorCode)
            return exc
        _check_bounds(conn)
        if conn.closed:
            break
    return None


@HYPOTHESIS
@given(st.lists(st.binary(min_size=1, max_size=200), max_size=20))
def test_random_bytes_after_hello_give_events_or_protocol_error(chunks: list[bytes]) -> None:
    pair = ConnectionPair()
    pair.server.open_stream("svc", b"")
    wire(pair.server)

    def check(events: list[Event]) -> None:
        assert all(isinstance(e, Event) for e in events)

    _feed_until_error(pair.server, chunks, check)


@HYPOTHESIS
@given(st.lists(well_formed_frames, max_size=30), st.data())
def test_well_formed_frames_in_any_order_give_events_or_protocol_error(
    frames: list[bytes], data: st.DataObject
) -> None:
    pair = ConnectionPair()
    pair.server.open_stream("svc", b"")
    pair.server.open_stream("svc", b"", parent=0)
    wire(pair.server)
    stream = b"".join(frames)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=5)))
    chunks = [stream[a:b] for a, b in zip([0, *cuts], [*cuts, len(stream)], strict=True)]
    chunks = [c for c in chunks if c]

    def check(events: list[Event]) -> None:
        for event in events:
            if isinstance(event, StreamOpened):
                assert event.stream_id % 2 == 1
            elif isinstance(event, MessageReceived):
                pair.server.acknowledge(event.stream_id, event.credit)

    _feed_until_error(pair.server, chunks, check)


@HYPOTHESIS
@given(st.lists(well_formed_frames, min_size=1, max_size=20))
def test_frame_sequences_decide_the_same_whether_fed_whole_or_byte_by_byte(
    frames: list[bytes],
) -> None:
    stream = b"".join(frames)
    outcomes = []
    for chunks in ([stream], [stream[i : i + 1] for i in range(len(stream))]):
        pair = ConnectionPair()
        pair.server.open_stream("svc", b"")
        wire(pair.server)
        events: list[Event] = []
        error = _feed_until_error(pair.server, chunks, events.extend)
        outcomes.append((events, error and (error.code, error.message)))
    (whole, whole_error), (split, split_error) = outcomes
    assert whole_error == split_error
    # receive_data raises instead of returning the events decoded before the error.
    assert whole == (split[: len(whole)] if whole_error else split)


# A legitimate peer never trips a protocol error, whatever it does in whatever order.
actions = st.lists(
    st.tuples(
        st.sampled_from(["open", "child", "send", "end", "reset", "ack", "ping", "deliver"]),
        st.booleans(),  # which side acts
        st.integers(0, 7),  # which stream
        st.integers(0, 9000),  # message size
    ),
    max_size=40,
)


@HYPOTHESIS
@given(actions)
def test_legitimate_peers_never_trip_protocol_errors(
    steps: list[tuple[str, bool, int, int]],
) -> None:
    pair = ConnectionPair()
    sent: dict[tuple[bool, int], list[bytes]] = {}
    got: dict[tuple[bool, int], list[bytes]] = {}
    unacked: dict[bool, list[tuple[int, int]]] = {True: [], False: []}
    pending_sends: dict[bool, list[tuple[int, bytes, int]]] = {True: [], False: []}

    def conn_of(is_client: bool) -> Connection:
        return pair.client if is_client else pair.server

    def pump_sends(is_client: bool) -> None:
        conn = conn_of(is_client)
        limit = pair.peer_of(conn).local_settings.max_frame_payload
        queue = pending_sends[is_client]
        while queue:
            sid, data, offset = queue[0]
            if not conn.can_send(sid):
                queue.pop(0)
                continue
            n = min(conn.send_window(sid), len(data) - offset, limit)
            if not n and offset < len(data):
                return
            more = offset + n < len(data)
            conn.send_data(sid, data[offset : offset + n], more=more)
            if more:
                queue[0] = (sid, data, offset + n)
            else:
                queue.pop(0)

    def deliver_from(is_client: bool) -> None:
        receiver = not is_client
        for event in pair.flush(conn_of(is_client)):
            if isinstance(event, MessageReceived):
                got.setdefault((is_client, event.stream_id), []).append(event.data)
                unacked[receiver].append((event.stream_id, event.credit))

    for action, is_client, index, size in steps:
        conn = conn_of(is_client)
        ids = conn.stream_ids()
        sid = ids[index % len(ids)] if ids else 0
        if action == "open" and conn.can_open_stream():
            conn.open_stream("svc", b"h")
        elif action == "child" and sid and conn.can_open_stream():
            conn.open_stream("", b"", parent=sid)
        elif action == "send" and sid and conn.can_send(sid):
            if not any(s == sid for s, _, _ in pending_sends[is_client]):
                message = bytes([index]) * size
                sent.setdefault((is_client, sid), []).append(message)
                pending_sends[is_client].append((sid, message, 0))
        elif action == "end" and sid and conn.can_send(sid):
            if not any(s == sid for s, _, _ in pending_sends[is_client]):
                conn.end_stream(sid)
        elif action == "reset" and sid:
            conn.reset_stream(sid, Status(ErrorCode.CANCEL))
        elif action == "ack":
            for stream_id, credit in unacked[is_client]:
                conn.acknowledge(stream_id, credit)
            unacked[is_client].clear()
        elif action == "ping":
            conn.ping(b"pingpong")
        pump_sends(is_client)
        if action == "deliver":
            deliver_from(is_client)
    # Drain: consume and deliver until both sides are quiet.
    for _ in range(200):
        for side in (True, False):
            for stream_id, credit in unacked[side]:
                conn_of(side).acknowledge(stream_id, credit)
            unacked[side].clear()
            pump_sends(side)
            deliver_from(side)
        quiet = not pair.client.outgoing_size and not pair.server.outgoing_size
        if quiet and not any(pending_sends.values()) and not any(unacked.values()):
            break
    # Whatever was delivered arrived whole and in order (a reset may cut the tail).
    for key, messages in got.items():
        assert messages == sent[key][: len(messages)]
    assert pair.client.buffered_bytes() == 0 and pair.server.buffered_bytes() == 0


# ------------------------------------------------------ memory bound of chunked messages


def test_chunked_messages_to_a_reader_that_stopped_stay_within_the_window() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.to_server()
    delivered = 0
    for _ in range(200):
        # Messages of one full chunk and one byte: a sender that earns its credit
        # back on every chunk could send forever.
        if pair.client.send_window(sid) < 1025:
            break
        pair.client.send_data(sid, b"c" * 1024, more=True)
        pair.client.send_data(sid, b"!")
        delivered += sum(len(e.data) for e in pair.to_server() if isinstance(e, MessageReceived))
        pair.to_client()
    bound = SMALL.initial_stream_window + SMALL.max_message_size
    assert 0 < delivered <= bound
    assert pair.server.buffered_bytes() == delivered
    # Once the application reads again, the sender gets its credit back.
    pair.server.acknowledge(sid, delivered)
    pair.to_client()
    assert pair.client.send_window(sid) == SMALL.initial_stream_window


def test_chunked_messages_beyond_the_window_are_a_flow_control_error() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.to_server()
    message = raw(FrameType.DATA, DataFlags.MORE, sid, b"c" * 1024) + raw(
        FrameType.DATA, 0, sid, b"!"
    )
    received = 0
    with pytest.raises(RemoteProtocolError, match="window of stream") as info:
        for _ in range(50):
            events = pair.server.receive_data(message)
            received += sum(len(e.data) for e in events if isinstance(e, MessageReceived))
            assert pair.server.buffered_bytes() == received
            assert received <= SMALL.initial_stream_window + SMALL.max_message_size
    assert info.value.code == ErrorCode.FLOW_CONTROL_ERROR


def test_message_in_assembly_resumes_once_the_held_message_is_consumed() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.to_server()
    pair.client.send_data(sid, b"a" * 1000)
    (held,) = pair.to_server()
    assert held == MessageReceived(sid, b"a" * 1000, 1000)
    # A message three windows long: it stalls while the first one is unconsumed.
    big = b"b" * (3 * SMALL.initial_stream_window)
    offset = 0
    for _ in range(20):
        n = min(pair.client.send_window(sid), 1024, len(big) - offset)
        if not n:
            break
        pair.client.send_data(sid, big[offset : offset + n], more=True)
        offset += n
        assert pair.to_server() == []
        pair.to_client()
    assert offset == SMALL.initial_stream_window - 1000
    assert pair.server.buffered_bytes() == SMALL.initial_stream_window
    # Consuming the held message returns its credit and that of the chunks meanwhile.
    pair.server.acknowledge(sid, held.credit)
    assert pair.to_client() == [WindowOpened(sid)]
    assert pair.client.send_window(sid) == SMALL.initial_stream_window
    received = send_message(pair, pair.client, sid, big[offset:])
    assert [m.data for m in received] == [big]
    assert pair.server.buffered_bytes() == 0


def test_over_acknowledging_grants_no_extra_credit() -> None:
    pair = ConnectionPair()
    sid = pair.client.open_stream("svc", b"")
    pair.to_server()
    pair.client.send_data(sid, b"x" * 1024)
    pair.to_server()
    pair.server.acknowledge(sid, 10_000)
    assert pair.server.buffered_bytes() == 0
    pair.to_client()
    assert pair.client.send_window(sid) == SMALL.initial_stream_window


# ------------------------------------------------------------------ oversized texts


@pytest.mark.parametrize("action", ["end", "reset"])
def test_status_longer_than_the_peer_frame_limit_is_truncated(action: str) -> None:
    pair = ConnectionPair()
    sid = pair.server.open_stream("svc", b"")
    pair.to_client()
    status = Status(ErrorCode.APPLICATION_ERROR, "ValueError", "é" * 100_000)
    if action == "end":
        pair.server.end_stream(sid, status)
    else:
        pair.server.reset_stream(sid, status)
    (event,) = pair.to_client()
    assert isinstance(event, StreamEnded if action == "end" else StreamReset)
    assert event.status.code == ErrorCode.APPLICATION_ERROR
    assert event.status.kind == "ValueError"
    assert "é" * 100 in event.status.message
    assert "\ufffd" not in event.status.message  # not cut inside a character
    assert not pair.client.closed


def test_goaway_message_longer_than_the_peer_frame_limit_is_truncated() -> None:
    pair = ConnectionPair()
    pair.server.go_away(ErrorCode.SHUTDOWN, "x" * 200_000)
    (event,) = pair.to_client()
    assert isinstance(event, ConnectionTerminated)
    assert event.code == ErrorCode.SHUTDOWN and event.message.startswith("x" * 100)


def test_goaway_without_message_names_its_code() -> None:
    conn = ConnectionPair().client
    events = conn.receive_data(
        raw(FrameType.GOAWAY, 0, 0, encode_goaway(0, ErrorCode.SHUTDOWN, ""))
    )
    assert events == [ConnectionTerminated(ErrorCode.SHUTDOWN, "SHUTDOWN")]


def test_service_name_too_long_to_encode_is_refused_without_side_effects() -> None:
    pair = ConnectionPair()
    with pytest.raises(LocalProtocolError, match="service name"):
        pair.client.open_stream("s" * 70_000, b"")
    assert pair.client.open_stream_count == 0
    assert pair.client.outgoing_size == 0
    assert pair.client.open_stream("svc", b"") == 1


@HYPOTHESIS
@given(st.lists(st.binary(min_size=1, max_size=64), max_size=10))
def test_random_bytes_before_hello_give_a_protocol_error_or_wait(chunks: list[bytes]) -> None:
    conn = Connection(initiator=False, settings=SMALL)
    wire(conn)
    for chunk in chunks:
        try:
            events = conn.receive_data(chunk)
        except RemoteProtocolError:
            assert conn.closed
            assert sent_frames(conn)[-1].type == FrameType.GOAWAY
            return
        assert all(isinstance(e, HandshakeCompleted) for e in events)
        if not conn.handshake_done:
            assert conn._decoder.buffered < HEADER_SIZE + MAX_HELLO_SIZE
