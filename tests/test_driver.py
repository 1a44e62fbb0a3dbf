"""The trio driver (Link, LinkStream) and Multiplexer.attach over in-memory streams."""

from __future__ import annotations

import ast
import gc
from functools import partial
from pathlib import Path

import pytest
import trio
import trio.testing
from helpers import drain, link_pair, wait_until

import chanserv_trio as cs
from chanserv_trio.link._options import LinkOptions
from chanserv_trio.wire._codec import (
    HEADER,
    ErrorCode,
    FrameType,
    Status,
    encode_frame,
)
from chanserv_trio.wire._connection import Connection
from chanserv_trio.wire._events import ConnectionTerminated

SMALL = cs.Settings(initial_stream_window=4096, max_frame_payload=1024)


async def echo(stream: cs.LinkStream) -> None:
    while True:
        try:
            message = await stream.receive()
        except trio.EndOfChannel:
            return
        await stream.send(message)


# ------------------------------------------------------------------- basics


async def test_handshake_then_echo_keeps_message_boundaries() -> None:
    messages = [b"", b"a", b"hello", bytes(range(256)) * 40, b""]
    async with link_pair(right_handlers={"echo": echo}) as pair:
        assert pair.left.conn.handshake_done and pair.right.conn.handshake_done
        stream = await pair.left.open_stream("echo", b"hdr")
        assert stream.stream_id % 2 == 1  # the dialing side opens odd ids
        with trio.fail_after(5):
            for message in messages:
                await stream.send(message)
            stream.end()
            assert await drain(stream) == messages


async def test_memoryview_and_bytearray_are_sent_as_bytes() -> None:
    async with link_pair(right_handlers={"echo": echo}) as pair:
        stream = await pair.left.open_stream("echo", b"")
        with trio.fail_after(5):
            await stream.send(bytearray(b"ba"))
            await stream.send(memoryview(b"xmvx")[1:3])
            stream.end()
            got = await drain(stream)
    assert got == [b"ba", b"mv"]
    assert all(type(message) is bytes for message in got)


async def test_service_sees_header_and_peer_can_open_streams_too() -> None:
    seen: list[tuple[str, bytes, int]] = []

    async def record(stream: cs.LinkStream) -> None:
        seen.append((stream.service, stream.header, stream.stream_id))
        await stream.send(b"hi " + stream.header)

    async with link_pair(left_handlers={"L": record}, right_handlers={"R": record}) as pair:
        with trio.fail_after(5):
            to_right = await pair.left.open_stream("R", b"from left", local_open=False)
            to_left = await pair.right.open_stream("L", b"from right", local_open=False)
            assert await drain(to_right) == [b"hi from left"]
            assert await drain(to_left) == [b"hi from right"]
    assert sorted(seen) == [("L", b"from right", 2), ("R", b"from left", 1)]


async def test_message_split_into_data_chunks_arrives_whole() -> None:
    message = bytes(range(256)) * 16  # 4 KiB: exactly the window, four DATA frames
    async with link_pair(
        right_handlers={"echo": echo}, left_settings=SMALL, right_settings=SMALL
    ) as pair:
        stream = await pair.left.open_stream("echo", b"")
        with trio.fail_after(5):
            await stream.send(message)
            assert await stream.receive() == message


async def test_many_chunked_messages_on_one_stream_do_not_run_out_of_credit(
    autojump_clock: trio.abc.Clock,
) -> None:
    # Each message is two DATA frames; credit for the first must come back too, or
    # the stream runs dry after a few messages (autojump makes a stall fail at once).
    with trio.fail_after(60):
        async with link_pair(
            right_handlers={"echo": echo}, left_settings=SMALL, right_settings=SMALL
        ) as pair:
            stream = await pair.left.open_stream("echo", b"")
            for index in range(8):
                message = bytes([index]) * 1025  # two DATA frames, well under the window
                await stream.send(message)
                assert await stream.receive() == message


async def test_message_larger_than_the_window_arrives_whole(
    autojump_clock: trio.abc.Clock,
) -> None:
    big = bytes(range(256)) * 1024  # 256 KiB: 64 windows, 256 DATA frames
    sizes = [1023, 1024, 1025, 4095, 4096, 4097, len(big)]
    with trio.fail_after(60):
        async with link_pair(
            right_handlers={"echo": echo}, left_settings=SMALL, right_settings=SMALL
        ) as pair:
            stream = await pair.left.open_stream("echo", b"")
            async with trio.open_nursery() as nursery:

                async def send_all() -> None:
                    for size in sizes:
                        await stream.send(big[:size])
                    stream.end()

                nursery.start_soon(send_all)
                got = await drain(stream)
    assert [len(message) for message in got] == sizes
    assert all(message == big[: len(message)] for message in got)


