"""The error hierarchy: one protocol-error root, a leaf module, only public classes out."""

from __future__ import annotations

import ast
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import trio
import trio.testing
from helpers import chanserv_nodes, wait_until

import chanserv_trio as cs
from chanserv_trio import _errors
from chanserv_trio.chanserv._envelope import SOURCE_WINDOW_TAG, Request, encode_request
from chanserv_trio.link._options import LinkOptions
from chanserv_trio.wire._codec import ErrorCode, FrameType, encode_frame
from chanserv_trio.wire._connection import Connection

PACKAGE = Path(cs.__file__).resolve().parent
DOCS = Path(__file__).resolve().parent.parent / "docs"


def test_errors_module_imports_nothing_of_the_package() -> None:
    tree = ast.parse((PACKAGE / "_errors.py").read_text(encoding="utf-8"))
    imported = [
        node.module or ""
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.level or "chanserv" in (node.module or ""))
    ]
    imported += [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.startswith("chanserv_trio")
    ]
    assert imported == []


def test_the_default_protocol_error_code_is_protocol_error() -> None:
    assert _errors._PROTOCOL_ERROR == ErrorCode.PROTOCOL_ERROR
    assert _errors._APPLICATION_ERROR == ErrorCode.APPLICATION_ERROR
    for cls in (cs.ProtocolError, cs.LocalProtocolError, cs.RemoteProtocolError):
        assert cls("x").code == ErrorCode.PROTOCOL_ERROR


def test_protocol_errors_have_one_root_under_connection_lost() -> None:
    assert issubclass(cs.ProtocolError, cs.ConnectionLost)
    assert issubclass(cs.LocalProtocolError, cs.ProtocolError)
    assert issubclass(cs.RemoteProtocolError, cs.ProtocolError)
    assert not issubclass(cs.LocalProtocolError, cs.RemoteProtocolError)
    for name in ("Status", "LocalProtocolError", "RemoteProtocolError", "ProtocolError"):
        assert name in cs.__all__


def test_remote_protocol_error_names_its_code_and_keeps_the_bare_message() -> None:
    error = cs.RemoteProtocolError("OPEN with bad id 1", ErrorCode.PROTOCOL_ERROR)
    assert str(error) == "PROTOCOL_ERROR: OPEN with bad id 1"
    assert error.message == "OPEN with bad id 1"
    assert str(cs.RemoteProtocolError("odd", 4242)) == "code 4242: odd"
    assert str(cs.LocalProtocolError("misuse")) == "misuse"


def test_the_error_tree_in_docs_matches_the_classes() -> None:
    text = (DOCS / "errors.md").read_text(encoding="utf-8")
    block = text.split("```\nChanservError\n", 1)[1].split("```", 1)[0]
    documented: dict[str, str] = {}
    parents = ["ChanservError"]
    for line in block.splitlines():
        marker = max(line.find("├── "), line.find("└── "))
        depth = marker // 4
        name = line[marker + 4 :].split()[0]
        del parents[depth + 1 :]
        documented[name] = parents[depth]
        parents.append(name)
    classes = {
        name: value
        for name in dir(cs)
        if isinstance(value := getattr(cs, name), type)
        and issubclass(value, cs.ChanservError)
        and value is not cs.ChanservError
    }
    assert set(documented) == set(classes)
    for name, parent in documented.items():
        bases = [base.__name__ for base in classes[name].__bases__ if base is not ValueError]
        assert bases == [parent], name


def _public_classes() -> set[type]:
    return {value for name in cs.__all__ if isinstance(value := getattr(cs, name), type)}


def _is_public(error: BaseException) -> bool:
    """A class of chanserv_trio's public API, or one that is not chanserv_trio's at all."""
    module = type(error).__module__
    return not module.startswith("chanserv_trio") or type(error) in _public_classes()


async def test_the_link_reports_a_peer_breaking_the_protocol_as_a_public_class() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    reported: list[BaseException] = []
    link = cs.Link(ours, LinkOptions(on_error=reported.append), initiator=True)
    peer = Connection(initiator=False)
    await theirs.send_all(b"".join(peer.take_outgoing()))
    with trio.fail_after(5):
        async with trio.open_nursery() as nursery:
            await nursery.start(link.run)
            await theirs.send_all(encode_frame(FrameType.OPEN, 0, 1, b"\x00"))
            await link.wait_closed()
    assert [type(error) for error in reported] == [cs.RemoteProtocolError]
    assert isinstance(link.error, cs.RemoteProtocolError)
    assert all(_is_public(error) for error in reported)


async def test_the_server_hands_on_error_only_public_classes(
    autojump_clock: trio.abc.Clock,
) -> None:
    async def slow(request: bytes) -> AsyncIterator[cs.Source]:
        await trio.sleep(10)
        yield cs.Source()

    reported: list[BaseException] = []
    async with chanserv_nodes(memory=True) as (server_mpx, client_mpx):
        server = cs.Server(server_mpx, on_error=reported.append, sourcing_timeout=1.0)
        await server.listen_and_serve("slow", slow)
        await wait_until(lambda: bool(client_mpx.links_offering("slow")))
        with trio.fail_after(30):
            # A request envelope that is no envelope, and one with a bad source window.
            bad_window = encode_request(Request(b"", None, {SOURCE_WINDOW_TAG: "x"}))
            for header in (b"\x00", bad_window):
                stream = await client_mpx.open_stream("slow", header, local_open=False)
                await stream.wait_remote_end()
            async with cs.Client(client_mpx).lookup_and_post("slow") as sources:
                with pytest.raises(cs.DeadlineExceeded):
                    await sources.receive()
        await wait_until(lambda: len(reported) == 3)
    assert [type(error) for error in reported] == [
        cs.RemoteProtocolError,
        cs.RemoteProtocolError,
        trio.TooSlowError,
    ]
    assert all(_is_public(error) for error in reported)
