"""The state table: every (state, input) pair, on the table and on real Connections.

The table in ``wire._state`` says, for each pair, the next state, "ignored" or
"forbidden". These tests check the table's own promises (every pair is decided, the
flat copies agree, CLOSED is final) and then that a :class:`Connection` does exactly
what the table says, for every pair of the connection table and of the stream table:
an allowed input moves it to the table's state, an ignored one queues and reports
nothing, a forbidden action raises ``LocalProtocolError`` and a forbidden frame
``RemoteProtocolError`` (answered with GOAWAY).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing
from hypothesis import given, settings
from hypothesis import strategies as st

import chanserv_trio as cs
from chanserv_trio._errors import LocalProtocolError, RemoteProtocolError
from chanserv_trio.wire._codec import (
    ErrorCode,
    FrameDecoder,
    FrameType,
    Status,
    decode_goaway,
    encode_frame,
    encode_goaway,
    encode_hello,
    encode_open,
    encode_status,
)
from chanserv_trio.wire._connection import DIALING_NONCE, Connection, Settings
from chanserv_trio.wire._events import Event
from chanserv_trio.wire._state import (
    CONNECTION_NEXT,
    CONNECTION_TRANSITIONS,
    FORBIDDEN,
    IGNORED,
    STREAM_NEXT,
    STREAM_TRANSITIONS,
    ConnectionInput,
    ConnectionState,
    StreamInput,
    StreamState,
    connection_input,
    stream_input,
)

CI = ConnectionInput
SI = StreamInput
HYPOTHESIS = settings(max_examples=300, deadline=None)


def frame(ftype: int, stream_id: int = 0, payload: bytes = b"", flags: int = 0) -> bytes:
    return encode_frame(ftype, flags, stream_id, payload)  # type: ignore[arg-type]


def wire(conn: Connection) -> bytes:
    return b"".join(bytes(part) for part in conn.take_outgoing())


def frame_types(data: bytes) -> list[FrameType]:
    decoder = FrameDecoder(1 << 30)
    decoder.feed(data)
    return [FrameType(ftype) for ftype, _, _, _ in decoder.frames()]


# ------------------------------------------------------------- the table itself


def test_every_pair_is_decided_and_the_flat_tables_agree() -> None:
    for state in ConnectionState:
        for event in ConnectionInput:
            flat = CONNECTION_NEXT[state][event]
            if (state, event) not in CONNECTION_TRANSITIONS:
                assert flat == FORBIDDEN
            else:
                outcome = CONNECTION_TRANSITIONS[state, event]
                assert flat == (IGNORED if outcome is None else outcome)
    for stream_state in StreamState:
        for stream_event in StreamInput:
            flat = STREAM_NEXT[stream_state][stream_event]
            if (stream_state, stream_event) not in STREAM_TRANSITIONS:
                assert flat == FORBIDDEN
            else:
                stream_outcome = STREAM_TRANSITIONS[stream_state, stream_event]
                assert flat == (IGNORED if stream_outcome is None else stream_outcome)


def test_closed_is_final_and_queues_nothing() -> None:
    for event in ConnectionInput:
        outcome = CONNECTION_TRANSITIONS.get((ConnectionState.CLOSED, event), "forbidden")
        assert outcome in (None, "forbidden"), event
    for stream_event in StreamInput:
        stream_outcome = STREAM_TRANSITIONS.get((StreamState.CLOSED, stream_event), "forbidden")
        assert stream_outcome in (None, "forbidden"), stream_event


def test_streams_may_use_the_data_inputs_in_every_state_but_handshake_and_closed() -> None:
    # The connection folds its table into flags on each stream and clears them when it
    # closes; that is sound only because of this.
    for state in ConnectionState:
        for event in (CI.SEND_DATA, CI.RECV_DATA, CI.SEND_WINDOW):
            allowed = CONNECTION_NEXT[state][event] >= 0
            assert allowed is (state not in (ConnectionState.HANDSHAKE, ConnectionState.CLOSED))


@HYPOTHESIS
@given(st.sampled_from(list(ConnectionState)), st.lists(st.sampled_from(list(ConnectionInput))))
def test_connection_inputs_move_between_states_or_raise_the_right_error(
    start: ConnectionState, events: list[ConnectionInput]
) -> None:
    state = start
    for event in events:
        try:
            outcome = connection_input(state, event)
        except RemoteProtocolError as exc:
            assert event.name.startswith("RECV_") and exc.code == ErrorCode.PROTOCOL_ERROR
            state = ConnectionState.CLOSED  # a connection error closes the connection
            continue
        except LocalProtocolError:
            assert event.name.startswith("SEND_")
            continue  # a refused action changes nothing
        if outcome is None:
            continue
        assert outcome in ConnectionState
        if state is ConnectionState.CLOSED:
            raise AssertionError(f"left CLOSED on {event.name}")
        state = outcome


@HYPOTHESIS
@given(st.sampled_from(list(StreamState)), st.lists(st.sampled_from(list(StreamInput))))
def test_stream_inputs_only_ever_close_halves(
    start: StreamState, events: list[StreamInput]
) -> None:
    state = start
    for event in events:
        try:
            outcome = stream_input(state, event, 5)
        except RemoteProtocolError as exc:
            assert event.name.startswith("RECV_") and "stream 5" in str(exc)
            return
        except LocalProtocolError as exc:
            assert event.name.startswith("SEND_") and "stream 5" in str(exc)
            continue
        if outcome is not None:
            assert outcome & ~state == 0, "a closed half never opens again"
            state = outcome


# ------------------------------------------------- real connections, every pair


def pair() -> tuple[Connection, Connection]:
    """Our side (the accepting one) and its peer, handshake done, one stream open: 1."""
    peer, conn = Connection(initiator=True), Connection(initiator=False)
    conn.receive_data(wire(peer))
    peer.receive_data(wire(conn))
    peer.open_stream("svc", b"")
    conn.receive_data(wire(peer))
    return conn, peer


def connection_in(state: ConnectionState) -> Connection:
    """Our side in ``state``, with stream 1 open both ways unless it is HANDSHAKE."""
    if state is ConnectionState.HANDSHAKE:
        conn = Connection(initiator=False)
        wire(conn)
        return conn
    conn, peer = pair()
    if state in (ConnectionState.LOCAL_GOAWAY, ConnectionState.BOTH_GOAWAY):
        conn.go_away(ErrorCode.OK)
    if state in (ConnectionState.REMOTE_GOAWAY, ConnectionState.BOTH_GOAWAY):
        peer.go_away(ErrorCode.OK)
        conn.receive_data(wire(peer))
    if state is ConnectionState.CLOSED:
        conn.go_away(ErrorCode.SHUTDOWN, "closed")
    wire(conn)
    assert conn.state is state
    return conn


Apply = Callable[[Connection], list[Event]]


def _act(action: Callable[[Connection], object]) -> Apply:
    def apply(conn: Connection) -> list[Event]:
        action(conn)
        return []

    return apply


def _feed(data: bytes) -> Apply:
    return lambda conn: conn.receive_data(data)


CONNECTION_INPUTS: dict[ConnectionInput, Apply] = {
    CI.SEND_OPEN: _act(lambda conn: conn.open_stream("svc", b"")),
    CI.SEND_DATA: _act(lambda conn: conn.send_data(1, b"x")),
    CI.SEND_END: _act(lambda conn: conn.end_stream(1)),
    CI.SEND_RESET: _act(lambda conn: conn.reset_stream(1, Status(ErrorCode.CANCEL))),
    CI.SEND_WINDOW: _act(lambda conn: conn.set_receive_window(1, 1 << 21)),
    CI.SEND_PING: _act(lambda conn: conn.ping(b"pingpong")),
    CI.SEND_SERVICE: _act(lambda conn: conn.advertise("svc")),
    CI.SEND_GOAWAY: _act(lambda conn: conn.go_away(ErrorCode.OK)),
    CI.SEND_GOAWAY_ERROR: _act(lambda conn: conn.go_away(ErrorCode.INTERNAL_ERROR)),
    CI.RECV_HELLO: _feed(
        frame(FrameType.HELLO, 0, encode_hello(Settings().to_wire(), nonce=DIALING_NONCE))
    ),
    CI.RECV_OPEN: _feed(frame(FrameType.OPEN, 3, encode_open(0, "svc", b""))),
    CI.RECV_DATA: _feed(frame(FrameType.DATA, 1, b"x")),
    CI.RECV_END: _feed(frame(FrameType.END, 1)),
    CI.RECV_RESET: _feed(frame(FrameType.RESET, 1, encode_status(Status(ErrorCode.CANCEL)))),
    CI.RECV_WINDOW: _feed(frame(FrameType.WINDOW, 0, (1).to_bytes(4, "big"))),
    CI.RECV_PING: _feed(frame(FrameType.PING, 0, b"pingpong")),
    CI.RECV_SERVICE: _feed(frame(FrameType.SERVICE, 0, b"svc")),
    CI.RECV_GOAWAY: _feed(frame(FrameType.GOAWAY, 0, encode_goaway(0, ErrorCode.OK, ""))),
    CI.RECV_GOAWAY_ERROR: _feed(
        frame(FrameType.GOAWAY, 0, encode_goaway(0, ErrorCode.SHUTDOWN, "bye"))
    ),
    CI.RECV_UNKNOWN: _feed(frame(42)),
    CI.RECV_EOF: _feed(b""),
}


def check_connection_pair(state: ConnectionState, event: ConnectionInput) -> None:
    conn = connection_in(state)
    apply = CONNECTION_INPUTS[event]
    if (state, event) not in CONNECTION_TRANSITIONS:
        error = RemoteProtocolError if event.name.startswith("RECV_") else LocalProtocolError
        with pytest.raises(error) as info:
            apply(conn)
        assert type(info.value) is error
        if error is LocalProtocolError:
            assert conn.state is state and wire(conn) == b""
        else:
            # A forbidden frame is a connection error, answered with GOAWAY.
            assert conn.state is ConnectionState.CLOSED
            sent = wire(conn)
            assert frame_types(sent) == [FrameType.GOAWAY]
            assert decode_goaway(sent[10:])[1] == ErrorCode.PROTOCOL_ERROR
        return
    outcome = CONNECTION_TRANSITIONS[state, event]
    events = apply(conn)
    if outcome is None:
        assert conn.state is state
        assert events == [] and wire(conn) == b"", "an ignored input leaves no trace"
    else:
        assert conn.state is outcome


@pytest.mark.parametrize("event", list(ConnectionInput), ids=lambda event: event.name)
@pytest.mark.parametrize("state", list(ConnectionState), ids=lambda state: state.name)
def test_a_connection_does_what_the_table_says(
    state: ConnectionState, event: ConnectionInput
) -> None:
    check_connection_pair(state, event)


def stream_in(state: StreamState) -> tuple[Connection, Connection]:
    """Our side with stream 1 (opened by the peer) in ``state``."""
    conn, peer = pair()
    if state is StreamState.HALF_CLOSED_LOCAL:
        conn.end_stream(1)
    elif state is StreamState.HALF_CLOSED_REMOTE:
        peer.end_stream(1)
        conn.receive_data(wire(peer))
    elif state is StreamState.CLOSED:
        conn.reset_stream(1, Status(ErrorCode.CANCEL))
    wire(conn)
    assert conn.stream_state(1) is state
    return conn, peer


STREAM_INPUTS: dict[StreamInput, Apply] = {
    SI.SEND_DATA: CONNECTION_INPUTS[CI.SEND_DATA],
    SI.SEND_END: CONNECTION_INPUTS[CI.SEND_END],
    SI.SEND_RESET: CONNECTION_INPUTS[CI.SEND_RESET],
    SI.SEND_WINDOW: CONNECTION_INPUTS[CI.SEND_WINDOW],
    SI.RECV_DATA: CONNECTION_INPUTS[CI.RECV_DATA],
    SI.RECV_END: CONNECTION_INPUTS[CI.RECV_END],
    SI.RECV_RESET: CONNECTION_INPUTS[CI.RECV_RESET],
    SI.RECV_WINDOW: _feed(frame(FrameType.WINDOW, 1, (1).to_bytes(4, "big"))),
}


def check_stream_pair(state: StreamState, event: StreamInput) -> None:
    conn, _ = stream_in(state)
    apply = STREAM_INPUTS[event]
    if (state, event) not in STREAM_TRANSITIONS:
        error = RemoteProtocolError if event.name.startswith("RECV_") else LocalProtocolError
        with pytest.raises(error, match="stream 1"):
            apply(conn)
        if error is LocalProtocolError:
            assert conn.stream_state(1) is state and wire(conn) == b""
        else:
            assert conn.closed and frame_types(wire(conn)) == [FrameType.GOAWAY]
        return
    outcome = STREAM_TRANSITIONS[state, event]
    events = apply(conn)
    if outcome is None:
        assert conn.stream_state(1) is state
        assert events == [] and wire(conn) == b"", "an ignored input leaves no trace"
    else:
        assert conn.stream_state(1) is outcome
        assert not conn.closed


@pytest.mark.parametrize("event", list(StreamInput), ids=lambda event: event.name)
@pytest.mark.parametrize("state", list(StreamState), ids=lambda state: state.name)
def test_a_stream_does_what_the_table_says(state: StreamState, event: StreamInput) -> None:
    check_stream_pair(state, event)


@HYPOTHESIS
@given(st.lists(st.sampled_from(list(ConnectionInput)), max_size=12))
def test_a_connection_follows_the_table_through_any_sequence(
    events: list[ConnectionInput],
) -> None:
    conn, _ = pair()
    for event in events:
        state = conn.state
        expected = CONNECTION_TRANSITIONS.get((state, event), "forbidden")
        try:
            CONNECTION_INPUTS[event](conn)
        except LocalProtocolError:
            assert conn.state is state  # a refused action changes nothing
        except RemoteProtocolError:
            assert conn.closed  # a refused frame closes the connection
        else:
            # The table allowed it (a stream rule or a reused id may still refuse).
            assert expected != "forbidden", (state, event)
            assert conn.state is (state if expected is None else expected)
        if expected == "forbidden":
            assert conn.state is state or conn.closed
        wire(conn)


# ------------------------------------------------------ nothing after close


def test_after_a_protocol_error_no_action_queues_bytes() -> None:
    conn, _ = pair()
    conn.open_stream("svc", b"")
    wire(conn)
    with pytest.raises(RemoteProtocolError):
        conn.receive_data(frame(42))
    # The application, not yet told, keeps going on both streams.
    assert not conn.try_send_message(1, b"one")
    assert not conn.try_send_message(2, b"two")
    with pytest.raises(LocalProtocolError, match="closed"):
        conn.send_data(1, b"three")
    with pytest.raises(LocalProtocolError, match="closed"):
        conn.end_stream(2)
    assert not conn.reset_stream(1, Status(ErrorCode.CANCEL))
    conn.acknowledge(1, 100)
    conn.set_receive_window(1, 1 << 22)
    conn.ping(b"pingpong")
    conn.advertise("late")
    conn.go_away(ErrorCode.OK)
    assert not conn.can_send(1) and conn.send_window(1) == 0
    assert frame_types(wire(conn)) == [FrameType.GOAWAY]


async def test_a_link_sends_nothing_after_the_goaway_of_a_protocol_error() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link = cs.Link(ours, initiator=True)
    # A small window, so that the senders below soon wait for credit.
    peer = Connection(initiator=False, settings=Settings(initial_stream_window=4096))
    await theirs.send_all(wire(peer))
    errors: list[BaseException] = []

    async def keep_sending(stream: cs.LinkStream) -> None:
        try:
            while True:
                await stream.send(b"more")
        except cs.ChanservError as exc:
            errors.append(exc)

    received = b""
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            streams = [await link.open_stream("svc", b"") for _ in range(2)]
            for stream in streams:
                nursery.start_soon(keep_sending, stream)
            await trio.testing.wait_all_tasks_blocked()
            # Credit wakes the senders, and right behind it comes a frame of no known
            # type: the link closes the connection while they are busy.
            credit = (4096).to_bytes(4, "big")
            await theirs.send_all(
                b"".join(frame(FrameType.WINDOW, s.stream_id, credit) for s in streams)
            )
            await theirs.send_all(frame(42))
            while chunk := await theirs.receive_some():
                received += chunk
    types = frame_types(received)
    assert types.count(FrameType.GOAWAY) == 1
    assert types[-1] is FrameType.GOAWAY, types[types.index(FrameType.GOAWAY) :]
    assert [type(error) for error in errors] == [cs.RemoteProtocolError] * 2