async def test_receive_nowait_and_receive_buffered() -> None:
    async def three(stream: cs.LinkStream) -> None:
        for message in (b"1", b"2", b"3"):
            await stream.send(message)

    async with link_pair(right_handlers={"three": three}) as pair:
        stream = await pair.left.open_stream("three", b"", local_open=False)
        with pytest.raises(trio.WouldBlock):
            stream.receive_nowait()
        with trio.fail_after(5):
            await wait_until(lambda: stream.remote_status is not None)
        assert stream.receive_nowait() == b"1"
        assert stream.receive_buffered(1) == [b"2"]
        assert stream.receive_buffered() == [b"3"]
        assert stream.receive_buffered() == []
        with pytest.raises(trio.EndOfChannel):
            stream.receive_nowait()


async def test_a_receiver_waits_without_holding_an_exception() -> None:
    # A task parked inside an ``except`` block keeps the exception and its traceback
    # alive for the whole wait, which the garbage collector then promotes: every
    # waiting reader would carry one.
    got: list[bytes] = []

    async def wait_for_one(stream: cs.LinkStream) -> None:
        got.append(await stream.receive())

    def held() -> int:
        return sum(isinstance(obj, trio.WouldBlock) for obj in gc.get_objects())

    before = held()
    async with link_pair(right_handlers={"wait": wait_for_one}) as pair:
        stream = await pair.left.open_stream("wait", b"")
        await trio.testing.wait_all_tasks_blocked()
        assert not got  # the handler is waiting in receive()
        assert held() == before
        with trio.fail_after(5):
            await stream.send(b"now")
            await wait_until(lambda: got == [b"now"])


async def test_a_stream_is_a_trio_channel_read_with_async_for() -> None:
    received: list[bytes] = []

    async def collect(stream: cs.LinkStream) -> None:
        async for message in stream:
            received.append(message)
        await stream.send(b"%d messages" % len(received))

    async with link_pair(right_handlers={"collect": collect}) as pair:
        stream = await pair.left.open_stream("collect", b"")
        assert isinstance(stream, trio.abc.Channel)
        with trio.fail_after(5):
            for message in (b"a", b"", b"c"):
                await stream.send(message)
            stream.end()
            replies = [message async for message in stream]
    assert received == [b"a", b"", b"c"]
    assert replies == [b"3 messages"]


async def test_async_for_over_a_stream_raises_how_it_ended_unless_ok() -> None:
    async def refuse(stream: cs.LinkStream) -> None:
        await stream.send(b"first")
        stream.end(Status(ErrorCode.APPLICATION_ERROR, "ValueError", "no thanks"))

    async with link_pair(right_handlers={"refuse": refuse}) as pair:
        stream = await pair.left.open_stream("refuse", b"", local_open=False)
        got: list[bytes] = []
        with trio.fail_after(5), pytest.raises(cs.RemoteError, match="no thanks"):
            async for message in stream:
                got.append(message)
    assert got == [b"first"]


async def test_leaving_async_with_a_stream_resets_it_and_cancels_the_handler() -> None:
    started = trio.Event()
    cancelled = trio.Event()

    async def wait(stream: cs.LinkStream) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            cancelled.set()

    async with link_pair(right_handlers={"wait": wait}) as pair:
        with trio.fail_after(5):
            async with await pair.left.open_stream("wait", b"") as stream:
                await started.wait()
            await cancelled.wait()
        with pytest.raises(trio.ClosedResourceError):
            await stream.send(b"late")


# ------------------------------------------------------------- end statuses


async def test_unknown_service_raises_service_not_found() -> None:
    async with link_pair() as pair:
        stream = await pair.left.open_stream("nobody", b"")
        with trio.fail_after(5), pytest.raises(cs.ServiceNotFound, match="nobody"):
            await stream.receive()


