"""The documentation matches the code.

- ``docs/protocol.md``: its tables (frame types, flags, error codes, settings, HELLO
  fields, the connection and stream state tables) are parsed and compared with the
  enums, ``Settings`` defaults and ``wire._state``, and its worked example is replayed
  byte for byte through two sans-IO ``Connection`` objects.
- ``README.md`` and ``docs/index.md``: every python block that is a complete program
  (it ends in ``trio.run(main)``) runs in-process under ``trio.fail_after``; the README
  tour's output is checked line by line.
- What the page promises of chunks and credit (chunked messages give their credit
  back, a message larger than the window gets through, unread messages stay within
  it), and regressions: defects fixed before, each kept as a plain test that failed
  until its fix. The page names no open defect, so nothing here is an expected failure.
"""

from __future__ import annotations

import inspect
import re
import struct
from collections.abc import AsyncIterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from etcd_fixture import etcd_endpoint

import chanserv_trio as cs
from chanserv_trio import _errors
from chanserv_trio._errors import RemoteProtocolError
from chanserv_trio.chanserv._envelope import NO_DEADLINE, Request, decode_request, encode_request
from chanserv_trio.link import _status as _link_status
from chanserv_trio.wire._codec import (
    FLAGS,
    HEADER_SIZE,
    MAGIC,
    MAX_HELLO_SIZE,
    OPEN_OVERHEAD,
    PROTOCOL_VERSION,
    ErrorCode,
    FrameDecoder,
    FrameType,
    HelloField,
    ResumeSetting,
    Setting,
    Status,
    encode_frame,
)
from chanserv_trio.wire._connection import Connection, Settings
from chanserv_trio.wire._events import MessageReceived, Resumed, ResumeRequested, StreamOpened
from chanserv_trio.wire._resume import ResumeOptions
from chanserv_trio.wire._state import (
    CONNECTION_TRANSITIONS,
    STREAM_TRANSITIONS,
    ConnectionInput,
    ConnectionState,
    StreamInput,
    StreamState,
)

__all__ = ["etcd_endpoint"]  # the fixture, used by name

ROOT = Path(__file__).resolve().parent.parent
PROTOCOL = (ROOT / "docs" / "protocol.md").read_text(encoding="utf-8")


# ---------------------------------------------------------------- parsing helpers


def doc_table(marker: str) -> list[dict[str, str]]:
    """The markdown table right after ``<!-- table: marker -->``, as dicts per row."""
    start = PROTOCOL.index(f"<!-- table: {marker} -->")
    lines = PROTOCOL[start:].splitlines()[1:]
    rows: list[list[str]] = []
    for line in lines:
        if not line.startswith("|"):
            if rows:
                break
            continue
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if not all(set(cell) <= {"-", " "} for cell in cells):
            rows.append(cells)
    header, *body = rows
    return [dict(zip(header, row, strict=True)) for row in body]


def parse_int(text: str) -> int:
    return int(text.replace("`", ""), 0)


# ------------------------------------------------------------------ the tables


def test_frame_type_table_matches_code() -> None:
    documented = {row["type"]: parse_int(row["value"]) for row in doc_table("frame-types")}
    assert documented == {member.name: member.value for member in FrameType}


def test_flag_table_matches_code() -> None:
    documented: dict[tuple[str, str], int] = {}
    for row in doc_table("flags"):
        frame, flag = row["frame"], row["flag"]
        assert frame in FrameType.__members__
        documented[frame, flag] = parse_int(row["bit"])
    in_code = {
        (frame.name, name): int(value)
        for frame, flags in FLAGS.items()
        for name, value in flags.__members__.items()
        if value
    }
    assert documented == in_code


def test_error_code_table_matches_code() -> None:
    rows = doc_table("error-codes")
    assert {row["name"]: parse_int(row["code"]) for row in rows} == {
        member.name: member.value for member in ErrorCode
    }


