"""The connection's fast paths against its general ones, on arbitrary frames.

The receive path handles a whole message in one DATA frame inline, ``acknowledge``
whole consumed messages inline, and ``try_send_message`` sends small messages; each
must do exactly what the general path does (``_on_data``; ``Windows.consume``;
``send_data``): the same events, errors, bytes queued, windows, memory accounting and
resume positions, whatever the frames, however the bytes are split and consumed.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from wire_helpers import windows_fields

from chanserv_trio._errors import LocalProtocolError, RemoteProtocolError
from chanserv_trio.wire._codec import DataFlags, FrameType, Status, encode_frame, encode_status
from chanserv_trio.wire._connection import Connection, Settings
from chanserv_trio.wire._events import Event, MessageReceived, StreamOpened
from chanserv_trio.wire._resume import ResumeOptions

SMALL = Settings(
    initial_stream_window=1500,
    connection_window=3000,
    max_frame_payload=1024,
    max_message_size=6000,
    max_open_payload=2048,
    max_concurrent_streams=8,
)
#: The least budget SMALL allows, one more stream and a little: the two streams the
#: peer opens fill it but for about 20 tiny messages.
BUDGET = 3000 + 2 * (16 << 10) + 2 * (2048 + 131078 + 10) + (1 << 20) + 2500


def _wire(conn: Connection) -> bytes:
    return b"".join(bytes(part) for part in conn.take_outgoing())


def _pair(resume: bool, budget: int | None) -> tuple[Connection, Connection]:
    options = ResumeOptions(timeout=30, buffer_size=1 << 16) if resume else None
    client = Connection(initiator=True, settings=SMALL, resume=options)
    server = Connection(initiator=False, settings=SMALL, resume=options, memory_budget=budget)
    for _ in range(3):
        data = _wire(client)
        if data:
            server.receive_data(data)
        data = _wire(server)
        if data:
            client.receive_data(data)
    assert client.handshake_done and server.handshake_done
    return client, server


def _snapshot(conn: Connection) -> dict[str, Any]:
    windows = conn._windows
    streams = {}
    for stream_id, stream in conn._streams.items():
        streams[stream_id] = (
            stream.state,
            stream.messages,
            stream.assembling,
            list(stream.chunks or ()),
            stream.cost,
            stream.max_message,
            windows_fields(stream.windows),
        )
    return {
        "held": conn.held_bytes,
        "messages": conn.messages_received,
        "connection": (windows.send, windows.receive, windows.owed, windows.size),
        "streams": streams,
        "closed": conn.closed,
        "position": conn.received_position,
        "buffered": conn._decoder.buffered,
    }


def _outcome(conn: Connection, data: bytes) -> tuple[Any, ...]:
    try:
        events: list[Event] | tuple[str, int, str] = conn.receive_data(data)
    except RemoteProtocolError as exc:
        events = ("error", exc.code, exc.message)
    return events, _wire(conn), _snapshot(conn)


#: Mostly DATA: whole messages, chunks, compressed (refused: not agreed) and unknown
#: flags, on open streams, one closed, and (rarely, since each ends the connection)
#: never-opened ones, of sizes about every limit.
_data = st.tuples(
    st.just(int(FrameType.DATA)),
    st.sampled_from([0] * 12 + [int(DataFlags.MORE)] * 4 + [int(DataFlags.COMPRESSED), 4]),
    st.sampled_from([1, 2, 2, 3, 4, 4, 6, 6, 8, 8] * 4 + [10, 0]),
    st.one_of(
        *[st.integers(0, 80)] * 12,
        *[st.integers(900, 1024)] * 6,
        st.sampled_from([1025, 4096]),
    ),
)
_frame = st.one_of(
    *[_data] * 30,
    st.tuples(
        st.sampled_from([int(FrameType.END), int(FrameType.RESET), int(FrameType.WINDOW)]),
        st.just(0),
        st.sampled_from([1, 2, 3, 4, 6, 8, 10]),
        st.just(-1),
    ),
    st.tuples(st.just(int(FrameType.PING)), st.just(0), st.just(0), st.just(8)),
    st.tuples(st.just(99), st.just(0), st.just(0), st.just(3)),  # an unknown type
)


def _encode(ftype: int, flags: int, stream_id: int, size: int) -> bytes:
    if ftype in (FrameType.END, FrameType.RESET):
        payload = encode_status(Status(0 if ftype == FrameType.END else 6, "", "x"))
    elif ftype == FrameType.WINDOW:
        payload = (100).to_bytes(4, "big")
    else:
        payload = bytes([stream_id % 251]) * size
    return encode_frame(ftype, flags, stream_id, payload)  # type: ignore[arg-type]


def _receivers(
    resume: bool, budget: int | None, limited: bool, second: str = "general"
) -> list[Connection]:
    """Two identical receivers (the second handles every DATA frame with ``_on_data``,
    or with ``second="tuples"`` reports its fast path's messages as plain tuples).

    Streams 2..8 are the receiver's, opened towards its peer, which may send on them;
    8 receives nothing; 6 accepts messages of at most 10 bytes when ``limited``. Streams
    1 and 3 the peer opened (each charged to the receiver's budget)."""
    receivers = []
    for inline in (True, False):
        client, server = _pair(resume, budget)
        if not inline:
            if second == "tuples":
                server.message_tuples = True
            else:
                server._inline_messages = False
        for index in range(4):
            server.open_stream("svc", b"h", local_open=index != 3, remote_open=index != 3)
        opened = [e for e in client.receive_data(_wire(server)) if isinstance(e, StreamOpened)]
        assert len(opened) == 4
        client.open_stream("svc", b"h", remote_open=False)
        client.open_stream("svc", b"h", remote_open=False)
        opened = [e for e in server.receive_data(_wire(client)) if isinstance(e, StreamOpened)]
        assert len(opened) == 2
        if limited:
            server.set_max_message_size(6, 10)
        receivers.append(server)
    return receivers


def _compare(receivers: list[Connection], pieces: list[bytes], acks: list[int]) -> None:
    """Feed both receivers the same pieces, after each one acknowledging the first
    ``acks[i]`` messages held alike; every outcome and state must be the same."""
    messages: list[list[MessageReceived]] = [[], []]
    for index, piece in enumerate(pieces):
        outcomes = [_outcome(server, piece) for server in receivers]
        assert outcomes[0] == outcomes[1]
        for held, outcome in zip(messages, outcomes, strict=True):
            events = outcome[0]
            if isinstance(events, list):
                held.extend(e for e in events if isinstance(e, MessageReceived))
        if index < len(acks):
            for server, held in zip(receivers, messages, strict=True):
                for message in held[: acks[index]]:
                    server.acknowledge(message.stream_id, message.credit, 1)
                del held[: acks[index]]
            assert _snapshot(receivers[0]) == _snapshot(receivers[1])
            assert _wire(receivers[0]) == _wire(receivers[1])


def _pieces(frames: list[tuple[int, int, int, int]], cuts: list[int]) -> list[bytes]:
    """The frames' bytes, cut at the given offsets (empty pieces left out)."""
    data = b"".join(_encode(*frame) for frame in frames)
    points = sorted({min(cut, len(data)) for cut in cuts} | {len(data)})
    pieces = [data[start:end] for start, end in zip([0, *points], points, strict=False)]
    return [piece for piece in pieces if piece]


@settings(max_examples=500, deadline=None)
@given(
    frames=st.lists(_frame, max_size=60),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=8),
    acks=st.lists(st.integers(0, 60), max_size=10),
    resume=st.booleans(),
    budget=st.sampled_from([None, BUDGET]),
    limited=st.booleans(),
)
def test_inline_messages_match_on_data(
    frames: list[tuple[int, int, int, int]],
    cuts: list[int],
    acks: list[int],
    resume: bool,
    budget: int | None,
    limited: bool,
) -> None:
    """The same bytes, cut at the same places and acknowledged alike, leave the same
    events, errors, bytes queued and state whether whole messages are handled inline
    or by ``_on_data``."""
    _compare(_receivers(resume, budget, limited), _pieces(frames, cuts), acks)


def _as_records(events: Any) -> Any:
    if not isinstance(events, list):
        return events
    return [MessageReceived(*e) if type(e) is tuple else e for e in events]


@settings(max_examples=300, deadline=None)
@given(
    frames=st.lists(_frame, max_size=60),
    cuts=st.lists(st.integers(0, 1 << 16), max_size=8),
    resume=st.booleans(),
    budget=st.sampled_from([None, BUDGET]),
)
def test_message_tuples_are_the_same_events_as_plain_tuples(
    frames: list[tuple[int, int, int, int]],
    cuts: list[int],
    resume: bool,
    budget: int | None,
) -> None:
    """With ``message_tuples`` the fast path's messages come as plain tuples: the same
    fields in the same place among the events, and nothing else changes."""
    records, tuples = _receivers(resume, budget, False, second="tuples")
    for piece in _pieces(frames, cuts):
        expected, got = _outcome(records, piece), _outcome(tuples, piece)
        assert (_as_records(got[0]), *got[1:]) == expected
        if isinstance(got[0], list):
            for want, event in zip(expected[0], got[0], strict=True):
                # Messages the fast path took are plain; the general path's are records.
                if isinstance(want, MessageReceived) and type(event) is tuple:
                    assert want == MessageReceived(*event)
                else:
                    assert type(event) is type(want)


def test_message_tuples_come_from_the_fast_path() -> None:
    records, tuples = _receivers(False, None, False, second="tuples")
    frame = _encode(int(FrameType.DATA), 0, 2, 5)
    assert records.receive_data(frame) == [MessageReceived(2, bytes([2]) * 5, 5)]
    event = tuples.receive_data(frame)[0]
    assert type(event) is tuple and event == (2, bytes([2]) * 5, 5)


_D = int(FrameType.DATA)
_MORE = int(DataFlags.MORE)
#: Frame sequences that each reach one limit or rule the inline path checks.
CASES = {
    "connection window": [(_D, 0, 2, 1000), (_D, 0, 4, 1000), (_D, 0, 1, 1000), (_D, 0, 3, 1)],
    "stream window": [(_D, 0, 2, 1000), (_D, 0, 2, 600)],
    "frame size": [(_D, 0, 2, 10), (_D, 0, 2, 1025)],
    "ended stream": [(int(FrameType.END), 0, 2, -1), (_D, 0, 2, 5)],
    "reset stream": [(int(FrameType.RESET), 0, 2, -1), (_D, 0, 2, 5), (_D, 0, 4, 5)],
    "stream that receives nothing": [(_D, 0, 8, 5), (_D, 0, 2, 5)],
    "never opened": [(_D, 0, 2, 5), (_D, 0, 10, 5)],
    "stream limit": [(_D, 0, 6, 10), (_D, 0, 6, 11), (_D, 0, 2, 3)],
    "message in assembly": [(_D, _MORE, 2, 10), (_D, 0, 4, 3), (_D, 0, 2, 7)],
    "budget of tiny messages": [(_D, 0, 1, 0)] * 40,
    "empty and unknown flags": [(_D, 0, 2, 0), (_D, 4, 2, 3), (_D, 0, 3, 0)],
}


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("case", sorted(CASES))
def test_inline_messages_at_each_limit(case: str, resume: bool) -> None:
    """Each rule the inline path checks, reached: the same outcome as ``_on_data``, in
    one read and frame by frame."""
    data = [_encode(*frame) for frame in CASES[case]]
    _compare(_receivers(resume, BUDGET, True), [b"".join(data)], [])
    _compare(_receivers(resume, BUDGET, True), data, [0] * len(data))


@settings(max_examples=200, deadline=None)
@given(
    sends=st.lists(
        st.tuples(st.sampled_from([1, 3, 5, 7]), st.integers(0, 1100)), min_size=1, max_size=40
    ),
    resume=st.booleans(),
)
def test_try_send_message_matches_send_data(sends: list[tuple[int, int]], resume: bool) -> None:
    """``try_send_message`` queues what ``send_data`` would, or nothing (and False)
    exactly when ``send_data`` refuses the message."""
    senders = []
    for _ in range(2):
        client, server = _pair(resume, None)
        for index in range(4):
            client.open_stream("svc", b"", local_open=index != 3)
        server.receive_data(_wire(client))
        senders.append(client)
    fast, general = senders
    for stream_id, size in sends:
        data = bytes([size % 256]) * size
        queued = fast.try_send_message(stream_id, data)
        try:
            general.send_data(stream_id, data)
            sent = True
        except LocalProtocolError:
            sent = False
        assert queued == sent
        assert _wire(fast) == _wire(general)
        assert fast.send_window(stream_id) == general.send_window(stream_id)
        assert fast.messages_sent == general.messages_sent
        assert fast.resume_held == general.resume_held


def test_message_received_is_a_record() -> None:
    """The tuple-based event behaves as the attrs records do: read-only fields, equal
    only to its own kind with the same values, matched by class and field names."""
    message = MessageReceived(3, b"abc", 3)
    assert (message.stream_id, message.data, message.credit) == (3, b"abc", 3)
    assert message == MessageReceived(3, b"abc", 3)
    assert message != MessageReceived(3, b"abc", 4)
    assert message != (3, b"abc", 3)
    assert hash(message) == hash(MessageReceived(3, b"abc", 3))
    assert repr(message) == "MessageReceived(stream_id=3, data=b'abc', credit=3)"
    with pytest.raises(AttributeError):
        message.credit = 5  # type: ignore[misc]
    match message:
        case MessageReceived(stream_id=3, data=data, credit=credit):
            assert (data, credit) == (b"abc", 3)
        case _:
            pytest.fail("not matched by its fields")
    match message:
        case MessageReceived(sid, data, credit):
            assert (sid, data, credit) == (3, b"abc", 3)
        case _:
            pytest.fail("not matched by position")


#: Steps that reach each case ``acknowledge`` must leave to the general path: frames
#: received, ``("ack", stream, credit, messages)``, ``("window", stream, size)``.
ACK_CASES: dict[str, list[Any]] = {
    "chunks wait while a message is held": [
        [(_D, 0, 2, 100), (_D, _MORE, 2, 200)],
        ("ack", 2, 100, 1),
        [(_D, 0, 2, 50)],
        ("ack", 2, 250, 1),
    ],
    "chunks credited before the message completes": [
        [(_D, _MORE, 2, 400), (_D, 0, 2, 100)],
        ("ack", 2, 500, 1),
    ],
    "a smaller window withholds credit": [
        [(_D, 0, 2, 400), (_D, 0, 2, 400)],
        ("window", 2, 500),
        ("ack", 2, 400, 1),
        ("ack", 2, 400, 1),
    ],
    "more than is held": [
        [(_D, 0, 2, 100), (_D, 0, 4, 10)],
        ("ack", 2, 150, 1),
        ("ack", 4, 5, 3),
        ("ack", 4, 5, 0),
        ("ack", 4, 0, 0),
    ],
    "the peer sends no more": [
        [(_D, 0, 2, 100), (int(FrameType.END), 0, 2, -1)],
        ("ack", 2, 100, 1),
    ],
    "credit reaches a quarter of the window": [
        [(_D, 0, 1, 300), (_D, 0, 1, 300), (_D, 0, 3, 1000)],
        ("ack", 1, 300, 1),
        ("ack", 1, 300, 1),
        ("ack", 3, 1000, 1),
    ],
}


@pytest.mark.parametrize("resume", [False, True])
@pytest.mark.parametrize("case", sorted(ACK_CASES))
def test_inline_acknowledge_matches_consume(case: str, resume: bool) -> None:
    """Each case of ``acknowledge``: the same credit, WINDOW frames, held bytes and
    windows whether whole consumed messages are handled inline or by
    ``Windows.consume``."""
    receivers = _receivers(resume, BUDGET, False)
    for step in ACK_CASES[case]:
        for server in receivers:
            if isinstance(step, list):
                server.receive_data(b"".join(_encode(*frame) for frame in step))
            elif step[0] == "ack":
                server.acknowledge(*step[1:])
            else:
                server.set_receive_window(*step[1:])
        assert _snapshot(receivers[0]) == _snapshot(receivers[1])
        assert _wire(receivers[0]) == _wire(receivers[1])