@pytest.mark.parametrize(
    ("status", "error_type"),
    [
        (Status(ErrorCode.APPLICATION_ERROR, "ValueError", "bad input"), cs.RemoteError),
        (Status(ErrorCode.TIMEOUT, "", "too slow"), cs.DeadlineExceeded),
        (Status(ErrorCode.SHUTDOWN, "", "bye"), cs.ServerShuttingDown),
        (Status(ErrorCode.CANCEL, "", "no more"), cs.StreamCancelled),
        (Status(ErrorCode.REFUSED_STREAM, "", "refused"), cs.StreamError),
    ],
)
async def test_end_status_becomes_typed_error_after_the_messages(
    status: Status, error_type: type[cs.StreamError]
) -> None:
    async def fail(stream: cs.LinkStream) -> None:
        await stream.send(b"before")
        stream.end(status)

    async with link_pair(right_handlers={"fail": fail}) as pair:
        stream = await pair.left.open_stream("fail", b"", local_open=False)
        with trio.fail_after(5):
            assert await stream.receive() == b"before"
            with pytest.raises(error_type) as info:
                await stream.receive()
    assert type(info.value) is error_type
    assert info.value.code == status.code
    assert info.value.message.endswith(status.message)
    if error_type is cs.RemoteError:
        assert info.value.kind == "ValueError"


async def test_handler_exception_is_reported_and_resets_the_stream() -> None:
    reported: list[BaseException] = []

    async def broken(stream: cs.LinkStream) -> None:
        raise KeyError("boom")

    async with link_pair(right_handlers={"broken": broken}, on_error=reported.append) as pair:
        stream = await pair.left.open_stream("broken", b"")
        with trio.fail_after(5), pytest.raises(cs.StreamError) as info:
            await stream.receive()
        assert pair.left.is_alive and pair.right.is_alive
    assert info.value.code == ErrorCode.INTERNAL_ERROR
    assert "KeyError" in str(info.value)
    assert len(reported) == 1 and isinstance(reported[0], KeyError)


async def test_peer_reset_cancels_handler_and_fails_its_send() -> None:
    started = trio.Event()
    handler_cancelled = trio.Event()

    async def stuck(stream: cs.LinkStream) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            handler_cancelled.set()

    async with link_pair(right_handlers={"stuck": stuck}) as pair:
        stream = await pair.left.open_stream("stuck", b"")
        with trio.fail_after(5):
            await started.wait()
            stream.reset(ErrorCode.CANCEL, "changed my mind")
            await handler_cancelled.wait()
            await wait_until(lambda: pair.right.statistics().open_streams == 0)
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive()
        with pytest.raises(trio.ClosedResourceError):
            await stream.send(b"x")


async def test_sender_waiting_for_credit_sees_peer_reset() -> None:
    async def refuse(stream: cs.LinkStream) -> None:
        await wait_until(lambda: stream.link.conn.buffered_bytes() >= 3000)
        stream.reset(ErrorCode.CANCEL, "not reading that")

    async with link_pair(
        right_handlers={"refuse": refuse}, left_settings=SMALL, right_settings=SMALL
    ) as pair:
        stream = await pair.left.open_stream("refuse", b"")
        with trio.fail_after(5), pytest.raises(cs.StreamCancelled, match="not reading that"):
            for _ in range(100):
                await stream.send(b"x" * 1000)
        assert pair.left.statistics().window_stalls > 0
        with trio.fail_after(5):
            await wait_until(lambda: pair.left.statistics().open_streams == 0)


async def test_cancelled_in_the_middle_of_a_message_resets_the_stream() -> None:
    outcome: list[BaseException] = []
    done = trio.Event()

    async def sink(stream: cs.LinkStream) -> None:
        try:
            await stream.receive()
        except BaseException as exc:
            outcome.append(exc)
            raise
        finally:
            done.set()

    async with link_pair(
        right_handlers={"sink": sink}, left_settings=SMALL, right_settings=SMALL
    ) as pair:
        # Shipping 50 MiB in 1 KiB frames takes far longer than the deadline, so the
        # sender is cut off with part of the message sent.
        stream = await pair.left.open_stream("sink", b"")
        with trio.move_on_after(0.05) as scope:
            await stream.send(b"z" * (50 << 20))
        assert scope.cancelled_caught
        with trio.fail_after(5):
            await done.wait()
            await wait_until(lambda: pair.right.statistics().open_streams == 0)
        with pytest.raises(trio.ClosedResourceError):
            await stream.send(b"more")
    # The handler never got the partial message: the reset either woke its receive
    # with the error or cancelled it (the peer's reset cancels a handler's scope).
    assert len(outcome) == 1
    assert isinstance(outcome[0], cs.StreamCancelled | trio.Cancelled)