def test_error_code_table_names_the_exception_a_stream_status_raises() -> None:
    for row in doc_table("error-codes"):
        code = parse_int(row["code"])
        raised = row["exception raised"]
        if code == ErrorCode.OK:
            assert raised.startswith("none")
            continue
        named = dict(re.findall(r"`(\w+)`(?: \((\w+)\))?", raised)[::-1])
        by_scope = {scope: name for name, scope in named.items()}
        scopes = row["scope"]
        if code == ErrorCode.RESUME_REFUSED:
            # Refused resumption ends the link the way a lost transport does.
            assert list(named) == ["ConnectionLost"], row
            continue
        if "stream" not in scopes and "local" not in scopes:
            # Connection-only codes end the link: every stream sees what the GOAWAY
            # stands for (ProtocolError, but AuthenticationFailed for a refused
            # credential).
            error = _link_status.error_from_goaway(code, "text")
            assert list(named) == [type(error).__name__], row
            continue
        expected = by_scope.get("stream") or next(iter(named))
        error = _link_status.error_from_status(Status(code, "Kind", "text"))
        assert type(error).__name__ == expected, row
        assert issubclass(getattr(_errors, expected), _errors.ChanservError)


def test_hello_field_table_matches_code() -> None:
    documented = {row["name"]: parse_int(row["id"]) for row in doc_table("hello-fields")}
    assert documented == {member.name: member.value for member in HelloField}


def state_table(marker: str) -> dict[tuple[str, str], str | None]:
    """A state table of section 6 as ``(state, input) -> next state`` (None: ignored)."""
    table: dict[tuple[str, str], str | None] = {}
    for row in doc_table(marker):
        for column in ("allowed", "ignored"):
            if row[column] == "nothing":
                continue
            for item in row[column].split(", "):
                event, _, next_state = item.partition(" → ")
                outcome = None if column == "ignored" else next_state or row["state"]
                assert (row["state"], event) not in table, item
                table[row["state"], event] = outcome
    return table


def in_code(transitions: Mapping[tuple[Any, Any], Any]) -> dict[tuple[str, str], str | None]:
    return {
        (state.name, event.name): None if outcome is None else outcome.name
        for (state, event), outcome in transitions.items()
    }


def test_connection_state_table_matches_code() -> None:
    assert [row["state"] for row in doc_table("connection-states")] == [
        state.name for state in ConnectionState
    ]
    assert state_table("connection-states") == in_code(CONNECTION_TRANSITIONS)


def test_stream_state_table_matches_code() -> None:
    assert {row["state"] for row in doc_table("stream-states")} == {
        state.name for state in StreamState
    }
    assert state_table("stream-states") == in_code(STREAM_TRANSITIONS)


def test_every_input_of_the_state_tables_is_named_in_the_prose() -> None:
    text = " ".join(PROTOCOL.split())
    for event in [*ConnectionInput, *StreamInput]:
        assert event.name in text, event


def test_settings_table_matches_ids_and_defaults() -> None:
    rows = doc_table("settings")
    defaults = Settings()
    assert {row["name"]: parse_int(row["id"]) for row in rows} == {
        member.name: member.value for member in Setting
    }
    for row in rows:
        assert getattr(defaults, row["name"].lower()) == parse_int(row["default"]), row
    # Every setting is documented; the defaults send all but COMPRESSION (sent only on).
    assert {Setting[row["name"]] for row in rows} == set(Setting)
    assert set(defaults.to_wire()) == set(Setting) - {Setting.COMPRESSION}


def test_resume_settings_table_matches_code() -> None:
    rows = doc_table("resume-settings")
    assert {row["name"]: parse_int(row["id"]) for row in rows} == {
        member.name: member.value for member in ResumeSetting
    }
    # Resumption's ids do not collide with the limits' ids.
    assert not {int(member) for member in ResumeSetting} & {int(member) for member in Setting}


def test_constants_named_in_the_prose() -> None:
    assert HEADER_SIZE == 10 and "10-byte header" in PROTOCOL
    assert MAGIC == b"CSTR" and MAGIC.hex(" ") in PROTOCOL
    assert PROTOCOL_VERSION == 2 and "(currently 2)" in PROTOCOL
    assert f"{MAX_HELLO_SIZE} bytes" in PROTOCOL
    assert f"{NO_DEADLINE:#X}".replace("0X", "0x") in PROTOCOL
    # The OPEN allowance: parent, the longest name and the longest route key.
    assert "max_open_payload + 131078" in PROTOCOL and 4 + 2 + 0xFFFF + 2 + 0xFFFF == 131078
    assert OPEN_OVERHEAD == 131078


