"""Transports: the same chanserv flow over tcp, tls, ws, wss, unix and attach, plus the
wrong thing at the other end of each (typed errors that leave other links alone), and
the WebSocket byte-stream adapter on its own."""

from __future__ import annotations

import contextlib
import io
import re
import socket
import ssl
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from typing import Any

import attrs
import pytest
import trio
import trio.testing
import trio_websocket
import trustme

import chanserv_trio as cs
from chanserv_trio import _cli as cli
from chanserv_trio._cli import run_demo
from chanserv_trio.node._multiplexer import message_limit
from chanserv_trio.transports._schemes import parse_url, reads_whole_messages
from chanserv_trio.transports._websocket import WebSocketStream
from chanserv_trio.wire._codec import ErrorCode, FrameType, encode_frame, encode_hello

SERVICE = "chanserv"
BIG = 3 * 1024 * 1024 + 7  # over the link reader's 256 KiB reads and the frame payload cap
TRANSPORTS = ["tcp", "tls", "ws", "wss", "unix", "attach"]


@attrs.frozen
class Certs:
    server: ssl.SSLContext
    client: ssl.SSLContext
    #: A client context that trusts nothing we made.
    stranger: ssl.SSLContext


@pytest.fixture(scope="module")
def certs() -> Certs:
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server)
    client = ssl.create_default_context()
    ca.configure_trust(client)
    stranger = ssl.create_default_context()
    trustme.CA().configure_trust(stranger)
    return Certs(server, client, stranger)


def listen_args(transport: str, certs: Certs, tmp_path: Path) -> tuple[str, dict[str, Any]]:
    """The URL and listen options of a server on ``transport``."""
    if transport == "tcp":
        return "tcp://127.0.0.1:0", {}
    if transport == "tls":
        return "tls://127.0.0.1:0", {"ssl_context": certs.server}
    if transport == "ws":
        return "ws://127.0.0.1:0/links", {}
    if transport == "wss":
        return "wss://127.0.0.1:0/links", {"ssl_context": certs.server}
    assert transport == "unix"
    return f"unix://{tmp_path}/node.sock", {}


def join_options(url: str, certs: Certs) -> dict[str, Any]:
    return {"ssl_context": certs.client} if parse_url(url).tls else {}


def port_of(url: str) -> int:
    return parse_url(url).port


async def frames_of(*frames: bytes, fail: Exception | None = None) -> AsyncIterator[bytes]:
    for frame in frames:
        yield frame
    if fail is not None:
        raise fail


async def source_fn(request: bytes) -> AsyncIterator[cs.Source]:
    if request == b"fail":
        yield cs.Source(header=b"before", frames=frames_of(b"x"))
        raise LookupError("no more sources")
    yield cs.Source(header=b"small", frames=frames_of(b"wait for me!", b"ok I'm ready"))
    yield cs.Source(header=b"big", frames=frames_of(b"B" * BIG, b""))
    yield cs.Source(header=b"broken", frames=frames_of(b"one", fail=ValueError("bad frame")))
    yield cs.Source(header=b"", frames=frames_of())


async def read_source(source: cs.RemoteSource, into: dict[bytes, Any]) -> None:
    got: list[bytes] = []
    try:
        async for frame in source:
            got.append(frame)
    except cs.RemoteError as exc:
        into[source.header] = (got, exc)
        return
    into[source.header] = (got, source.meta.remote_addr)


async def serve_on(mpx: cs.Multiplexer) -> cs.Server:
    server = cs.Server(mpx, on_error=lambda exc: None)
    await server.listen_and_serve(SERVICE, source_fn)
    return server


async def post(mpx: cs.Multiplexer, body: bytes = b"hello") -> dict[bytes, Any]:
    """Post ``body`` and read every source concurrently."""
    client = cs.Client(mpx, dial_timeout=5.0)
    results: dict[bytes, Any] = {}
    async with client.lookup_and_post(SERVICE, body) as sources, trio.open_nursery() as nursery:
        async for source in sources:
            nursery.start_soon(read_source, source, results)
    return results