async def test_send_after_end_and_receive_after_close_are_closed_resource_errors() -> None:
    async with link_pair(right_handlers={"echo": echo}) as pair:
        stream = await pair.left.open_stream("echo", b"")
        stream.end()
        with pytest.raises(trio.ClosedResourceError):
            await stream.send(b"late")
        with trio.fail_after(5):
            assert await drain(stream) == []
        other = await pair.left.open_stream("echo", b"")
        await other.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await other.receive()


async def test_receive_after_aclose_is_closed_even_with_messages_buffered() -> None:
    async def two(stream: cs.LinkStream) -> None:
        await stream.send(b"1")
        await stream.send(b"2")

    async with link_pair(right_handlers={"two": two}) as pair:
        stream = await pair.left.open_stream("two", b"", local_open=False)
        with trio.fail_after(5):
            await wait_until(lambda: stream.remote_status is not None)
        await stream.aclose()
        with pytest.raises(trio.ClosedResourceError):
            await stream.receive()


async def test_a_stream_opened_with_our_half_closed_refuses_sending() -> None:
    async with link_pair(right_handlers={"echo": echo}) as pair:
        stream = await pair.left.open_stream("echo", b"", local_open=False)
        with pytest.raises(trio.ClosedResourceError):
            await stream.send(b"x")


# -------------------------------------------------------------- limits


async def test_message_and_header_over_the_peers_limits_raise_message_too_large() -> None:
    limits = cs.Settings(max_message_size=2048, max_open_payload=100)
    async with link_pair(right_handlers={"echo": echo}, right_settings=limits) as pair:
        with pytest.raises(cs.MessageTooLarge):
            await pair.left.open_stream("echo", b"h" * 101)
        stream = await pair.left.open_stream("echo", b"h" * 100)
        with pytest.raises(cs.MessageTooLarge):
            await stream.send(b"m" * 2049)
        # The stream is still usable after the refusal.
        with trio.fail_after(5):
            await stream.send(b"m" * 2048)
            assert await stream.receive() == b"m" * 2048


async def test_concurrent_stream_limit_parks_the_opener_until_one_closes() -> None:
    limits = cs.Settings(max_concurrent_streams=2)
    async with link_pair(right_handlers={"echo": echo}, right_settings=limits) as pair:
        first = await pair.left.open_stream("echo", b"")
        await pair.left.open_stream("echo", b"")
        with trio.move_on_after(0.05) as scope:
            await pair.left.open_stream("echo", b"")
        assert scope.cancelled_caught  # parked at the limit
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                opened: list[cs.LinkStream] = []

                async def open_third() -> None:
                    opened.append(await pair.left.open_stream("echo", b"third"))

                nursery.start_soon(open_third)
                await trio.testing.wait_all_tasks_blocked()
                assert not opened
                first.end()  # echo's handler finishes, the stream closes both ways
        assert opened and opened[0].header == b"third"


# ---------------------------------------------------- flow control, fairness


async def test_unread_stream_stalls_only_itself() -> None:
    window = SMALL.initial_stream_window
    finished: dict[bytes, trio.Event] = {b"ignored": trio.Event(), b"read": trio.Event()}

    async def produce(stream: cs.LinkStream) -> None:
        for index in range(200):
            await stream.send(index.to_bytes(4, "big") * 64)  # 256 bytes each
        stream.end()
        finished[stream.header].set()

    async with link_pair(
        right_handlers={"produce": produce}, left_settings=SMALL, right_settings=SMALL
    ) as pair:
        ignored = await pair.left.open_stream("produce", b"ignored", local_open=False)
        read = await pair.left.open_stream("produce", b"read", local_open=False)
        with trio.fail_after(5):
            got = await drain(read)
            await finished[b"read"].wait()
        assert got == [index.to_bytes(4, "big") * 64 for index in range(200)]
        assert not finished[b"ignored"].is_set()
        stats = pair.left.statistics()
        assert stats.bytes_buffered <= window
        assert pair.right.statistics().window_stalls > 0
        with trio.fail_after(5):
            late = await drain(ignored)
            await finished[b"ignored"].wait()
        assert late == got


