"""Flow-control windows on their own: the crediting rules of docs/protocol.md, section 10."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from wire_helpers import copy_windows, windows_fields

from chanserv_trio.wire._settings import MAX_WINDOW
from chanserv_trio.wire._windows import Windows

HYPOTHESIS = settings(max_examples=300, deadline=None)


def test_sending_spends_and_window_frames_grant() -> None:
    windows = Windows(send=100, receive=1000)
    windows.spend(60)
    assert windows.send == 40
    assert windows.granted(500) and windows.send == 540
    assert not windows.granted(MAX_WINDOW)  # beyond 2**31 - 1: a flow-control error


def test_a_consumed_message_is_credited_in_quarter_window_steps() -> None:
    windows = Windows(send=0, receive=1000)
    assert windows.message(100) == 100
    assert windows.message(200) == 200
    assert windows.receive == 700 and windows.buffered == 300
    assert windows.consume(100) == 0  # 100 owed: below a quarter of the window
    assert windows.consume(200) == 300  # 300 owed: granted, and counted in receive
    assert windows.receive == 1000 and windows.owed == 0 and windows.buffered == 0


def test_chunks_are_credited_on_arrival_only_while_nothing_is_held() -> None:
    windows = Windows(send=0, receive=1000)
    assert windows.chunk(400) == 400  # nothing held: credited at once
    assert windows.message(100) == 500  # the whole message is held: its credit is 500
    assert windows.chunk(300) == 0  # something is held: this chunk waits
    # Consuming the message earns what its chunks did not (100), plus the chunk that
    # waited meanwhile (300), now that nothing is held any more.
    assert windows.consumed(500) == 100 + 300
    assert windows.assembly == windows.assembly_credited == 300


def test_owed_credit_is_granted_once_it_reaches_a_quarter_of_the_window() -> None:
    connection = Windows(send=0, receive=1000)
    connection.receive -= 200  # what the connection does as DATA is handed off
    connection.owed += 200
    assert connection.due() == 0
    connection.receive -= 50
    connection.owed += 50
    assert connection.due() == 250 and connection.receive == 1000 and connection.owed == 0


def test_a_larger_window_is_granted_at_once_a_smaller_one_withholds_credit() -> None:
    windows = Windows(send=0, receive=1000)
    assert windows.resize(1500) == 500 and windows.receive == 1500
    assert windows.resize(1000) == 0 and windows.debt == 500
    windows.message(800)
    assert windows.consume(600) == 0  # 500 withheld, 100 owed
    assert windows.debt == 0 and windows.owed == 100
    assert windows.resize(1200) == 200  # no debt left: all of the growth is granted


def test_settling_counts_credit_as_granted_without_a_frame() -> None:
    windows = Windows(send=0, receive=1000)
    windows.message(600)
    assert windows.consume(100) == 0
    windows.settle(windows.consumed(500))
    assert windows.owed == 0 and windows.receive == 1000


windows_states = st.builds(
    lambda held, prepaid, assembly, credited, debt, owed: _windows(
        held, min(prepaid, held), assembly, min(credited, assembly), debt, owed
    ),
    st.integers(0, 5000),
    st.integers(0, 5000),
    st.integers(0, 5000),
    st.integers(0, 5000),
    st.sampled_from([0, 0, 100, 3000]),
    st.integers(0, 200),
)


def _windows(
    held: int, prepaid: int, assembly: int, credited: int, debt: int, owed: int
) -> Windows:
    windows = Windows(send=0, receive=1000)
    windows.held, windows.prepaid, windows.debt, windows.owed = held, prepaid, debt, owed
    windows.assembly, windows.assembly_credited = assembly, credited
    return windows


@HYPOTHESIS
@given(windows_states, st.integers(1, 6000))
def test_consume_is_consumed_then_owe(windows: Windows, credit: int) -> None:
    twin = copy_windows(windows)
    assert windows.consume(credit) == twin.owe(twin.consumed(credit))
    assert windows_fields(windows) == windows_fields(twin)


@HYPOTHESIS
@given(
    st.lists(st.integers(1, 3000), min_size=1, max_size=40),
    st.sets(st.integers(0, 39)),
    st.integers(1024, 8192),
)
def test_a_reader_that_stops_buffers_at_most_the_window_plus_one_message(
    chunk_sizes: list[int], ends: set[int], window: int
) -> None:
    """A sender that spends all the credit it gets, a reader that consumes nothing."""
    receiver = Windows(send=0, receive=window)
    sender_credit = window
    largest_message = message = 0
    for index, wanted in enumerate(chunk_sizes):
        size = min(wanted, sender_credit)
        if not size:
            break
        sender_credit -= size
        message += size
        if index in ends:
            receiver.message(size)
            largest_message = max(largest_message, message)
            message = 0
        else:
            sender_credit += receiver.owe(receiver.chunk(size))
        largest_message = max(largest_message, message)
        assert receiver.buffered <= window + largest_message
        assert sender_credit == receiver.receive