def test_open_allowance_lets_the_longest_legal_open_through() -> None:
    settings = Settings(max_frame_payload=1024, max_open_payload=1024)
    client, server = Connection(initiator=True), Connection(initiator=False, settings=settings)
    exchange(client, server)
    client.open_stream("s" * 0xFFFF, b"h" * 1024)
    (opened,) = deliver(client, server)
    assert isinstance(opened, StreamOpened) and len(opened.service) == 0xFFFF
    client.open_stream("s" * 0xFFFF, b"h" * 1024, route_key=b"k" * 0xFFFF)
    (opened,) = deliver(client, server)
    assert isinstance(opened, StreamOpened) and opened.route_key == b"k" * 0xFFFF


# ------------------------------------------------------------ the worked example


def out(conn: Connection) -> bytes:
    return b"".join(bytes(chunk) for chunk in conn.take_outgoing())


def deliver(sender: Connection, receiver: Connection) -> list[Any]:
    """Hand everything ``sender`` queued to ``receiver`` (nothing: no call, as ``b""``
    would mean end of stream)."""
    data = out(sender)
    return receiver.receive_data(data) if data else []


def exchange(a: Connection, b: Connection) -> None:
    deliver(a, b)
    deliver(b, a)


def split_frames(data: bytes) -> list[bytes]:
    decoder = FrameDecoder(1 << 30)
    decoder.feed(data)
    return [
        struct.pack(">IBBI", len(payload), ftype, flags, sid) + payload
        for ftype, flags, sid, payload in decoder.frames()
    ]


def replay_worked_example() -> list[tuple[str, bytes]]:
    """The exchange of section 16, frame by frame, as ``(direction, frame bytes)``."""
    client = Connection(initiator=True)
    server = Connection(initiator=False)
    frames: list[tuple[str, bytes]] = []

    def client_sends() -> list[Any]:
        data = out(client)
        frames.extend(("client -> server", frame) for frame in split_frames(data))
        return server.receive_data(data)

    def server_sends() -> list[Any]:
        data = out(server)
        frames.extend(("server -> client", frame) for frame in split_frames(data))
        return client.receive_data(data)

    client_sends()
    server.advertise("chanserv")
    server_sends()
    client.open_stream("chanserv", encode_request(Request(b"hello", 5.0, {})), local_open=False)
    (opened,) = client_sends()
    assert isinstance(opened, StreamOpened)
    request = decode_request(opened.header)
    assert (request.body, request.timeout, request.tags) == (b"hello", 5.0, {})
    master = opened.stream_id
    first = server.open_stream("", b"source @0", parent=master, remote_open=False)
    second = server.open_stream("", b"source @1", parent=master, remote_open=False)
    server.send_data(first, b"wait for me!")
    server.end_stream(second, Status(ErrorCode.APPLICATION_ERROR, "ValueError", "boom"))
    third = server.open_stream("", b"source @2", parent=master, remote_open=False)
    server.send_data(first, b"ok I'm ready")
    server.end_stream(first)
    server.end_stream(master)
    events = server_sends()
    messages = [event.data for event in events if isinstance(event, MessageReceived)]
    assert messages == [b"wait for me!", b"ok I'm ready"]
    client.reset_stream(third, Status(ErrorCode.CANCEL, "", "source closed by the client"))
    client.ping(bytes(range(8)))
    client_sends()
    server_sends()
    client.go_away(ErrorCode.OK, "bye")
    client_sends()
    return frames


def documented_example() -> list[tuple[str, bytes]]:
    start = PROTOCOL.index("<!-- worked-example -->")
    block = PROTOCOL[start:].split("```text\n", 1)[1].split("```", 1)[0]
    frames: list[tuple[str, bytearray]] = []
    for line in block.splitlines():
        heading = re.match(r"#(\d+) (.+?): (\w+)$", line)
        if heading:
            assert int(heading[1]) == len(frames) + 1
            frames.append((heading[2], bytearray()))
            continue
        hexes = re.match(r"^\s+((?:[0-9a-f]{2} )*[0-9a-f]{2})(?:\s{2,}.*)?$", line)
        if hexes:
            frames[-1][1].extend(bytes.fromhex(hexes[1]))
        else:
            assert not line.strip(), f"unparsed line in the worked example: {line!r}"
    return [(direction, bytes(data)) for direction, data in frames]