async def test_buffered_bytes_stay_within_the_window() -> None:
    async def flood(stream: cs.LinkStream) -> None:
        for _ in range(100):
            await stream.send(b"f" * 300)

    async with link_pair(
        right_handlers={"flood": flood}, left_settings=SMALL, right_settings=SMALL
    ) as pair:
        stream = await pair.left.open_stream("flood", b"", local_open=False)
        with trio.fail_after(5):
            await wait_until(lambda: pair.right.statistics().window_stalls > 0)
            await trio.testing.wait_all_tasks_blocked()
        assert 0 < pair.left.statistics().bytes_buffered <= SMALL.initial_stream_window
        await stream.aclose()


async def test_writes_are_coalesced_into_few_send_all_calls() -> None:
    async with link_pair(right_handlers={"echo": echo}) as pair:
        streams = [await pair.left.open_stream("echo", b"") for _ in range(50)]
        with trio.fail_after(5):
            await trio.testing.wait_all_tasks_blocked()
        calls = 0
        send_stream = pair.left_transport.send_stream
        original = send_stream.send_all_hook

        async def counting_hook() -> None:
            nonlocal calls
            calls += 1
            if original is not None:
                await original()

        send_stream.send_all_hook = counting_hook
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                for stream in streams:
                    nursery.start_soon(stream.send, b"ping")
            for stream in streams:
                assert await stream.receive() == b"ping"
        assert pair.left.statistics().messages_out >= 50
        assert 1 <= calls <= 5


# ------------------------------------------------------------- child streams


async def test_child_streams_arrive_with_headers_then_end_of_channel() -> None:
    async def parent(stream: cs.LinkStream) -> None:
        for index in range(3):
            child = await stream.open_child(b"child %d" % index)
            await child.send(b"payload %d" % index)
            child.end()
        stream.end()

    async with link_pair(right_handlers={"parent": parent}) as pair:
        master = await pair.left.open_stream("parent", b"", local_open=False)
        with trio.fail_after(5):
            children = [await master.receive_child() for _ in range(3)]
            with pytest.raises(trio.EndOfChannel):
                await master.receive_child()
            for index, child in enumerate(children):
                assert child.header == b"child %d" % index
                assert child.parent == master.stream_id
                assert child.service == ""
                assert child.remote_addr == "memory://right"
                assert await drain(child) == [b"payload %d" % index]
            await wait_until(lambda: pair.left.statistics().open_streams == 0)
        assert pair.right.statistics().open_streams == 0


# ---------------------------------------------------------- link lifetime


async def test_transport_closed_fails_pending_receive_with_connection_lost() -> None:
    started = trio.Event()

    async def silent(stream: cs.LinkStream) -> None:
        started.set()
        await trio.sleep_forever()

    async with link_pair(right_handlers={"silent": silent}) as pair:
        stream = await pair.left.open_stream("silent", b"")
        with trio.fail_after(5):
            await started.wait()
            await pair.right_transport.aclose()
            with pytest.raises(cs.ConnectionLost):
                await stream.receive()
            await wait_until(lambda: not pair.left.is_alive)
        assert isinstance(pair.left.error, cs.ConnectionLost)
        with pytest.raises(cs.ConnectionLost):
            await pair.left.open_stream("silent", b"")
        with pytest.raises(cs.ConnectionLost):
            await stream.send(b"x")


async def test_link_aclose_says_goodbye_and_peer_sees_connection_lost() -> None:
    started = trio.Event()
    handler_cancelled = trio.Event()

    async def silent(stream: cs.LinkStream) -> None:
        started.set()
        try:
            await trio.sleep_forever()
        finally:
            handler_cancelled.set()

    async with link_pair(left_handlers={"silent": silent}) as pair:
        stream = await pair.right.open_stream("silent", b"")
        with trio.fail_after(5):
            await started.wait()
            await pair.left.aclose()
            with pytest.raises(cs.ConnectionLost):
                await stream.receive()
            await handler_cancelled.wait()
            await wait_until(lambda: not pair.right.is_alive)
        assert not pair.left.is_alive
        assert pair.right.conn.peer_goaway is not None


async def test_ping_measures_round_trip_time() -> None:
    async with link_pair() as pair:
        assert pair.left.statistics().rtt is None
        pair.left.ping()
        with trio.fail_after(5):
            await wait_until(lambda: pair.left.rtt is not None)
        rtt = pair.left.statistics().rtt
        assert rtt is not None and rtt >= 0


