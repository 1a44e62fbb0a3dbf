"""Resumption in the sans-IO layer (docs/protocol.md, section 17): negotiation, positions,
the resume buffer and its bound, and two Connections cut at random points and resumed,
driven by Hypothesis, delivering exactly the messages sent, in order."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chanserv_trio._errors import RemoteProtocolError
from chanserv_trio.wire._codec import (
    ErrorCode,
    FrameDecoder,
    FrameType,
    HelloField,
    ResumeSetting,
    decode_goaway,
    decode_hello,
    encode_frame,
)
from chanserv_trio.wire._connection import Connection, Settings
from chanserv_trio.wire._events import (
    ConnectionTerminated,
    MessageReceived,
    Resumed,
    ResumeRequested,
    StreamOpened,
)
from chanserv_trio.wire._resume import ResumeBuffer, ResumeOptions, pack_position_window

RESUME = ResumeOptions(timeout=30.0)


def out(conn: Connection) -> bytes:
    return b"".join(bytes(chunk) for chunk in conn.take_outgoing())


def deliver(sender: Connection, receiver: Connection) -> list[Any]:
    data = out(sender)
    return receiver.receive_data(data) if data else []


def frames(data: bytes) -> list[tuple[int, int, int, bytes]]:
    decoder = FrameDecoder(1 << 30)
    decoder.feed(data)
    return list(decoder.frames())


def pair(
    client_resume: ResumeOptions | None = RESUME, server_resume: ResumeOptions | None = RESUME
) -> tuple[Connection, Connection]:
    client = Connection(initiator=True, resume=client_resume)
    server = Connection(initiator=False, resume=server_resume)
    deliver(client, server)
    deliver(server, client)
    return client, server


def resume(client: Connection, server: Connection) -> tuple[ResumeRequested, list[Any]]:
    """The resuming handshake over a new transport: the client's HELLO is read by a
    fresh accepting connection, as a node does, and the server's link takes over."""
    client.detach()
    server.detach()
    client.begin_resume()
    fresh = Connection(initiator=False, resume=RESUME)
    assert fresh.take_outgoing() == []  # it answers only once it read a HELLO
    (request,) = deliver(client, fresh)
    assert isinstance(request, ResumeRequested)
    assert server.can_resume_from(request.position)
    server.accept_resume(request.position)
    rest = fresh.take_unread()
    if rest:
        server.receive_data(rest)
    return request, deliver(server, client)


# ------------------------------------------------------------------- negotiation


def test_both_ends_asking_makes_the_link_resumable_with_one_token() -> None:
    client, server = pair()
    assert client.resumable and server.resumable
    assert client.resume_token == server.resume_token
    assert client.resume_token is not None and len(client.resume_token) == 16
    assert client.resume_timeout == server.resume_timeout == 30.0


def test_the_smaller_timeout_wins() -> None:
    client, server = pair(ResumeOptions(timeout=5.0), ResumeOptions(timeout=60.0))
    assert client.resume_timeout == server.resume_timeout == 5.0


@pytest.mark.parametrize(("client_resume", "server_resume"), [(RESUME, None), (None, RESUME)])
def test_one_end_asking_is_not_enough(
    client_resume: ResumeOptions | None, server_resume: ResumeOptions | None
) -> None:
    client = Connection(initiator=True, resume=client_resume)
    server = Connection(
        initiator=False, resume=server_resume, settings=Settings(connection_window=1 << 20)
    )
    deliver(client, server)
    deliver(server, client)
    assert not client.resumable and not server.resumable
    stream = client.open_stream("s", b"")
    client.send_data(stream, b"x" * 300_000)
    deliver(client, server)
    # The connection WINDOW is the 4-byte one, and nothing is held for replay.
    (window,) = frames(out(server))
    assert window[0] == FrameType.WINDOW and len(window[3]) == 4
    assert client.resume_held == server.resume_held == 0


def test_the_accepting_side_issues_the_token_after_reading_the_dialers_hello() -> None:
    client = Connection(initiator=True, resume=RESUME)
    server = Connection(initiator=False, resume=RESUME)
    server.advertise("svc")  # queued, but held behind the HELLO not yet sent
    assert server.take_outgoing() == [] and server.outgoing_size == 0
    deliver(client, server)
    (hello, service) = frames(out(server))
    assert hello[0] == FrameType.HELLO and service[0] == FrameType.SERVICE
    decoded = decode_hello(hello[3])
    assert decoded.fields[HelloField.RESUME_TOKEN] == server.resume_token
    assert decoded.settings[ResumeSetting.RESUME_TIMEOUT] == 30_000
    assert decoded.settings[ResumeSetting.RESUME_BUFFER] == 4 << 20