@asynccontextmanager
async def linked(
    transport: str, certs: Certs, tmp_path: Path, **server_kwargs: Any
) -> AsyncIterator[tuple[cs.Multiplexer, cs.Multiplexer, str]]:
    """A serving multiplexer and a client multiplexer linked over ``transport``."""
    async with cs.Multiplexer(**server_kwargs) as server_mpx:
        await serve_on(server_mpx)
        async with cs.Multiplexer() as client_mpx:
            if transport == "attach":
                left, right = trio.testing.memory_stream_pair()
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(partial(server_mpx.attach, right, initiator=False))
                    await client_mpx.attach(left)
                yield server_mpx, client_mpx, "attached"
                return
            url, options = listen_args(transport, certs, tmp_path)
            bound = await server_mpx.listen(url, **options)
            await client_mpx.join(bound, **join_options(bound, certs))
            yield server_mpx, client_mpx, bound


# ------------------------------------------------------------- the core flow


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_chanserv_flow_over_every_transport(
    transport: str, certs: Certs, tmp_path: Path
) -> None:
    with trio.fail_after(15):
        async with linked(transport, certs, tmp_path) as (server_mpx, client_mpx, bound):
            if transport != "attach":
                assert bound.startswith(f"{transport}://")
                assert ":0/" not in bound and not bound.endswith(":0")
            results = await post(client_mpx)
            assert results[b"small"] == ([b"wait for me!", b"ok I'm ready"], bound)
            big_frames, _ = results[b"big"]
            assert [len(frame) for frame in big_frames] == [BIG, 0]
            assert big_frames[0] == b"B" * BIG
            got, error = results[b"broken"]
            assert got == [b"one"]
            assert isinstance(error, cs.RemoteError)
            assert (error.kind, error.message) == ("ValueError", "bad frame")
            assert results[b""] == ([], bound)

            # A failing source function ends the request after the announced sources.
            client = cs.Client(client_mpx, dial_timeout=5.0)
            headers = []
            with pytest.raises(cs.RemoteError) as info:
                async with client.lookup_and_post(SERVICE, b"fail") as sources:
                    async for source in sources:
                        headers.append(source.header)
                        assert [frame async for frame in source] == [b"x"]
            assert headers == [b"before"]
            assert info.value.kind == "LookupError"

            link = client_mpx.links[0]
            if transport != "attach":
                assert link.remote_addr == bound
                assert link.local_addr.startswith(f"{transport}://")
                assert server_mpx.links[0].remote_addr.startswith(f"{transport}://")


async def test_one_node_listens_on_several_urls(certs: Certs, tmp_path: Path) -> None:
    with trio.fail_after(15):
        async with cs.Multiplexer() as server_mpx:
            await serve_on(server_mpx)
            bound = []
            for transport in ("tcp", "tls", "ws", "wss", "unix"):
                url, options = listen_args(transport, certs, tmp_path)
                bound.append(await server_mpx.listen(url, **options))
            assert server_mpx.listening == bound
            async with trio.open_nursery() as nursery:
                for url in bound:

                    async def one(url: str = url) -> None:
                        async with cs.Multiplexer() as client_mpx:
                            await client_mpx.join(url, **join_options(url, certs))
                            results = await post(client_mpx)
                            assert results[b"small"] == ([b"wait for me!", b"ok I'm ready"], url)

                    nursery.start_soon(one)
            assert len(server_mpx.listening) == 5


# ---------------------------------------------------- the wrong thing at the other end


@asynccontextmanager
async def troubled_server(
    transport: str, certs: Certs, tmp_path: Path
) -> AsyncIterator[tuple[str, list[BaseException], cs.Multiplexer]]:
    """A server on ``transport`` that records ``on_error``, and a healthy client linked
    to it before the trouble starts (it must keep working through it)."""
    errors: list[BaseException] = []
    async with cs.Multiplexer(on_error=errors.append) as server_mpx:
        await serve_on(server_mpx)
        url, options = listen_args(transport, certs, tmp_path)
        bound = await server_mpx.listen(url, **options)
        async with cs.Multiplexer() as healthy:
            await healthy.join(bound, **join_options(bound, certs))
            yield bound, errors, healthy