def test_worked_example_is_what_the_code_sends() -> None:
    documented = documented_example()
    replayed = replay_worked_example()
    assert len(documented) == len(replayed) == 16
    for number, (doc, code) in enumerate(zip(documented, replayed, strict=True), 1):
        assert doc == code, f"frame #{number}"


def test_worked_example_headings_name_the_frame_types() -> None:
    start = PROTOCOL.index("<!-- worked-example -->")
    names = re.findall(r"^#\d+ .+?: (\w+)$", PROTOCOL[start:], flags=re.M)
    types = [FrameType(frame[4]).name for _, frame in replay_worked_example()]
    assert names == types


def test_window_bytes_in_the_example_notes() -> None:
    client, server = Connection(initiator=True), Connection(initiator=False)
    exchange(client, server)
    stream = server.open_stream("", b"", remote_open=False)
    server.send_data(stream, b"x" * 262144)
    (_, message) = deliver(server, client)
    assert isinstance(message, MessageReceived)
    client.acknowledge(stream, message.credit)
    window = out(client)
    assert window == encode_frame(FrameType.WINDOW, 0, 2, (262144).to_bytes(4, "big"))
    assert f"`{window.hex(' ')}`" in " ".join(PROTOCOL.split())


def test_route_key_bytes_in_the_example_notes() -> None:
    client, server = Connection(initiator=True), Connection(initiator=False)
    exchange(client, server)
    key = b"user-1"
    request = encode_request(Request(b"hello", 5.0, {"bucket": "user-1"}))
    client.open_stream("chanserv", request, local_open=False, route_key=key)
    (frame,) = split_frames(out(client))
    after_service = frame[10 + 4 + 2 + len("chanserv") :]
    shown = after_service[: 2 + len(key)]
    assert shown == len(key).to_bytes(2, "big") + key
    assert f"`{shown.hex(' ')}`" in " ".join(PROTOCOL.split())
    (opened,) = server.receive_data(frame)
    assert isinstance(opened, StreamOpened) and opened.route_key == key
    assert decode_request(opened.header).tags == {"bucket": "user-1"}


def test_chunking_arithmetic_in_the_example_notes() -> None:
    limit = Settings().max_frame_payload
    text = " ".join(PROTOCOL.split())
    assert f"DATA frames of {limit} bytes with flags `01`" in text
    assert f"DATA frame of {3_000_000 - 2 * limit} bytes with flags `00`" in text


# -------------------------------------------------------- the complete programs


def complete_programs(path: Path) -> list[tuple[str, str | None]]:
    """``(program, shown output or None)`` for each block ending in ``trio.run(main)``."""
    text = path.read_text(encoding="utf-8")
    found = re.findall(
        r"```python\n(.*?)```(?:\s*\nOutput:\n\n```text\n(.*?)```)?", text, flags=re.S
    )
    return [
        (program, output or None)
        for program, output in found
        if program.rstrip().endswith("trio.run(main)")
    ]


GUIDE_PROGRAMS = [
    pytest.param(program, output, id=f"{page}-{index}")
    for page in ("index", "operations")
    for index, (program, output) in enumerate(complete_programs(ROOT / "docs" / f"{page}.md"))
]


def run_program(program: str) -> tuple[dict[str, Any], list[tuple[Any, ...]]]:
    """Execute the block without its ``trio.run(main)``; return its namespace and prints."""
    printed: list[tuple[Any, ...]] = []
    source = program.rstrip().removesuffix("trio.run(main)")
    namespace: dict[str, Any] = {
        "__name__": "docs_example",
        "print": lambda *args, **kwargs: printed.append(args),
    }
    exec(compile(source, "<docs example>", "exec"), namespace)
    return namespace, printed


def test_readme_has_the_tour() -> None:
    assert len(complete_programs(ROOT / "README.md")) == 1


def test_guide_has_programs_with_output() -> None:
    assert len(GUIDE_PROGRAMS) >= 4
    assert sum(param.values[1] is not None for param in GUIDE_PROGRAMS) >= 3