def test_a_node_that_does_not_resume_refuses_a_resuming_hello() -> None:
    client, _ = pair()
    client.detach()
    client.begin_resume()
    other = Connection(initiator=False)  # resumption off (say, after a restart)
    out(other)
    with pytest.raises(RemoteProtocolError) as caught:
        deliver(client, other)
    assert caught.value.code == ErrorCode.RESUME_REFUSED
    events = deliver(other, client)
    assert [type(event) for event in events] == [ConnectionTerminated]
    assert events[0].code == ErrorCode.RESUME_REFUSED
    assert "resumption failed" in events[0].message


def test_an_unknown_token_is_refused_and_nothing_of_the_stream_is_sent() -> None:
    client, _ = pair()
    stream = client.open_stream("s", b"")
    client.detach()
    client.send_data(stream, b"queued while detached")
    client.begin_resume()
    first = out(client)
    assert [frame[0] for frame in frames(first)] == [FrameType.HELLO]
    fresh = Connection(initiator=False, resume=RESUME)
    (request,) = fresh.receive_data(first)
    assert isinstance(request, ResumeRequested)
    # The node knows no such token: a plain HELLO and GOAWAY RESUME_REFUSED.
    refusal = Connection(initiator=False)
    refusal.go_away(ErrorCode.RESUME_REFUSED, "resumption failed: unknown token")
    events = client.receive_data(out(refusal))
    assert isinstance(events[-1], ConnectionTerminated)
    assert events[-1].code == ErrorCode.RESUME_REFUSED
    assert client.closed


# ------------------------------------------------------------------- positions


def test_the_worked_example_of_the_protocol_page() -> None:
    """docs/protocol.md, section 17 (test_docs checks the table's numbers too)."""
    client, server = pair()
    server.advertise("echo")
    deliver(server, client)
    stream = client.open_stream("echo", b"")
    client.send_data(stream, b"one")
    delivered = out(client)
    client.send_data(stream, b"two")
    lost = out(client)
    assert len(delivered) == 35 and len(lost) == 13
    events = server.receive_data(delivered)
    assert [type(event) for event in events] == [StreamOpened, MessageReceived]
    assert (client.sent_position, client.received_position) == (48, 14)
    assert (server.sent_position, server.received_position) == (14, 35)
    request, replayed = resume(client, server)
    assert request.position == 14
    assert [type(event) for event in replayed] == [Resumed]
    assert replayed[0].position == 35 and replayed[0].replayed == 13
    (message,) = deliver(client, server)
    assert isinstance(message, MessageReceived) and message.data == b"two"
    assert server.received_position == 48


def test_confirmations_drop_what_the_peer_received() -> None:
    small = ResumeOptions(timeout=1.0, buffer_size=4096)
    client, server = pair(small, small)
    stream = client.open_stream("s", b"")
    for _ in range(10):
        assert client.try_send_message(stream, b"m" * 100)
    deliver(client, server)
    # A quarter of the client's 4096 bytes received: the server confirms it.
    assert client.resume_held > 1024
    deliver(server, client)
    assert client.resume_held == 0
    assert client.sent_position == server.received_position


def test_the_buffer_bounds_what_senders_queue() -> None:
    small = ResumeOptions(timeout=1.0, buffer_size=2048)
    client, server = pair(small, small)
    stream = client.open_stream("s", b"")
    sent = 0
    while client.try_send_message(stream, b"m" * 100):
        sent += 1
    assert client.resume_held <= 2048
    assert client.send_window(stream) < 100 and client.connection_send_window() < 100
    deliver(client, server)
    deliver(server, client)  # the confirmation frees the room
    assert client.try_send_message(stream, b"m" * 100)
    assert sent >= 10


def test_a_frame_that_fits_once_confirmed_waits_for_the_room_rather_than_being_cut() -> None:
    small = ResumeOptions(timeout=1.0, buffer_size=8192)  # DATA up to 7168, confirmed per 2048
    client, server = pair(small, small)
    stream = client.open_stream("s", b"")
    while client.try_send_message(stream, b"m" * 1000):
        pass
    room = client.send_window(stream)
    assert 0 < room < 1000
    # The whole 1000 bytes fit once the peer confirms: wait rather than send a piece.
    assert client.send_window_for(stream, 1000) == 0
    # What does not fit even then is sent in the parts that fit, and what fits now whole.
    assert client.send_window_for(stream, 6000) == room
    assert client.send_window_for(stream, room) == room
    # What is held unconfirmed is past the peer's threshold, so the room comes back.
    assert client.resume_held > 2048
    deliver(client, server)
    deliver(server, client)
    assert client.send_window_for(stream, 1000) == 1000
    assert client.resume_held == 0