async def test_statistics_count_messages_bytes_and_open_streams() -> None:
    async with link_pair(right_handlers={"echo": echo}) as pair:
        stream = await pair.left.open_stream("echo", b"")
        assert pair.left.statistics().open_streams == 1
        with trio.fail_after(5):
            for _ in range(10):
                await stream.send(b"0123456789")
                await stream.receive()
            stream.end()
            assert await drain(stream) == []
            await wait_until(lambda: pair.right.statistics().open_streams == 0)
        left, right = pair.left.statistics(), pair.right.statistics()
        assert left.open_streams == 0
        assert left.messages_out == right.messages_in == 10
        assert left.messages_in == right.messages_out == 10
        assert left.bytes_out > 100 and right.bytes_in == left.bytes_out
        assert left.bytes_buffered == right.bytes_buffered == 0


async def test_handshake_timeout_is_connection_lost(autojump_clock: trio.abc.Clock) -> None:
    ours, _theirs = trio.testing.memory_stream_pair()  # the peer never speaks
    link = cs.Link(ours, LinkOptions(handshake_timeout=3.0), initiator=True)
    start = trio.current_time()
    with pytest.raises(cs.ConnectionLost, match="handshake timed out"):
        await link.run()
    assert trio.current_time() - start == pytest.approx(3.0)


async def test_keepalive_declares_a_silent_peer_lost(autojump_clock: trio.abc.Clock) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link = cs.Link(
        ours, LinkOptions(keepalive_interval=1.0, keepalive_timeout=2.0), initiator=True
    )
    peer = Connection(initiator=False)
    await theirs.send_all(b"".join(peer.take_outgoing()))  # HELLO, then silence
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        start = trio.current_time()
        with trio.fail_after(60):
            await link._closed.wait()
        nursery.cancel_scope.cancel()
    assert isinstance(link.error, cs.ConnectionLost)
    assert "keepalive" in str(link.error)
    assert 3.0 <= trio.current_time() - start <= 5.0


async def test_garbage_from_the_peer_is_a_protocol_error_sent_back_in_goaway() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    reported: list[BaseException] = []
    link = cs.Link(ours, LinkOptions(on_error=reported.append), initiator=True)
    peer = Connection(initiator=False)
    await theirs.send_all(b"".join(peer.take_outgoing()))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await theirs.send_all(encode_frame(99, 0, 0, b"?"))  # type: ignore[arg-type]
            await link._closed.wait()
        received = b""
        while chunk := await theirs.receive_some():
            received += chunk
    assert isinstance(link.error, cs.ProtocolError)
    assert link.error.code == ErrorCode.PROTOCOL_ERROR
    assert len(reported) == 1 and isinstance(reported[0], cs.ProtocolError)
    events = peer.receive_data(received)
    terminated = [event for event in events if isinstance(event, ConnectionTerminated)]
    assert terminated and terminated[0].code == ErrorCode.PROTOCOL_ERROR


@pytest.mark.parametrize(("whole_messages", "size"), [(False, 256 * 1024), (True, None)])
async def test_a_link_of_whole_messages_reads_with_no_size_limit(
    whole_messages: bool, size: int | None
) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    asked: list[int | None] = []
    receive_some = ours.receive_some

    async def recording(max_bytes: int | None = None) -> bytes | bytearray:
        asked.append(max_bytes)
        return await receive_some(max_bytes)

    ours.receive_some = recording  # type: ignore[method-assign]
    link = cs.Link(ours, initiator=True, whole_messages=whole_messages)
    peer = Connection(initiator=False)
    await theirs.send_all(b"".join(peer.take_outgoing()))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            nursery.cancel_scope.cancel()
    assert asked and set(asked) == {size}


async def test_first_frame_not_hello_fails_the_handshake() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    link = cs.Link(ours, initiator=True)
    await theirs.send_all(HEADER.pack(0, FrameType.PING, 0, 0))
    with trio.fail_after(5), pytest.raises(cs.ProtocolError, match="HELLO"):
        await link.run()


# ------------------------------------------------------- Multiplexer.attach


async def test_every_link_of_a_multiplexer_runs_with_one_options_object() -> None:
    async with (
        cs.Multiplexer(write_timeout=7.0, reset_burst=3) as hub,
        cs.Multiplexer() as a,
        cs.Multiplexer() as b,
    ):
        with trio.fail_after(5):
            for peer in (a, b):
                ours, theirs = trio.testing.memory_stream_pair()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(peer.attach, theirs, initiator=False))
                    await hub.attach(ours)
        first, second = hub.links
        assert first.options is second.options
        assert first.options.write_timeout == 7.0 and first.options.reset_burst == 3
        assert first.options.settings is hub.settings


