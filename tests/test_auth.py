"""Trust and authentication (issue: hardening): credentials in the handshake, refusals
with a reason, nothing served before a peer is let in, mutual TLS, whose service offers
are trusted (and so cannot hijack a router), the request context, ``allow`` and
PermissionDenied; and an OPEN with NO_SEND and NO_REPLY is peer input, not our bug.

Raw peers are built from the wire ``Connection``; everything runs over loopback or
memory streams, with ``fail_after`` around every wait.
"""

from __future__ import annotations

import io
import ssl
from collections.abc import AsyncIterator
from functools import partial
from pathlib import Path

import attrs
import pytest
import trio
import trio.testing
import trustme
from helpers import wait_until

import chanserv_trio as cs
from chanserv_trio import _cli as cli
from chanserv_trio.chanserv._envelope import Request, encode_request
from chanserv_trio.wire._codec import ErrorCode, FrameType, HelloField
from chanserv_trio.wire._connection import Connection
from chanserv_trio.wire._events import (
    AdmissionRequested,
    ConnectionTerminated,
    HandshakeCompleted,
    ServiceAdvertised,
    StreamOpened,
)
from chanserv_trio.wire._state import ConnectionState

TOKENS = {b"alice-token": cs.Identity("alice"), b"backend-token": cs.Identity("backend", True)}


def by_token(credential: bytes, peer: cs.PeerInfo) -> cs.Identity | None:
    return TOKENS.get(credential)


async def by_token_async(credential: bytes, peer: cs.PeerInfo) -> cs.Identity | None:
    await trio.lowlevel.checkpoint()
    if credential == b"expired":
        raise cs.AuthenticationFailed("token expired")
    return TOKENS.get(credential)


async def _echo(stream: cs.LinkStream) -> None:
    async for message in stream:
        await stream.send(message)


def _port_of(url: str) -> tuple[str, int]:
    host, port = url.split("://", 1)[1].rsplit(":", 1)
    return host, int(port)


# ----------------------------------------------------------------- the wire


def test_a_deferred_hello_waits_for_admission_and_holds_everything() -> None:
    dialer = Connection(initiator=True, credential=b"secret")
    judge = Connection(initiator=False, defer_hello=True)
    judge.advertise("svc")  # queued before the peer is judged: held, not sent
    assert judge.outgoing_size == 0 and judge.take_outgoing() == []
    hello = b"".join(dialer.take_outgoing())
    # The dialer pipelines a SERVICE behind its HELLO: not processed before admission.
    dialer.advertise("theirs")
    events = judge.receive_data(hello + b"".join(dialer.take_outgoing()))
    assert events == [AdmissionRequested(b"secret")]
    assert judge.admission_pending and not judge.can_open_stream()
    assert judge.outgoing_size == 0
    events = judge.admit()
    assert events[0] == HandshakeCompleted(2)
    assert events[1:] == [ServiceAdvertised("theirs", True, False)]
    out = judge.take_outgoing()
    # Our HELLO goes first, then what was held.
    assert bytes(out[0])[4] == FrameType.HELLO
    events = dialer.receive_data(b"".join(out))
    assert events[0] == HandshakeCompleted(2)
    assert ServiceAdvertised("svc", True, False) in events


def test_a_refusal_is_a_lone_goaway_that_the_dialer_reads_before_any_hello() -> None:
    dialer = Connection(initiator=True)
    judge = Connection(initiator=False, defer_hello=True)
    judge.advertise("secret-service")
    judge.receive_data(b"".join(dialer.take_outgoing()))
    judge.refuse("no such token")
    out = b"".join(judge.take_outgoing())
    assert out[4] == FrameType.GOAWAY and b"secret-service" not in out
    assert judge.closed
    events = dialer.receive_data(out)
    assert events == [ConnectionTerminated(ErrorCode.AUTHENTICATION_FAILED, "no such token")]
    assert dialer.state is ConnectionState.CLOSED


def test_the_credential_travels_in_hello_field_1() -> None:
    dialer = Connection(initiator=True, credential=b"\x00token\xff")
    peer = Connection(initiator=False)
    peer.receive_data(b"".join(dialer.take_outgoing()))
    assert peer.peer_fields == {HelloField.CREDENTIAL: b"\x00token\xff"}