def test_a_position_no_longer_held_cannot_be_resumed_from() -> None:
    small = ResumeOptions(timeout=1.0, buffer_size=4096)
    client, server = pair(small, small)
    stream = client.open_stream("s", b"")
    for _ in range(20):
        assert client.try_send_message(stream, b"m" * 100)
    deliver(client, server)
    deliver(server, client)  # confirmed: the client dropped it
    client.detach()
    assert not client.can_resume_from(0)
    assert client.can_resume_from(client.sent_position)
    assert not client.can_resume_from(client.sent_position + 1)


def test_the_buffer_replays_from_inside_a_chunk() -> None:
    buffer = ResumeBuffer()
    buffer.extend([b"abc", b"def"], 6)
    assert buffer.confirm(2) == 2 and buffer.confirm(1) == 0  # a stale position
    assert [bytes(chunk) for chunk in buffer.replay(4)] == [b"ef"]
    assert (buffer.start, buffer.end, buffer.size, buffer.peak) == (4, 6, 2, 6)
    with pytest.raises(ValueError):
        buffer.confirm(7)


def test_a_confirmation_drops_whole_batches_and_splits_one() -> None:
    buffer = ResumeBuffer()
    first: list[bytes | memoryview] = [b"ab", b"", b"cd"]
    second: list[bytes | memoryview] = [b"ef", memoryview(b"ghij")]
    buffer.extend(first, 4)
    buffer.extend([], 0)  # nothing sent: nothing held
    buffer.extend(second, 6)
    assert buffer.confirm(7) == 7  # all of the first batch, and 3 bytes into the second
    assert [bytes(chunk) for chunk in buffer.replay(7)] == [b"hij"]
    assert buffer.confirm(10) == 3 and buffer.size == 0
    assert buffer.replay(10) == []
    # The lists handed over are held as they are, never changed.
    assert first == [b"ab", b"", b"cd"] and [bytes(c) for c in second] == [b"ef", b"ghij"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.lists(st.binary(max_size=7), max_size=6).map(lambda chunks: ("send", chunks)),
            st.tuples(st.just("confirm"), st.floats(0, 1)),
            st.tuples(st.just("replay"), st.floats(0, 1)),
        ),
        max_size=40,
    )
)
def test_the_buffer_holds_what_a_plain_byte_string_would(steps: list[Any]) -> None:
    buffer = ResumeBuffer()
    sent = b""  # everything sent; the buffer must hold sent[start:]
    for kind, argument in steps:
        if kind == "send":
            chunks: list[bytes | memoryview] = [
                memoryview(chunk) if index % 2 else chunk for index, chunk in enumerate(argument)
            ]
            size = sum(map(len, chunks))
            buffer.extend(chunks, size)
            sent += b"".join(argument)
            continue
        # Anywhere from a stale position to the end.
        position = round(argument * len(sent))
        before = buffer.start
        if kind == "confirm":
            assert buffer.confirm(position) == max(0, position - before)
        else:
            assert buffer.holds(position) == (position >= before)
            if position < before:
                continue
            assert b"".join(buffer.replay(position)) == sent[position:]
        assert buffer.start == max(before, position)
        assert (buffer.end, buffer.size) == (len(sent), len(sent) - buffer.start)
    assert b"".join(buffer.replay(buffer.start)) == sent[buffer.start :]


def test_a_confirmation_beyond_what_was_sent_is_a_protocol_error() -> None:
    client, _ = pair()
    with pytest.raises(RemoteProtocolError) as caught:
        client.receive_data(encode_frame(FrameType.WINDOW, 0, 0, pack_position_window(0, 99)))
    assert caught.value.code == ErrorCode.PROTOCOL_ERROR
    _, code, _ = decode_goaway(frames(out(client))[-1][3])
    assert code == ErrorCode.PROTOCOL_ERROR


def test_a_short_connection_window_on_a_resumable_link_is_a_protocol_error() -> None:
    client, _ = pair()
    with pytest.raises(RemoteProtocolError, match="12 bytes"):
        client.receive_data(encode_frame(FrameType.WINDOW, 0, 0, (5).to_bytes(4, "big")))


# ------------------------------------------------- random cuts, exact delivery