@pytest.mark.parametrize(("program", "output"), GUIDE_PROGRAMS)
async def test_guide_program_runs_and_prints_what_is_shown(
    program: str, output: str | None
) -> None:
    namespace, printed = run_program(program)
    with trio.fail_after(15):
        await namespace["main"]()
    for args in printed:
        assert not any(isinstance(arg, BaseException) for arg in args), args
    if output is not None:
        lines = [" ".join(str(arg) for arg in args) for args in printed]
        assert lines == output.splitlines()


async def test_readme_tour_prints_every_source_and_frame() -> None:
    ((program, _),) = complete_programs(ROOT / "README.md")
    namespace, printed = run_program(program)
    with trio.fail_after(15):
        await namespace["main"]()
    headers = [args for args in printed if len(args) == 2]
    frames = [args[0] for args in printed if len(args) == 1]
    assert sorted(header for header, _ in headers) == [b"source @%d" % i for i in range(5)]
    assert all(addr.startswith("tcp://127.0.0.1:") for _, addr in headers)
    assert frames.count(b"wait for me!") == 5 and frames.count(b"ok I'm ready") == 5
    # Every source's first frame arrives before any source's delayed second one.
    assert frames == [b"wait for me!"] * 5 + [b"ok I'm ready"] * 5


# ------------------------------------------------------- chunks and credit


def send_chunked(conn: Connection, stream: int, message: bytes) -> bool:
    """Send one message in chunks as the driver does; False if the window ran out."""
    limit = conn.peer_settings.max_frame_payload
    offset = 0
    while offset < len(message):
        n = min(limit, len(message) - offset, conn.send_window(stream))
        if n == 0:
            return False
        conn.send_data(stream, message[offset : offset + n], more=offset + n < len(message))
        offset += n
    return True


def test_chunked_messages_do_not_leak_stream_credit() -> None:
    client, server = Connection(initiator=True), Connection(initiator=False)
    exchange(client, server)
    stream = server.open_stream("", b"", remote_open=False)
    deliver(server, client)
    for _ in range(8):  # 8 x 300 KiB through a 1 MiB window, each consumed at once
        assert send_chunked(server, stream, b"x" * (300 << 10))
        for event in deliver(server, client):
            if isinstance(event, MessageReceived):
                client.acknowledge(stream, event.credit)
        deliver(client, server)
    assert server.send_window(stream) >= Settings().initial_stream_window // 2


def test_message_larger_than_the_stream_window_gets_through() -> None:
    client = Connection(initiator=True, settings=Settings(initial_stream_window=64 << 10))
    server = Connection(initiator=False)
    exchange(client, server)
    stream = server.open_stream("", b"", remote_open=False)
    deliver(server, client)
    message = b"y" * (256 << 10)
    offset = 0
    received: list[bytes] = []
    for _ in range(64):
        n = min(4096, len(message) - offset, server.send_window(stream))
        if n:
            more = offset + n < len(message)
            server.send_data(stream, message[offset : offset + n], more=more)
            offset += n
        for event in deliver(server, client):
            if isinstance(event, MessageReceived):
                received.append(event.data)
        deliver(client, server)
        if received:
            break
    assert received == [message]


def test_unread_chunked_messages_stay_within_the_window() -> None:
    window = 64 << 10
    settings = Settings(initial_stream_window=window, max_frame_payload=4096)
    client = Connection(initiator=True, settings=settings)
    server = Connection(initiator=False)
    exchange(client, server)
    stream = server.open_stream("", b"", remote_open=False)
    deliver(server, client)
    buffered = 0
    for _ in range(100):  # nobody consumes: the sender must run out of credit
        if not send_chunked(server, stream, b"m" * 4097):
            break
        for event in deliver(server, client):
            if isinstance(event, MessageReceived):
                buffered += len(event.data)
        deliver(client, server)
    assert buffered <= window + 4097


def test_single_frame_message_over_max_message_size_is_refused() -> None:
    client = Connection(initiator=True, settings=Settings(max_message_size=100))
    server = Connection(initiator=False)
    exchange(client, server)
    stream = server.open_stream("", b"", remote_open=False)
    deliver(server, client)
    server.send_data(stream, b"z" * 500)
    with pytest.raises(RemoteProtocolError) as caught:
        deliver(server, client)
    assert caught.value.code == ErrorCode.FRAME_SIZE_ERROR