async def assert_still_serves(client_mpx: cs.Multiplexer, url: str) -> None:
    results = await post(client_mpx)
    assert results[b"small"] == ([b"wait for me!", b"ok I'm ready"], url)


async def join_error(url: str, **options: Any) -> cs.ConnectionLost:
    """What ``join`` raises (from inside the block: see the multiplexer's own tests)."""
    async with cs.Multiplexer() as mpx:
        with pytest.raises(cs.ConnectionLost) as info:
            await mpx.join(url, **options)
        assert mpx.links == []
    return info.value


async def wait_for(errors: list[BaseException], count: int = 1) -> None:
    await poll_until(lambda: len(errors) >= count)


async def poll_until(condition: Callable[[], bool]) -> None:
    """Wait for a condition nothing signals (callers bound it with ``fail_after``)."""
    while not condition():  # noqa: ASYNC110
        await trio.sleep(0.01)


def causes(exc: BaseException | None) -> Iterator[BaseException]:
    """``exc`` and everything it was caused by, groups included."""
    while exc is not None:
        yield exc
        if isinstance(exc, BaseExceptionGroup):
            for inner in exc.exceptions:
                yield from causes(inner)
        exc = exc.__cause__ or exc.__context__


async def test_plain_tcp_client_on_a_tls_port(certs: Certs, tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with troubled_server("tls", certs, tmp_path) as (bound, errors, healthy):
            await join_error(f"tcp://127.0.0.1:{port_of(bound)}")
            await wait_for(errors)
            assert isinstance(errors[0], cs.ConnectionLost)
            assert "TLS handshake" in str(errors[0])
            assert any(isinstance(e, ssl.SSLError) for e in causes(errors[0]))
            await assert_still_serves(healthy, bound)


async def test_tls_client_on_a_plain_port(certs: Certs, tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with troubled_server("tcp", certs, tmp_path) as (bound, errors, healthy):
            url = f"tls://127.0.0.1:{port_of(bound)}"
            error = await join_error(url, ssl_context=certs.client)
            assert str(error).startswith(f"cannot connect to {url}: TLS failed")
            assert any(isinstance(e, ssl.SSLError) for e in causes(error))
            await wait_for(errors)
            assert isinstance(errors[0], cs.ProtocolError)  # our HELLO was TLS garbage
            assert "speaks TLS" in str(errors[0])
            await assert_still_serves(healthy, bound)


@pytest.mark.parametrize("transport", ["tls", "wss"])
async def test_untrusted_certificate(transport: str, certs: Certs, tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with troubled_server(transport, certs, tmp_path) as (bound, errors, healthy):
            error = await join_error(bound, ssl_context=certs.stranger)
            assert "certificate is not trusted" in str(error)
            assert any(isinstance(e, ssl.SSLCertVerificationError) for e in causes(error))
            # The system's authorities (the default) do not know our CA either.
            error = await join_error(bound)
            assert "certificate is not trusted" in str(error)
            await wait_for(errors, 2)
            assert all(isinstance(e, cs.ConnectionLost) for e in errors)
            await assert_still_serves(healthy, bound)


async def test_certificate_must_name_the_host_in_the_url(certs: Certs, tmp_path: Path) -> None:
    # The certificate is for 127.0.0.1; "localhost" reaches the same socket but is not
    # a name the certificate vouches for.
    with trio.fail_after(10):
        async with troubled_server("tls", certs, tmp_path) as (bound, _errors, _healthy):
            url = f"tls://localhost:{port_of(bound)}"
            error = await join_error(url, ssl_context=certs.client)
            assert "certificate is not trusted" in str(error)
            assert "localhost" in str(error)


async def test_websocket_on_the_wrong_path(certs: Certs, tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with troubled_server("ws", certs, tmp_path) as (bound, errors, healthy):
            wrong = bound.replace("/links", "/elsewhere")
            error = await join_error(wrong)
            assert "HTTP 404" in str(error)
            rejected = error.__cause__
            assert isinstance(rejected, trio_websocket.ConnectionRejected)
            assert rejected.status_code == 404
            await wait_for(errors)
            assert "'/elsewhere'" in str(errors[0])
            await assert_still_serves(healthy, bound)


async def test_plain_http_request_on_a_websocket_port(certs: Certs, tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with troubled_server("ws", certs, tmp_path) as (bound, errors, healthy):
            stream = await trio.open_tcp_stream("127.0.0.1", port_of(bound))
            async with stream:
                await stream.send_all(b"GET /links HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
                answer = b""
                while chunk := await stream.receive_some():
                    answer += chunk
            assert answer.startswith(b"HTTP/1.1 400")
            await wait_for(errors)
            assert isinstance(errors[0], cs.ConnectionLost)
            assert "not a WebSocket upgrade" in str(errors[0])
            await assert_still_serves(healthy, bound)


async def test_plain_chanserv_client_on_a_websocket_port(certs: Certs, tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with troubled_server("ws", certs, tmp_path) as (bound, _errors, healthy):
            error = await join_error(f"tcp://127.0.0.1:{port_of(bound)}")
            assert isinstance(error, cs.ProtocolError)  # an HTTP 400 is no HELLO
            assert "answered in HTTP" in str(error) and "ws://" in str(error)
            await assert_still_serves(healthy, bound)


async def test_websocket_client_on_a_plain_port(certs: Certs, tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with troubled_server("tcp", certs, tmp_path) as (bound, _errors, healthy):
            error = await join_error(f"ws://127.0.0.1:{port_of(bound)}/links")
            assert "which is not a WebSocket upgrade" in str(error)
            assert "CSTR" in str(error)  # what it did answer: our own HELLO frame
            await assert_still_serves(healthy, bound)


@asynccontextmanager
async def fake_server(answer: bytes) -> AsyncIterator[int]:
    """A TCP server that says ``answer`` to whoever connects, then hangs up."""

    async def talk(stream: trio.SocketStream) -> None:
        async with stream:
            await stream.send_all(answer)
            with trio.move_on_after(1):
                await stream.receive_some()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, talk, 0, host="127.0.0.1"))
        yield listeners[0].socket.getsockname()[1]
        nursery.cancel_scope.cancel()


async def test_server_speaking_another_protocol() -> None:
    with trio.fail_after(10):
        async with fake_server(b"SSH-2.0-OpenSSH_9.6\r\n") as port:
            error = await join_error(f"tcp://127.0.0.1:{port}")
            assert isinstance(error, cs.ProtocolError)


@pytest.mark.parametrize(
    ("answer", "says"),
    [
        (b"HTTP/1.1 400 Bad Request\r\n\r\n", "answered in HTTP"),
        (b"GET / HTTP/1.1\r\n\r\n", "sent an HTTP request"),
        (b"\x15\x03\x03\x00\x02\x02\x28", "TLS alert"),
    ],
)
async def test_a_server_of_another_protocol_is_named_in_the_error(
    answer: bytes, says: str
) -> None:
    with trio.fail_after(10):
        async with fake_server(answer) as port:
            error = await join_error(f"tcp://127.0.0.1:{port}")
            assert isinstance(error, cs.ProtocolError)
            assert says in str(error)


async def test_server_speaking_another_protocol_version() -> None:
    hello = encode_frame(FrameType.HELLO, 0, 0, encode_hello({}, version=0))
    with trio.fail_after(10):
        async with fake_server(hello) as port:
            error = await join_error(f"tcp://127.0.0.1:{port}")
            assert isinstance(error, cs.ProtocolError)
            assert error.code == ErrorCode.VERSION_MISMATCH


async def test_websocket_server_sending_text_messages() -> None:
    async def chatty(request: trio_websocket.WebSocketRequest) -> None:
        websocket = await request.accept()
        await websocket.send_message("hello, browser")
        # The client hangs up (politely, or not) once it read the text message.
        with trio.move_on_after(2), contextlib.suppress(trio_websocket.ConnectionClosed):
            await websocket.get_message()

    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            server = await nursery.start(
                trio_websocket.serve_websocket, chatty, "127.0.0.1", 0, None
            )
            error = await join_error(f"ws://127.0.0.1:{server.port}/")
            assert "text message" in str(error)
            nursery.cancel_scope.cancel()


async def test_plain_http_server_refuses_the_upgrade() -> None:
    page = b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Type: text/plain\r\n\r\nhello"
    with trio.fail_after(10):
        async with fake_server(page) as port:
            error = await join_error(f"ws://127.0.0.1:{port}/")
            assert "refused the WebSocket upgrade with HTTP 200 (hello)" in str(error)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_nothing_listening() -> None:
    with trio.fail_after(10):
        error = await join_error(f"tcp://127.0.0.1:{free_port()}")
        assert "connection refused" in str(error)
        assert any(isinstance(e, ConnectionRefusedError) for e in causes(error))


async def test_missing_unix_socket(tmp_path: Path) -> None:
    with trio.fail_after(10):
        error = await join_error(f"unix://{tmp_path}/nobody.sock")
        assert "no such socket file" in str(error)
        assert isinstance(error.__cause__, FileNotFoundError)


async def test_transport_setup_is_bounded_by_the_handshake_timeout(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # A server that accepts TCP but never answers the TLS hello.
    async def silent(stream: trio.SocketStream) -> None:
        async with stream:
            await trio.sleep_forever()

    async with trio.open_nursery() as nursery:
        listeners = await nursery.start(partial(trio.serve_tcp, silent, 0, host="127.0.0.1"))
        port = listeners[0].socket.getsockname()[1]
        async with cs.Multiplexer(handshake_timeout=3.0) as mpx:
            start = trio.current_time()
            with pytest.raises(cs.ConnectionLost, match="timed out"):
                await mpx.join(f"tls://127.0.0.1:{port}")
            assert trio.current_time() - start == pytest.approx(3.0)
        nursery.cancel_scope.cancel()


# ------------------------------------------------------------ URLs and options


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1:80",
        "tcp://127.0.0.1",
        "tcp://127.0.0.1:99999",
        "tcp://127.0.0.1:7000/path",
        "tls://:7000",
        "ws://127.0.0.1:7000/path#fragment",
        "ws://user:secret@127.0.0.1:7000/",
        "unix://relative/path.sock",
        "unix://",
    ],
)
async def test_bad_urls_are_value_errors(url: str) -> None:
    async with cs.Multiplexer() as mpx:
        with pytest.raises(ValueError):
            await mpx.listen(url)
        with pytest.raises(ValueError):
            await mpx.join(url)


def test_url_parsing() -> None:
    assert parse_url("ws://example.org/chanserv?key=1").path == "/chanserv?key=1"
    assert parse_url("wss://example.org").port == 443
    assert parse_url("ws://example.org").url() == "ws://example.org:80/"
    assert parse_url("tcp://[::1]:7000").url() == "tcp://[::1]:7000"
    assert parse_url("unix:///run/cs.sock").path == "/run/cs.sock"


async def test_ssl_context_only_where_it_applies(certs: Certs) -> None:
    async with cs.Multiplexer() as mpx:
        with pytest.raises(ValueError, match="needs ssl_context"):
            await mpx.listen("tls://127.0.0.1:0")
        with pytest.raises(ValueError, match="applies to tls:// and wss://"):
            await mpx.listen("tcp://127.0.0.1:0", ssl_context=certs.server)
        with pytest.raises(ValueError, match="applies to tls:// and wss://"):
            await mpx.join("ws://127.0.0.1:1/", ssl_context=certs.client)
        with pytest.raises(TypeError):
            await mpx.listen("tcp://127.0.0.1:0", no_such_option=1)
        assert mpx.listening == []


async def test_listening_on_a_busy_port_is_an_os_error() -> None:
    async with cs.Multiplexer() as mpx:
        bound = await mpx.listen("tcp://127.0.0.1:0")
        with pytest.raises(OSError):
            await mpx.listen(bound)


async def test_unix_socket_file_lifecycle(tmp_path: Path) -> None:
    path = tmp_path / "node.sock"
    # A stale file left by a process that is gone is replaced...
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()
    with trio.fail_after(10):
        async with cs.Multiplexer() as mpx:
            await serve_on(mpx)
            bound = await mpx.listen(f"unix://{path}")
            # ...a live one is not taken over...
            async with cs.Multiplexer() as other:
                with pytest.raises(OSError, match="another process listens"):
                    await other.listen(bound)
            async with cs.Multiplexer() as client_mpx:
                await client_mpx.join(bound)
                assert (await post(client_mpx))[b"small"][1] == bound
        # ...and ours is removed when the node closes.
        assert not path.exists()
    regular = tmp_path / "file.txt"
    regular.write_text("not a socket")
    async with cs.Multiplexer() as mpx:
        with pytest.raises(FileExistsError):
            await mpx.listen(f"unix://{regular}")
    assert regular.read_text() == "not a socket"


# ---------------------------------------------------------- the WebSocket adapter


@asynccontextmanager
async def websocket_pair() -> AsyncIterator[
    tuple[trio_websocket.WebSocketConnection, trio_websocket.WebSocketConnection]
]:
    """A client and a server WebSocket over an in-memory stream pair."""
    client_stream, server_stream = trio.testing.memory_stream_pair()
    accepted: list[trio_websocket.WebSocketConnection] = []
    async with trio.open_nursery() as nursery:

        async def accept() -> None:
            request = await trio_websocket.wrap_server_stream(nursery, server_stream)
            accepted.append(await request.accept())

        nursery.start_soon(accept)
        client_ws = await trio_websocket.wrap_client_stream(
            nursery,
            client_stream,  # type: ignore[arg-type]
            "127.0.0.1",
            "/",
        )
        await poll_until(lambda: bool(accepted))
        yield client_ws, accepted[0]
        nursery.cancel_scope.cancel()


async def test_adapter_sends_one_binary_message_per_send_all() -> None:
    with trio.fail_after(5):
        async with websocket_pair() as (client_ws, server_ws):
            stream = WebSocketStream(client_ws)
            await stream.send_all(b"abc")
            await stream.send_all(memoryview(b"defgh")[1:])
            await stream.send_all(b"")  # nothing to send: no message
            await stream.send_all(bytearray(b"i"))
            assert [await server_ws.get_message() for _ in range(3)] == [b"abc", b"efgh", b"i"]


async def test_adapter_receives_messages_within_max_bytes() -> None:
    with trio.fail_after(5):
        async with websocket_pair() as (client_ws, server_ws):
            stream = WebSocketStream(client_ws)
            await server_ws.send_message(b"0123456789")
            await server_ws.send_message(b"")  # an empty message is not end of stream
            await server_ws.send_message(b"xy")
            assert await stream.receive_some(4) == b"0123"
            assert await stream.receive_some(4) == b"4567"
            assert await stream.receive_some(4) == b"89"
            assert await stream.receive_some() == b"xy"
            with pytest.raises(ValueError):
                await stream.receive_some(0)


async def test_adapter_normal_close_is_end_of_stream() -> None:
    with trio.fail_after(5):
        async with websocket_pair() as (client_ws, server_ws):
            stream = WebSocketStream(client_ws)
            await server_ws.aclose(1000)
            assert await stream.receive_some() == b""
            with pytest.raises(trio.BrokenResourceError):
                await stream.send_all(b"late")


async def test_adapter_abnormal_close_and_text_are_broken_streams() -> None:
    with trio.fail_after(5):
        async with websocket_pair() as (client_ws, server_ws):
            stream = WebSocketStream(client_ws)
            await server_ws.send_message("text")
            with pytest.raises(trio.BrokenResourceError, match="text message"):
                await stream.receive_some()
            await server_ws.aclose(1011, "server fault")
            with pytest.raises(trio.BrokenResourceError, match="1011") as info:
                await stream.receive_some()
            assert isinstance(info.value.__cause__, trio_websocket.ConnectionClosed)


async def test_adapter_closed_locally() -> None:
    with trio.fail_after(5):
        async with websocket_pair() as (client_ws, _):
            stream = WebSocketStream(client_ws)
            await stream.aclose()
            with pytest.raises(trio.ClosedResourceError):
                await stream.receive_some()
            with pytest.raises(trio.ClosedResourceError):
                await stream.send_all(b"x")


def test_websocket_message_limit_covers_the_protocol_limits() -> None:
    settings = cs.Settings()
    assert message_limit(settings) > settings.max_message_size + settings.connection_window


async def test_websocket_link_carries_frames_as_whole_messages(
    certs: Certs, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        async with linked("ws", certs, tmp_path) as (server_mpx, client_mpx, _):
            sent: list[int] = []
            server_ws = server_mpx.links[0].transport
            assert isinstance(server_ws, WebSocketStream)
            original = server_ws.websocket.send_message

            async def spy(message: str | bytes) -> None:
                sent.append(len(message))
                await original(message)

            server_ws.websocket.send_message = spy  # type: ignore[method-assign]
            results = await post(client_mpx)
            assert len(results[b"big"][0][0]) == BIG
            # The big frame went out in a few large messages, not in small pieces.
            assert max(sent) >= 256 * 1024
            assert client_mpx.links[0].statistics().bytes_in >= BIG


@pytest.mark.parametrize("transport", TRANSPORTS)
async def test_only_websocket_links_read_whole_messages(
    transport: str, certs: Certs, tmp_path: Path
) -> None:
    websocket = transport in ("ws", "wss")
    with trio.fail_after(10):
        async with linked(transport, certs, tmp_path) as (server_mpx, client_mpx, _):
            links = server_mpx.links + client_mpx.links
            assert len(links) == 2
            for link in links:
                assert reads_whole_messages(link.transport) is websocket
                assert link.whole_messages is websocket


async def test_websocket_pings_answered_while_the_application_is_slow(
    certs: Certs, tmp_path: Path
) -> None:
    flood_started = trio.Event()

    async def flood(request: bytes) -> AsyncIterator[cs.Source]:
        async def frames() -> AsyncIterator[bytes]:
            flood_started.set()
            for _ in range(1000):
                yield b"f" * 65536

        yield cs.Source(header=b"flood", frames=frames())

    with trio.fail_after(10):
        async with cs.Multiplexer() as server_mpx:
            server = cs.Server(server_mpx)
            await server.listen_and_serve("flood", flood)
            bound = await server_mpx.listen("ws://127.0.0.1:0/links")
            async with cs.Multiplexer() as client_mpx:
                await client_mpx.join(bound)
                client = cs.Client(client_mpx, dial_timeout=5.0)
                async with client.lookup_and_post("flood", b"") as sources:
                    source = await sources.receive()
                    await flood_started.wait()
                    # The client application reads nothing; its window fills up...
                    await poll_until(lambda: client_mpx.statistics().bytes_buffered > 512 << 10)
                    transport = server_mpx.links[0].transport
                    assert isinstance(transport, WebSocketStream)
                    # ...and the client's WebSocket still answers a ping.
                    await transport.websocket.ping(b"are you there")
                    assert await source.receive() == b"f" * 65536
                    await source.aclose()


async def test_websocket_link_closes_with_a_close_handshake(certs: Certs, tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with linked("ws", certs, tmp_path) as (server_mpx, client_mpx, _):
            server_transport = server_mpx.links[0].transport
            client_transport = client_mpx.links[0].transport
            assert isinstance(server_transport, WebSocketStream)
            assert isinstance(client_transport, WebSocketStream)
            await client_mpx.links[0].aclose()
            await poll_until(lambda: not server_mpx.links)
            await poll_until(lambda: client_transport.websocket.closed is not None)
            reason = client_transport.websocket.closed
            assert reason is not None and reason.code == 1000


# ------------------------------------------------------------------ command line


@pytest.mark.parametrize("transport", ["tls", "ws", "wss", "unix"])
async def test_demo_over_each_transport(transport: str) -> None:
    out = io.StringIO()
    with trio.fail_after(10):
        await run_demo(out=out, transport=transport)
    text = out.getvalue()
    assert f"server listening on {transport}://" in text
    for index in range(5):
        assert f"[source @{index}] done after 2 frames" in text
    assert text.rstrip().endswith("demo finished")


def test_demo_transport_option() -> None:
    args = cli._parser().parse_args(["demo", "--transport", "wss"])
    assert (args.transport, args.listen) == ("wss", None)
    with pytest.raises(SystemExit):
        cli._parser().parse_args(["demo", "--transport", "carrier-pigeon"])


async def test_serve_and_post_over_tls_with_certificate_files(tmp_path: Path) -> None:
    authority = trustme.CA()
    certfile = tmp_path / "server.pem"
    authority.issue_cert("127.0.0.1").private_key_and_cert_chain_pem.write_to_path(certfile)
    cafile = tmp_path / "ca.pem"
    authority.cert_pem.write_to_path(cafile)
    listen = ["--listen", "tls://127.0.0.1:0", "--listen", "ws://127.0.0.1:0/"]
    args = cli._parser().parse_args(["serve", "mod:fn", *listen, "--certfile", str(certfile)])
    server_context = cli._server_context(args.certfile, args.keyfile)
    assert cli._parser().parse_args(["post", "u", "n", "--cafile", "x"]).cafile == "x"
    out = io.StringIO()
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            serve = partial(
                cli.run_serve, cli.demo_source_fn, args.listen, "chanserv", io.StringIO()
            )
            bound = await nursery.start(partial(serve, ssl_context=server_context))
            client_context = ssl.create_default_context(cafile=str(cafile))
            for url in bound:
                await cli.run_post(url, "chanserv", b"", 5.0, out, ssl_context=client_context)
            nursery.cancel_scope.cancel()
    assert out.getvalue().count("done after 2 frames") == 10
    with pytest.raises(ValueError, match="--keyfile needs --certfile"):
        cli._server_context(None, str(certfile))


def raw_socket(transport: trio.abc.Stream) -> trio.socket.SocketType:
    """The TCP socket under a WebSocket link (reaching into trio-websocket's internals)."""
    assert isinstance(transport, WebSocketStream)
    stream = transport.websocket._stream.stream  # type: ignore[attr-defined]
    assert isinstance(stream, trio.SocketStream)
    return stream.socket


@pytest.mark.parametrize("closer", ["client", "server"])
async def test_websocket_sockets_are_closed_whichever_side_closes_first(
    closer: str, certs: Certs, tmp_path: Path
) -> None:
    with trio.fail_after(10):
        async with linked("ws", certs, tmp_path) as (server_mpx, client_mpx, _):
            server_socket = raw_socket(server_mpx.links[0].transport)
            client_socket = raw_socket(client_mpx.links[0].transport)
            first, second = (
                (client_mpx, server_mpx) if closer == "client" else (server_mpx, client_mpx)
            )
            await first.links[0].aclose()
            await poll_until(lambda: not second.links)
            await poll_until(lambda: client_socket.fileno() == -1 and server_socket.fileno() == -1)


# ------------------------------------------------------------------ the docs page

DOCS = Path(__file__).resolve().parent.parent / "docs" / "transports.md"


def doc_programs() -> list[str]:
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    return [block for block in blocks if block.rstrip().endswith("trio.run(main)")]


def test_docs_page_has_an_example_of_each_transport() -> None:
    programs = "\n".join(doc_programs())
    for scheme in ("tcp://", "tls://", "ws://", "wss://", "unix://", ".attach("):
        assert scheme in programs


@pytest.mark.parametrize("index", range(len(doc_programs())))
def test_docs_page_examples_run(index: int, capsys: pytest.CaptureFixture[str]) -> None:
    program = doc_programs()[index].rstrip().removesuffix("trio.run(main)")
    namespace: dict[str, Any] = {"__name__": "transports_example"}
    exec(compile(program, f"{DOCS}:example {index}", "exec"), namespace)

    async def bounded() -> None:
        with trio.fail_after(10):
            await namespace["main"]()

    trio.run(bounded)
    assert "[b'" in capsys.readouterr().out  # every example prints frames it received