class Wire:
    """Two resumable connections and the bytes in flight between them."""

    def __init__(self, buffer_size: int) -> None:
        options = ResumeOptions(timeout=10.0, buffer_size=buffer_size)
        self.conns = {
            "c": Connection(initiator=True, resume=options),
            "s": Connection(initiator=False, resume=options),
        }
        self.flight = {"c": bytearray(), "s": bytearray()}  # bytes sent by each side
        self.sent: dict[tuple[str, int], list[bytes]] = {}
        self.received: dict[tuple[str, int], list[bytes]] = {}
        self.pending: dict[tuple[str, int], list[bytes]] = {}
        self.limit = buffer_size
        self.cuts = 0
        for _ in range(2):
            self.write("c")
            self.deliver("c", 1 << 20)
            self.write("s")
            self.deliver("s", 1 << 20)
        streams = [("c", self.conns["c"].open_stream("a", b"")) for _ in range(2)]
        streams.append(("s", self.conns["s"].open_stream("b", b"")))
        for key in streams:
            self.sent[key] = []
            self.pending[key] = []

    @staticmethod
    def other(side: str) -> str:
        return "s" if side == "c" else "c"

    def write(self, side: str) -> None:
        self.flight[side] += out(self.conns[side])

    def deliver(self, side: str, size: int) -> None:
        data = bytes(self.flight[side][:size])
        del self.flight[side][:size]
        if not data:
            return
        receiver = self.other(side)
        for event in self.conns[receiver].receive_data(data):
            if isinstance(event, MessageReceived):
                key = (side, event.stream_id)
                self.received.setdefault(key, []).append(event.data)
                self.conns[receiver].acknowledge(event.stream_id, event.credit)
            else:
                assert not isinstance(event, ConnectionTerminated), event

    def send(self, index: int, size: int) -> None:
        key = list(self.sent)[index % len(self.sent)]
        side, stream = key
        number = len(self.sent[key]) + len(self.pending[key])
        self.pending[key].append(f"{side}{stream}#{number}:".encode().ljust(size, b"."))
        self.flush()

    def flush(self) -> None:
        for (side, stream), queue in self.pending.items():
            conn = self.conns[side]
            while queue and conn.try_send_message(stream, queue[0]):
                self.sent[side, stream].append(queue.pop(0))
            assert conn.resume_held <= self.limit, (conn.resume_held, self.limit, side)

    def cut(self) -> None:
        """Everything in flight is lost, both ways; the client resumes at once."""
        self.cuts += 1
        self.flight = {"c": bytearray(), "s": bytearray()}
        client, server = self.conns["c"], self.conns["s"]
        client.detach()
        server.detach()
        client.begin_resume()
        fresh = Connection(initiator=False, resume=ResumeOptions(timeout=10.0))
        (request,) = deliver(client, fresh)
        assert isinstance(request, ResumeRequested)
        assert request.token == server.resume_token
        assert server.can_resume_from(request.position)
        server.accept_resume(request.position)

    def settle(self) -> None:
        for _ in range(200):
            self.flush()
            self.write("c")
            self.write("s")
            if not self.flight["c"] and not self.flight["s"]:
                if not any(self.pending.values()):
                    return
                self.conns["c"].confirm_position()
                self.conns["s"].confirm_position()
            self.deliver("c", 1 << 30)
            self.deliver("s", 1 << 30)
        raise AssertionError("the connections did not settle")


operations = st.lists(
    st.one_of(
        st.tuples(st.just("send"), st.integers(0, 2), st.integers(16, 600)),
        st.tuples(st.just("write"), st.sampled_from("cs"), st.just(0)),
        st.tuples(st.just("deliver"), st.sampled_from("cs"), st.integers(1, 3000)),
        st.tuples(st.just("confirm"), st.sampled_from("cs"), st.just(0)),
        st.tuples(st.just("cut"), st.just(""), st.just(0)),
    ),
    min_size=10,
    max_size=200,
)


@settings(max_examples=150, deadline=None)
@given(buffer_size=st.sampled_from([1024, 2048, 8192, 1 << 20]), ops=operations)
def test_random_cuts_deliver_every_message_once_in_order(
    buffer_size: int, ops: list[tuple[str, Any, int]]
) -> None:
    wire = Wire(buffer_size)
    for op, arg, size in ops:
        if op == "send":
            wire.send(arg, size)
        elif op == "write":
            wire.write(arg)
        elif op == "deliver":
            wire.deliver(arg, size)
        elif op == "confirm":
            wire.conns[arg].confirm_position()
        else:
            wire.cut()
    wire.settle()
    assert sum(len(messages) for messages in wire.sent.values()) == sum(
        1 for op, _, _ in ops if op == "send"
    )
    for key, messages in wire.sent.items():
        assert wire.received.get(key, []) == messages, key
    client, server = wire.conns["c"], wire.conns["s"]
    assert client.received_position == server.sent_position
    assert server.received_position == client.sent_position
    assert not client.closed and not server.closed