def test_long_status_message_does_not_break_the_connection() -> None:
    client, server = Connection(initiator=True), Connection(initiator=False)
    exchange(client, server)
    stream = server.open_stream("", b"", remote_open=False)
    deliver(server, client)
    server.end_stream(stream, Status(ErrorCode.APPLICATION_ERROR, "ValueError", "x" * (2 << 20)))
    events = deliver(server, client)
    assert [type(event).__name__ for event in events] == ["StreamEnded"]


async def test_frame_above_the_clients_limit_ends_the_source(
    autojump_clock: trio.abc.Clock,
) -> None:
    import chanserv_trio as cs

    async def frames() -> AsyncIterator[bytes]:
        yield b"y" * 2000

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"big", frames=frames())

    errors: list[BaseException] = []
    client_end, server_end = trio.testing.memory_stream_pair()
    small = cs.Settings(max_message_size=1024)
    async with cs.Multiplexer() as server_mpx, cs.Multiplexer(settings=small) as client_mpx:
        await cs.Server(server_mpx, on_error=errors.append).listen_and_serve("big", source_fn)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(server_mpx.attach, server_end, initiator=False))
            await client_mpx.attach(client_end)
        outcome: object = "hung"
        with trio.move_on_after(60):
            async with cs.Client(client_mpx).lookup_and_post("big") as sources:
                source = await sources.receive()
                try:
                    async for _ in source:
                        pass
                    outcome = "ended normally"
                except cs.ChanservError as exc:
                    outcome = exc
        assert isinstance(outcome, cs.RemoteError) and outcome.kind == "MessageTooLarge"
        assert [type(error) for error in errors] == [cs.MessageTooLarge]


# ------------------------------------------------------- regressions


def test_status_without_message_names_its_code() -> None:
    error = _link_status.error_from_status(Status(ErrorCode.CANCEL))
    assert "CANCEL" in str(error)


async def test_small_frame_then_frame_larger_than_the_window(
    autojump_clock: trio.abc.Clock,
) -> None:
    import chanserv_trio as cs

    big = b"z" * (256 << 10)

    async def frames() -> AsyncIterator[bytes]:
        yield b"small"
        yield big

    async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(header=b"h", frames=frames())

    client_end, server_end = trio.testing.memory_stream_pair()
    small_window = cs.Settings(initial_stream_window=64 << 10, max_frame_payload=16 << 10)
    async with cs.Multiplexer() as server_mpx, cs.Multiplexer(settings=small_window) as mpx:
        await cs.Server(server_mpx).listen_and_serve("big", source_fn)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(partial(server_mpx.attach, server_end, initiator=False))
            await mpx.attach(client_end)
        received: list[bytes] = []
        with trio.move_on_after(60):
            async with cs.Client(mpx).lookup_and_post("big") as sources:
                async for frame in await sources.receive():
                    received.append(frame)
        assert received == [b"small", big]


# ------------------------------------------------- the registry page, the signatures


async def test_registry_page_example_runs_against_etcd(etcd_endpoint: str) -> None:
    """docs/registry.md's server and client, on loopback and a prefix of their own."""
    text = (ROOT / "docs" / "registry.md").read_text(encoding="utf-8")
    (program,) = [
        block
        for block in re.findall(r"```python\n(.*?)```", text, flags=re.S)
        if "EtcdRegistry" in block
    ]
    assert 'ETCD = "http://127.0.0.1:2379"' in program
    assert '"tcp://10.0.0.5:7000"' in program
    program = program.replace('"http://127.0.0.1:2379"', repr(etcd_endpoint))
    program = program.replace('"tcp://10.0.0.5:7000"', '"tcp://127.0.0.1:0"')
    program = program.replace('"/myapp/"', repr(f"/docs-{trio.current_time()}/"))
    namespace, printed = run_program(program + "\ntrio.run(main)")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            nursery.start_soon(namespace["server"])
            await namespace["client"]()
            nursery.cancel_scope.cancel()
    assert printed == [(b"hello from a server",)]