def test_a_bad_hello_to_a_deferring_side_still_gets_its_goaway() -> None:
    judge = Connection(initiator=False, defer_hello=True)
    with pytest.raises(cs.RemoteProtocolError):
        judge.receive_data(b"\x00\x00\x00\x04\x00\x00\x00\x00\x00\x00XXXX")
    out = b"".join(judge.take_outgoing())
    assert out[4] == FrameType.GOAWAY


# ------------------------------------------------------------ join and refuse


@attrs.define
class Seen:
    contexts: list[cs.RequestContext] = attrs.Factory(list)


def _whoami(seen: Seen) -> cs.SourceFunction:
    async def source_fn(body: bytes) -> AsyncIterator[cs.Source]:
        context = cs.current_request()
        seen.contexts.append(context)
        name = "-" if context.identity is None else context.identity.name

        async def frames() -> AsyncIterator[bytes]:
            # The frames' task sees the same request.
            yield cs.current_request().service.encode()

        yield cs.Source(name.encode(), frames())

    return source_fn


async def _post(client: cs.Client, name: str, **kwargs: object) -> list[tuple[bytes, list[bytes]]]:
    got = []
    async with client.lookup_and_post(name, b"", **kwargs) as sources:  # type: ignore[arg-type]
        async for source in sources:
            got.append((source.header, [frame async for frame in source]))
    return got


@pytest.mark.parametrize("authenticate", [by_token, by_token_async], ids=["plain", "async"])
async def test_an_accepted_credential_gives_the_request_its_identity(
    authenticate: cs.Authenticator,
) -> None:
    seen = Seen()
    async with cs.Multiplexer(authenticate=authenticate) as server_mpx:
        server = cs.Server(server_mpx, serving_timeout=30)
        await server.listen_and_serve("whoami", _whoami(seen))
        address = await server_mpx.listen("tcp://127.0.0.1:0")
        with trio.fail_after(10):
            async with cs.Multiplexer(credential=b"alice-token") as client_mpx:
                link = await client_mpx.join(address, redial=False)
                got = await _post(cs.Client(client_mpx), "whoami", tags={"colour": "blue"})
                assert got == [(b"alice", [b"whoami"])]
    [context] = seen.contexts
    assert context.identity == cs.Identity("alice")
    assert context.service == "whoami"
    assert context.tags["colour"] == "blue"
    assert (
        context.remote_addr.split("://")[-1].rsplit(":", 1)[1] == link.local_addr.rsplit(":", 1)[1]
    )
    assert context.deadline is not None
    [server_link_identity] = [context.identity]
    assert server_link_identity.may_offer is False


@pytest.mark.parametrize(
    ("credential", "reason"),
    [
        (b"wrong", "credential refused"),
        (None, "a credential is required"),
        (b"expired", "token expired"),
    ],
)
async def test_a_refused_credential_fails_join_with_the_reason(
    credential: bytes | None, reason: str
) -> None:
    errors: list[BaseException] = []
    async with cs.Multiplexer(authenticate=by_token_async, on_error=errors.append) as server:
        server.handle("echo", _echo)
        address = await server.listen("tcp://127.0.0.1:0")
        with trio.fail_after(10):
            async with cs.Multiplexer(credential=credential) as client:
                with pytest.raises(cs.AuthenticationFailed, match=reason) as info:
                    await client.join(address, redial=False)
                assert info.value.reason == reason
                assert not client.links
            await wait_until(lambda: server.statistics().auth_refused == 1)
    [refusal] = [e for e in errors if isinstance(e, cs.AuthenticationFailed)]
    assert reason in str(refusal) and refusal.reason == reason