async def test_multiplexer_attach_serves_named_services_over_memory_streams() -> None:
    a, b = trio.testing.memory_stream_pair()
    async with cs.Multiplexer() as server, cs.Multiplexer() as client:
        server.handle("echo", echo)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(server.attach, b, initiator=False))
                link = await client.attach(a)
            assert link.is_alive and link.remote_addr == "attached"
            stream = await client.open_stream("echo", b"", dial_timeout=5)
            await stream.send(b"over memory")
            assert await stream.receive() == b"over memory"
            stream.end()
            assert await drain(stream) == []
            await wait_until(lambda: server.statistics().open_streams == 0)
        assert client.links_offering("echo") == [link]
        assert server.statistics().links == client.statistics().links == 1


async def test_multiplexer_attach_carries_chanserv() -> None:
    async def source_fn(request: bytes):  # type: ignore[no-untyped-def]
        for index in range(3):
            yield cs.Source(header=b"%d" % index, frames=_frames(request, index))

    async def _frames(request: bytes, index: int):  # type: ignore[no-untyped-def]
        yield request + b" %d" % index

    a, b = trio.testing.memory_stream_pair()
    async with cs.Multiplexer() as server_mpx, cs.Multiplexer() as client_mpx:
        await cs.Server(server_mpx).listen_and_serve("svc", source_fn)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(server_mpx.attach, b, initiator=False))
                await client_mpx.attach(a)
            client = cs.Client(client_mpx, dial_timeout=5)
            got: dict[bytes, list[bytes]] = {}
            async with client.lookup_and_post("svc", b"req") as sources:
                async for source in sources:
                    assert source.meta.remote_addr == "attached"
                    got[source.header] = [frame async for frame in source]
    assert got == {b"0": [b"req 0"], b"1": [b"req 1"], b"2": [b"req 2"]}


async def test_both_ends_may_attach_with_the_defaults() -> None:
    a, b = trio.testing.memory_stream_pair()
    async with cs.Multiplexer() as left, cs.Multiplexer() as right:
        left.handle("echo", echo)
        right.handle("echo", echo)
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(left.attach, a)
                await right.attach(b)
            # The first request, either way, works (it once failed: "OPEN with bad id").
            for mpx in (left, right, left, right):
                stream = await mpx.open_stream("echo", b"", dial_timeout=5)
                await stream.send(b"hello")
                stream.end()
                assert await drain(stream) == [b"hello"]
        roles = sorted(bool(link.conn.initiator) for link in left.links + right.links)
        assert roles == [False, True]


@pytest.mark.parametrize("role", [True, False])
async def test_two_ends_that_force_the_same_role_fail_the_handshake(role: bool) -> None:
    a, b = trio.testing.memory_stream_pair()
    errors: list[BaseException] = []

    async def attach(mpx: cs.Multiplexer, stream: trio.abc.Stream) -> None:
        try:
            await mpx.attach(stream, initiator=role)
        except cs.ChanservError as exc:
            errors.append(exc)

    async with cs.Multiplexer() as left, cs.Multiplexer() as right:
        with trio.fail_after(5):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(attach, left, a)
                nursery.start_soon(attach, right, b)
        assert left.links == right.links == []
    assert len(errors) == 2
    for error in errors:
        assert isinstance(error, cs.ProtocolError) and error.code == ErrorCode.PROTOCOL_ERROR
        assert "both ends chose the same role" in str(error)


# ---------------------------------------------------------------- structure


def test_link_and_streams_touch_no_private_member_of_each_other() -> None:
    """The link and its streams share state objects (``link._state``); none of the
    link modules reads or writes ``other._name`` of another object."""
    package = Path(cs.__file__).parent
    modules = [
        "link/_link.py",
        "link/_options.py",
        "link/_state.py",
        "link/_stream.py",
        "link/_status.py",
    ]
    foreign: list[str] = []
    for name in modules:
        tree = ast.parse((package / name).read_text())
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Attribute)
                and node.attr.startswith("_")
                and not node.attr.startswith("__")
                and not (isinstance(node.value, ast.Name) and node.value.id == "self")
            ):
                foreign.append(f"{name}:{node.lineno}: {ast.unparse(node)}")
    assert foreign == []