def documented_signature(page: str, call: str) -> list[tuple[str, str | None]]:
    """``(name, default text or None)`` per line of the ``cs.X(...)`` block on a page."""
    text = (ROOT / "docs" / page).read_text(encoding="utf-8")
    match = re.search(rf"```python\n{re.escape(call)}\(\n(.*?)\n\)\n```", text, flags=re.S)
    assert match, f"{page} has no {call}(...) block"
    params: list[tuple[str, str | None]] = []
    for line in match.group(1).splitlines():
        code = line.split("#", 1)[0].strip().rstrip(",")
        if code == "*":
            params.append(("*", None))
            continue
        name, _, default = code.partition("=")
        params.append((name.strip(), default.strip() or None))
    return params


@pytest.mark.parametrize(
    ("call", "obj"),
    [("cs.Multiplexer", cs.Multiplexer), ("cs.Server", cs.Server), ("cs.Client", cs.Client)],
)
def test_documented_signatures_match_the_code(call: str, obj: type) -> None:
    expected: list[tuple[str, object]] = []
    for parameter in inspect.signature(obj).parameters.values():
        if parameter.kind is inspect.Parameter.KEYWORD_ONLY and ("*", None) not in expected:
            expected.append(("*", None))
        default = parameter.default
        expected.append((parameter.name, None if default is inspect.Parameter.empty else default))
    documented = [
        (name, None if default is None else eval(default, {"cs": cs}))
        for name, default in documented_signature("index.md", call)
    ]
    assert [name for name, _ in documented] == [name for name, _ in expected]
    assert documented == expected


def test_api_reference_documents_every_exported_name() -> None:
    text = (ROOT / "docs" / "api.rst").read_text(encoding="utf-8")
    documented = re.findall(r"^\.\. auto(?:class|function|exception|data):: (\w+)$", text, re.M)
    assert sorted(documented) == sorted(cs.__all__)
    assert len(documented) == len(set(documented))


# ------------------------------------------------------- the resumption example


def test_resumption_example_positions_are_what_the_code_counts() -> None:
    """docs/protocol.md, section 17: the table of positions, replayed."""
    options = ResumeOptions(timeout=30.0)
    client = Connection(initiator=True, resume=options)
    server = Connection(initiator=False, resume=options)
    exchange(client, server)
    server.advertise("echo")
    deliver(server, client)
    stream = client.open_stream("echo", b"")
    client.send_data(stream, b"one")
    server.receive_data(out(client))
    client.send_data(stream, b"two")
    out(client)  # written, then lost in the cut

    def positions() -> list[int]:
        return [
            client.sent_position,
            client.received_position,
            server.sent_position,
            server.received_position,
        ]

    measured = [positions()]
    client.detach()
    server.detach()
    client.begin_resume()
    fresh = Connection(initiator=False, resume=options)
    (request,) = deliver(client, fresh)
    assert isinstance(request, ResumeRequested) and request.position == 14
    server.accept_resume(request.position)
    (resumed,) = deliver(server, client)
    assert isinstance(resumed, Resumed) and resumed.position == 35 and resumed.replayed == 13
    measured.append(positions())
    (message,) = deliver(client, server)
    assert isinstance(message, MessageReceived) and message.data == b"two"
    measured.append(positions())
    documented = [
        [parse_int(row[column]) for column in list(row)[1:]] for row in doc_table("resume-example")
    ]
    assert documented == measured


def test_resumption_page_names_the_arguments_and_messages_the_code_has() -> None:
    import inspect

    import chanserv_trio as cs
    from chanserv_trio.link import _auth, _link
    from chanserv_trio.node import _multiplexer
    from chanserv_trio.wire import _connection

    page = (ROOT / "docs" / "resumption.md").read_text(encoding="utf-8")
    parameters = inspect.signature(cs.Multiplexer).parameters
    assert parameters["resume_timeout"].default is None and "resume_timeout" in page
    assert parameters["resume_buffer_size"].default == 4 * 2**20
    assert "resume_buffer_size` (default `4 * 2**20`" in page
    sources = "".join(
        inspect.getsource(module) for module in (_auth, _link, _multiplexer, _connection)
    )
    # Messages split over adjacent string literals read as one.
    code = " ".join(re.sub(r'"\s*\n\s*f?"', "", sources).split())
    for quoted in re.findall(r'^- "(?:… )?([^"…]+)', page, flags=re.M):
        assert " ".join(quoted.split()).strip(" (") in code, quoted
    for field in ("resumptions", "detached_seconds", "resume_buffered"):
        assert field in page and field in cs.LinkStatistics.__annotations__