async def test_an_authenticate_that_raises_refuses_and_reports_the_cause() -> None:
    errors: list[BaseException] = []

    def broken(credential: bytes, peer: cs.PeerInfo) -> cs.Identity | None:
        raise KeyError("database down")

    async with cs.Multiplexer(authenticate=broken, on_error=errors.append) as server:
        address = await server.listen("tcp://127.0.0.1:0")
        with trio.fail_after(10):
            async with cs.Multiplexer(credential=b"x") as client:
                with pytest.raises(cs.AuthenticationFailed, match="authentication failed"):
                    await client.join(address, redial=False)
            await wait_until(lambda: bool(errors))
    [refusal] = errors
    assert isinstance(refusal, cs.AuthenticationFailed)
    assert isinstance(refusal.__cause__, KeyError)
    # The peer is told nothing of the cause.
    assert "database" not in refusal.reason


async def test_a_redialing_node_reports_refusals_and_keeps_running() -> None:
    errors: list[BaseException] = []
    async with cs.Multiplexer(authenticate=by_token) as server:
        address = await server.listen("tcp://127.0.0.1:0")
        with trio.fail_after(10):
            async with cs.Multiplexer(
                credential=b"alice-token", on_error=errors.append, redial_backoff=(0.01, 1, 0.01)
            ) as client:
                link = await client.join(address)
                # The server now refuses alice: the redials are refused and reported.
                TOKENS_BACKUP = dict(TOKENS)
                TOKENS.pop(b"alice-token")
                try:
                    await link.aclose()
                    await wait_until(
                        lambda: any(isinstance(e, cs.AuthenticationFailed) for e in errors)
                    )
                finally:
                    TOKENS.update(TOKENS_BACKUP)
                await wait_until(lambda: bool(client.links))


# ------------------------------------------- nothing before authentication


async def test_a_raw_peer_gets_nothing_before_or_without_credentials() -> None:
    ran: list[bytes] = []

    async def handler(stream: cs.LinkStream) -> None:
        ran.append(stream.header)

    async with cs.Multiplexer(authenticate=by_token) as server:
        server.handle("svc", handler)
        address = await server.listen("tcp://127.0.0.1:0")
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(*_port_of(address))
            peer = Connection(initiator=True, credential=b"forged")
            # HELLO, then at once (without waiting for ours) an OPEN and a SERVICE,
            # forged from a second connection that believes the handshake is done.
            forged = Connection(initiator=True)
            forged.receive_data(b"".join(Connection(initiator=False).take_outgoing()))
            forged.take_outgoing()
            forged.open_stream("svc", b"sneaky")
            forged.advertise("svc")
            await stream.send_all(b"".join(peer.take_outgoing() + forged.take_outgoing()))
            received = b""
            while True:
                data = await stream.receive_some()
                if not data:
                    break
                received += data
            await stream.aclose()
    events = peer.receive_data(received)
    assert events == [ConnectionTerminated(ErrorCode.AUTHENTICATION_FAILED, "credential refused")]
    assert received[4] == FrameType.GOAWAY  # not even our HELLO, nor our SERVICE "svc"
    assert b"svc" not in received
    assert ran == []


async def test_a_peer_being_judged_is_not_read_from() -> None:
    release = trio.Event()
    judging = trio.Event()

    async def slow(credential: bytes, peer: cs.PeerInfo) -> cs.Identity | None:
        judging.set()
        await release.wait()
        return None

    async with cs.Multiplexer(authenticate=slow) as server:
        address = await server.listen("tcp://127.0.0.1:0")
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(*_port_of(address))
            peer = Connection(initiator=True)
            await stream.send_all(b"".join(peer.take_outgoing()))
            await judging.wait()
            # While its credential is judged, the peer floods: nothing more is read.
            async with trio.open_nursery() as nursery:
                nursery.start_soon(stream.send_all, bytes(8 << 20))
                await trio.sleep(0.2)
                [link] = server.links
                assert link.conn.admission_pending
                assert link.conn.bytes_received < 300 << 10
                nursery.cancel_scope.cancel()
            release.set()
            await wait_until(lambda: server.statistics().auth_refused == 1)
            await trio.aclose_forcefully(stream)


# ------------------------------------------------------------- mutual TLS


@pytest.mark.parametrize("url", ["tls://127.0.0.1:0", "wss://127.0.0.1:0/cs"])
async def test_mutual_tls_gives_authenticate_the_client_certificate(url: str) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    ca.configure_trust(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    ca.issue_cert("client.example", common_name="client.example").configure_cert(client_ctx)
    peers: list[cs.PeerInfo] = []

    def by_certificate(credential: bytes, peer: cs.PeerInfo) -> cs.Identity | None:
        peers.append(peer)
        assert peer.certificate is not None
        subject = dict(item for rdn in peer.certificate["subject"] for item in rdn)
        return cs.Identity(subject["commonName"])

    async with cs.Multiplexer(authenticate=by_certificate) as server:
        server.handle("echo", _echo)
        address = await server.listen(url, ssl_context=server_ctx)
        with trio.fail_after(10):
            async with cs.Multiplexer() as client:
                await client.join(address, redial=False, ssl_context=client_ctx)
                await wait_until(lambda: bool(server.links))
                [link] = server.links
                assert link.identity == cs.Identity("client.example")
    [peer] = peers
    scheme = url.split(":", 1)[0]
    assert peer.scheme == scheme
    assert peer.certificate_der and peer.remote_addr
    assert peer.remote_addr.startswith(f"{scheme}://127.0.0.1:")


# ------------------------------------------------------------- whose offers


async def _ignored_by(server: cs.Multiplexer, name: str) -> None:
    """Wait until ``server`` ignored a SERVICE frame (the name's, the only one sent),
    then check that nothing offers the name there."""
    await wait_until(lambda: server.statistics().offers_ignored >= 1)
    assert server.links_offering(name) == []


async def test_offers_are_trusted_only_from_dialed_links_may_offer_or_accept_offers() -> None:
    async with (
        cs.Multiplexer(authenticate=by_token) as hub_auth,
        cs.Multiplexer() as hub_open,
    ):
        plain = await hub_open.listen("tcp://127.0.0.1:0")
        trusting = await hub_open.listen("tcp://127.0.0.1:0", accept_offers=True)
        authenticated = await hub_auth.listen("tcp://127.0.0.1:0")
        with trio.fail_after(10):
            # Default listener: a peer's offers are ignored (and counted).
            async with cs.Multiplexer() as spoke:
                spoke.handle("a", _echo)
                await spoke.join(plain, redial=False)
                await _ignored_by(hub_open, "a")
                # The dialing side trusts what the listening side offers.
                hub_open.handle("from-hub", _echo)
                await wait_until(lambda: bool(spoke.links_offering("from-hub")))
            # accept_offers=True on the listener.
            async with cs.Multiplexer() as spoke:
                spoke.handle("b", _echo)
                await spoke.join(trusting, redial=False)
                await wait_until(lambda: bool(hub_open.links_offering("b")))
            # An identity that may not offer, then one that may.
            async with cs.Multiplexer(credential=b"alice-token") as spoke:
                spoke.handle("c", _echo)
                await spoke.join(authenticated, redial=False)
                await _ignored_by(hub_auth, "c")
            async with cs.Multiplexer(credential=b"backend-token") as spoke:
                spoke.handle("d", _echo)
                await spoke.join(authenticated, redial=False)
                await wait_until(lambda: bool(hub_auth.links_offering("d")))
                stream = await hub_auth.open_stream("d", b"", dial_timeout=5)
                await stream.send(b"ping")
                assert await stream.receive() == b"ping"
                await stream.aclose()


async def test_a_client_of_a_router_cannot_hijack_a_backends_service() -> None:
    async def backend_source(body: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(b"backend")

    async def forged_source(body: bytes) -> AsyncIterator[cs.Source]:
        yield cs.Source(b"forged")

    async with cs.Multiplexer(router=True) as router:
        address = await router.listen("tcp://127.0.0.1:0")
        with trio.fail_after(15):
            async with cs.Multiplexer() as backend:
                # The router dials its backend: a link it dialed, so its offers count.
                backend_address = await backend.listen("tcp://127.0.0.1:0")
                await cs.Server(backend).listen_and_serve("db", backend_source)
                await router.join(backend_address, redial=False)
                await wait_until(lambda: bool(router.links_offering("db")))
                async with cs.Multiplexer() as hijacker, cs.Multiplexer() as client_mpx:
                    answered: list[bytes] = []

                    async def forged(body: bytes) -> AsyncIterator[cs.Source]:
                        answered.append(body)
                        yield cs.Source(b"forged")

                    await cs.Server(hijacker).listen_and_serve("db", forged)
                    await hijacker.join(address, redial=False)
                    await wait_until(lambda: router.statistics().offers_ignored >= 1)
                    await client_mpx.join(address, redial=False)
                    client = cs.Client(client_mpx)
                    for _ in range(20):
                        assert await _post(client, "db") == [(b"backend", [])]
                    assert answered == []
                    assert len(router.links_offering("db")) == 1


async def test_a_router_relays_the_offers_of_backends_that_may_offer() -> None:
    async with cs.Multiplexer(router=True, authenticate=by_token) as router:
        address = await router.listen("tcp://127.0.0.1:0")
        with trio.fail_after(15):
            async with (
                cs.Multiplexer(credential=b"backend-token") as backend,
                cs.Multiplexer(credential=b"alice-token") as hijacker,
                cs.Multiplexer(credential=b"alice-token") as client_mpx,
            ):
                seen = Seen()
                await cs.Server(backend).listen_and_serve("who", _whoami(seen))
                await backend.join(address, redial=False)
                hijacker.handle("who", _echo)
                await hijacker.join(address, redial=False)
                await wait_until(lambda: router.statistics().offers_ignored >= 1)
                await client_mpx.join(address, redial=False)
                client = cs.Client(client_mpx)
                for _ in range(10):
                    got = await _post(client, "who")
                    # The backend sees the router's link: it dialed it, so no identity.
                    assert got == [(b"-", [b"who"])]
                assert len(seen.contexts) == 10


# ------------------------------------------------------------------- allow


async def test_allow_refuses_a_request_before_the_source_function_runs() -> None:
    seen = Seen()
    asked: list[cs.Identity | None] = []

    async def only_alice(identity: cs.Identity | None) -> bool:
        asked.append(identity)
        await trio.lowlevel.checkpoint()
        return identity is not None and identity.name == "alice"

    def by_name(credential: bytes, peer: cs.PeerInfo) -> cs.Identity:
        return cs.Identity(credential.decode())

    async with cs.Multiplexer(authenticate=by_name) as server_mpx:
        server = cs.Server(server_mpx)
        await server.listen_and_serve("guarded", _whoami(seen), allow=only_alice)
        address = await server_mpx.listen("tcp://127.0.0.1:0")
        with trio.fail_after(10):
            async with cs.Multiplexer(credential=b"mallory") as mallory:
                await mallory.join(address, redial=False)
                with pytest.raises(cs.PermissionDenied, match="'mallory' may not use") as info:
                    await _post(cs.Client(mallory), "guarded")
                assert info.value.code == cs.ErrorCode.PERMISSION_DENIED
            assert seen.contexts == []
            async with cs.Multiplexer(credential=b"alice") as alice:
                await alice.join(address, redial=False)
                assert await _post(cs.Client(alice), "guarded") == [(b"alice", [b"guarded"])]
    assert asked == [cs.Identity("mallory"), cs.Identity("alice")]


def test_current_request_outside_a_request_is_an_error() -> None:
    with pytest.raises(RuntimeError, match="only available"):
        cs.current_request()


# ------------------------------------------------------------------ attach


async def test_attach_presents_and_judges_credentials_on_both_ends() -> None:
    with trio.fail_after(10):
        async with (
            cs.Multiplexer(authenticate=by_token) as judge,
            cs.Multiplexer(credential=b"backend-token") as good,
            cs.Multiplexer(credential=b"wrong") as bad,
        ):
            judge.handle("echo", _echo)
            good.handle("offered", _echo)
            ours, theirs = trio.testing.memory_stream_pair()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(judge.attach, theirs, accept_offers=False))
                link = await good.attach(ours)
            assert link.is_alive
            await wait_until(lambda: bool(judge.links))
            [judged] = judge.links
            assert judged.identity == cs.Identity("backend", True)
            assert judged.peer.remote_addr == "attached"
            await wait_until(lambda: bool(judge.links_offering("offered")))
            stream = await good.open_stream("echo", b"", dial_timeout=5)
            await stream.send(b"hi")
            assert await stream.receive() == b"hi"
            await stream.aclose()

            ours, theirs = trio.testing.memory_stream_pair()
            async with trio.open_nursery() as nursery:
                nursery.start_soon(partial(_attach_quietly, judge, theirs))
                with pytest.raises(cs.AuthenticationFailed, match="credential refused"):
                    await bad.attach(ours, initiator=True)
            assert judge.statistics().auth_refused == 0  # (counted for listeners only)


async def _attach_quietly(node: cs.Multiplexer, stream: trio.abc.Stream) -> None:
    with pytest.raises(cs.AuthenticationFailed):
        await node.attach(stream, initiator=False)


# ------------------------------------------------------- NO_SEND | NO_REPLY


async def test_an_open_with_no_send_and_no_reply_is_peer_input_not_our_bug() -> None:
    errors: list[BaseException] = []
    ran: list[bytes] = []

    async def source_fn(body: bytes) -> AsyncIterator[cs.Source]:
        ran.append(body)
        yield cs.Source(b"h")

    async with cs.Multiplexer(on_error=errors.append) as server_mpx:
        server = cs.Server(server_mpx, on_error=errors.append)
        await server.listen_and_serve("svc", source_fn)
        address = await server_mpx.listen("tcp://127.0.0.1:0")
        with trio.fail_after(10):
            stream = await trio.open_tcp_stream(*_port_of(address))
            peer = Connection(initiator=True)
            await stream.send_all(b"".join(peer.take_outgoing()))
            while not peer.handshake_done:
                peer.receive_data(await stream.receive_some())
            request = encode_request(Request(b"both closed"))
            peer.open_stream("svc", request, local_open=False, remote_open=False)
            peer.open_stream("svc", request, remote_open=False)
            await stream.send_all(b"".join(peer.take_outgoing()))
            await wait_until(lambda: len(errors) == 2)
            # The link still serves: a proper request on the same connection.
            sid = peer.open_stream("svc", encode_request(Request(b"fine")), local_open=False)
            await stream.send_all(b"".join(peer.take_outgoing()))
            opened: list[StreamOpened] = []
            while not opened:
                events = peer.receive_data(await stream.receive_some())
                opened += [e for e in events if isinstance(e, StreamOpened) and e.parent == sid]
            await stream.aclose()
    assert ran == [b"fine"]
    assert all(type(e) is cs.RemoteProtocolError for e in errors), errors
    assert all(
        e.code == ErrorCode.PROTOCOL_ERROR for e in errors if isinstance(e, cs.ProtocolError)
    )


# ------------------------------------------------------------- command line


async def _one_source(body: bytes) -> AsyncIterator[cs.Source]:
    name = cs.current_request().identity
    yield cs.Source(b"hello " + (b"-" if name is None else name.name.encode()))


def test_cli_parses_the_trust_options(tmp_path: Path) -> None:
    args = cli._parser().parse_args(
        ["serve", "--router", "--authenticate", "m:f", "--credential-file", "c", "--listen", "u"]
    )
    assert (args.authenticate, args.credential_file) == ("m:f", "c")
    args = cli._parser().parse_args(["post", "u", "svc", "--credential-file", "c"])
    assert args.credential_file == "c"
    path = tmp_path / "token"
    path.write_bytes(b"alice-token\n")
    assert cli.read_credential(str(path)) == b"alice-token"
    assert cli.read_credential(None) is None


async def test_cli_nodes_present_and_judge_credentials(tmp_path: Path) -> None:
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            log = io.StringIO()
            [url] = await nursery.start(
                partial(
                    cli.run_serve,
                    _one_source,
                    ["tcp://127.0.0.1:0"],
                    "hello",
                    log,
                    authenticate=by_token,
                )
            )
            out = io.StringIO()
            await cli.run_post(url, "hello", b"", 2.0, out, credential=b"alice-token")
            assert "hello alice" in out.getvalue()
            with pytest.raises(cs.ConnectionLost, match="refused our credential"):
                await cli.run_post(url, "hello", b"", 2.0, io.StringIO(), credential=b"bad")
            nursery.cancel_scope.cancel()
