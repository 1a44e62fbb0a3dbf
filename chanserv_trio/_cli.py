"""The ``chanserv-trio`` command line (also ``python -m chanserv_trio``).

- ``demo [--transport tcp|tls|ws|wss|unix]``: a server and a client in one process,
  over real loopback sockets.
- ``serve [MODULE:FUNCTION] --listen URL --join URL --name NAME [--router]``: serve a
  source function, link to other nodes (both repeatable), and with ``--router`` relay
  requests to the services of the nodes linked to this one (``--certfile``/``--keyfile``
  for ``tls://`` and ``wss://`` listeners, ``--cafile`` for joins). SIGINT or SIGTERM
  stops it gracefully within ``--grace`` seconds; a second signal stops it at once.
  A router's listeners accept the services the nodes that join it offer
  (``accept_offers=True``: relaying them is its job); ``--accept-offers`` does the same
  for a plain node. ``--authenticate MODULE:FUNCTION`` judges the credentials of the
  nodes that join it (``authenticate(credential, peer)``), ``--credential-file PATH``
  presents the bytes of a file to the nodes it joins (``post`` takes it too).
- ``console --join URL --listen http://HOST:PORT`` (or ``serve --console URL``): a page
  showing the node's links, services and a post panel (needs the ``console`` extra).
- ``post URL NAME [BODY|-|@PATH] [--join URL] [--bucket KEY] [--output text|raw|json]``:
  join one or more nodes, post a request and print what comes back.

Exit status: 0 done, 1 an error (one line ``chanserv-trio: error: ...`` on stderr;
``--traceback`` or ``-v`` adds the traceback), 2 a usage error, 128 + the signal's
number when SIGINT (130) or SIGTERM (143) stopped a command before it was done.

Each subcommand is one ``async def`` taking the parsed arguments and the :class:`Run`,
and one ``_add_...`` function registering its parser (listed in ``SUBCOMMANDS``).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import importlib
import inspect
import json
import logging
import os
import signal
import ssl
import sys
import tempfile
import traceback
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, TextIO, cast

import attrs
import trio

from . import __version__
from ._errors import ChanservError, ConnectionLost, RemoteError
from .chanserv._client import Client, RemoteSource
from .chanserv._console import run_console, serve_console
from .chanserv._operations import (
    add_metrics_option,
    add_stats_parser,
    serve_operations,
    stats_command,
)
from .chanserv._server import Server, Source, SourceFunction
from .link._auth import Authenticator
from .node._backoff import Backoff
from .node._multiplexer import Multiplexer
from .node._registry import Registry
from .transports._schemes import parse_url

__all__ = ["SUBCOMMANDS", "Run", "UsageError", "demo_source_fn", "main"]

PROG = "chanserv-trio"
#: What the command line itself says: joins retried, signals received.
logger = logging.getLogger("chanserv_trio.cli")


class UsageError(ValueError):
    """The command line was used wrongly: its usage and this message, exit status 2."""


class _OutputClosed(Exception):
    """Whoever read our standard output went away (``chanserv-trio demo | head -3``)."""


#: Failures an operator can act on: one line each, no traceback.
EXPECTED = (ChanservError, OSError, ValueError, ImportError, _OutputClosed, UsageError)


# ------------------------------------------------------------------ output


def _emit(out: TextIO, line: str) -> None:
    try:
        print(line, file=out, flush=True)
    except BrokenPipeError as exc:
        raise _OutputClosed() from exc


def _escape_table() -> dict[int, str]:
    named = {0x09: "\\t", 0x0A: "\\n", 0x0D: "\\r"}
    table = {code: named.get(code, f"\\x{code:02x}") for code in (*range(0x20), 0x7F)}
    table.update({code: f"\\x{code:02x}" for code in range(0x80, 0xA0)})
    # Line separators and the bidirectional overrides that can reorder what a terminal shows.
    for code in (0x2028, 0x2029, *range(0x202A, 0x202F), *range(0x2066, 0x206A)):
        table[code] = f"\\u{code:04x}"
    return table


_ESCAPES = _escape_table()


def escape(data: bytes) -> str:
    """``data`` as one line of text for a terminal: UTF-8 where it is valid, every control
    character and invalid byte as a backslash escape."""
    return data.decode("utf-8", "backslashreplace").translate(_ESCAPES)


def _encoded(data: bytes) -> tuple[str, str]:
    """``data`` for JSON: (text, "utf-8") when it is valid UTF-8, else (base64, "base64")."""
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), "base64"


class _Printer:
    """How ``post`` and ``demo`` show sources and frames: ``text`` (escaped, one line
    each), ``raw`` (the frames' bytes alone, as they come) or ``json`` (one object a line
    for each source's header, each frame and each source's end)."""

    def __init__(self, out: TextIO, output: str = "text") -> None:
        if output not in ("text", "raw", "json"):
            raise ValueError(f"unknown output format {output!r}")
        self.out = out
        self.output = output
        self._sources = 0

    def _json(self, **fields: object) -> None:
        _emit(self.out, json.dumps(fields, ensure_ascii=False))

    def source(self, source: RemoteSource) -> int:
        index = self._sources
        self._sources += 1
        if self.output == "json":
            header, encoding = _encoded(source.header)
            remote = source.meta.remote_addr
            self._json(
                type="source", source=index, header=header, encoding=encoding, remote=remote
            )
        elif self.output == "text":
            label = escape(source.header) or "<no header>"
            _emit(self.out, f"[{label}] announced by {source.meta.remote_addr}")
        return index

    def frame(self, index: int, label: str, count: int, frame: bytes) -> None:
        if self.output == "json":
            data, encoding = _encoded(frame)
            self._json(type="frame", source=index, frame=count, data=data, encoding=encoding)
        elif self.output == "text":
            _emit(self.out, f"[{label}] frame {count}: {escape(frame)}")
        else:
            try:
                self.out.buffer.write(frame)
                self.out.buffer.flush()
            except BrokenPipeError as exc:
                raise _OutputClosed() from exc

    def end(self, index: int, label: str, count: int) -> None:
        if self.output == "json":
            self._json(type="end", source=index, frames=count)
        elif self.output == "text":
            _emit(self.out, f"[{label}] done after {count} frames")


async def _print_source(source: RemoteSource, printer: _Printer) -> None:
    index = printer.source(source)
    label = escape(source.header) or "<no header>"
    count = 0
    async for frame in source:
        count += 1
        printer.frame(index, label, count, frame)
    printer.end(index, label, count)


async def _post(
    client: Client,
    name: str,
    body: bytes,
    printer: _Printer,
    tags: dict[str, str] | None = None,
) -> None:
    async with (
        client.lookup_and_post(name, body, tags) as sources,
        trio.open_nursery() as nursery,
    ):
        async for source in sources:
            nursery.start_soon(_print_source, source, printer)


# -------------------------------------------------------------------- demo


async def _demo_frames(index: int) -> AsyncIterator[bytes]:
    yield b"wait for me!"
    await trio.sleep(0.1 * (index + 1))
    yield b"ok I'm ready"


async def demo_source_fn(request: bytes) -> AsyncIterator[Source]:
    """The demo's source function: five sources, two frames each, the second delayed."""
    for index in range(5):
        yield Source(header=b"source @%d" % index, frames=_demo_frames(index))


DEMO_URLS = {
    "tcp": "tcp://127.0.0.1:0",
    "tls": "tls://127.0.0.1:0",
    "ws": "ws://127.0.0.1:0/chanserv",
    "wss": "wss://127.0.0.1:0/chanserv",
    "unix": "unix://{tmp}/chanserv.sock",
}


@contextmanager
def _demo_endpoint(
    url: str | None, transport: str
) -> Iterator[tuple[str, dict[str, Any], dict[str, Any]]]:
    """The demo's listen URL with its listen and join options: a throwaway certificate
    authority (made with trustme) for tls:// and wss://, a temporary directory for unix://."""
    with tempfile.TemporaryDirectory() as tmp:
        url = url or DEMO_URLS[transport].format(tmp=tmp)
        if not parse_url(url).tls:
            yield url, {}, {}
            return
        try:
            import trustme
        except ImportError as exc:
            raise ImportError(
                f"the {parse_url(url).scheme} demo makes its certificates with trustme: "
                f"pip install 'chanserv-trio[demo]'"
            ) from exc
        authority = trustme.CA()
        server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        authority.issue_cert("127.0.0.1", "localhost").configure_cert(server_context)
        client_context = ssl.create_default_context()
        authority.configure_trust(client_context)
        yield url, {"ssl_context": server_context}, {"ssl_context": client_context}


async def run_demo(
    url: str | None = None, out: TextIO = sys.stdout, *, transport: str = "tcp"
) -> None:
    """Serve the demo source function and post to it, printing as frames arrive.

    It listens on ``url``, by default a loopback address of ``transport``.
    """
    with _demo_endpoint(url, transport) as (url, listen_options, join_options):
        await _run_demo(url, out, listen_options, join_options)


async def _run_demo(
    url: str, out: TextIO, listen_options: dict[str, Any], join_options: dict[str, Any]
) -> None:
    async with Multiplexer() as server_mpx:
        address = await _listen(server_mpx, url, listen_options)
        _emit(out, f"server listening on {address}")
        await Server(server_mpx).listen_and_serve("chanserv", demo_source_fn)
        async with Multiplexer() as client_mpx:
            await client_mpx.join(address, **join_options)
            _emit(out, f"client joined {address}")
            client = Client(client_mpx, dial_timeout=5.0)
            await _post(client, "chanserv", b"hello", _Printer(out))
    _emit(out, "demo finished")


# ------------------------------------------------------------------- serve


def load_source_fn(spec: str) -> SourceFunction:
    """Import ``MODULE:FUNCTION`` and check it can be a source function: a callable
    taking one argument (the request body), not a coroutine function. ``UsageError``
    for a spec of the wrong shape, ``ValueError`` saying what is wrong otherwise."""
    fn = load_function(spec)
    check_source_fn(fn, spec)
    return cast(SourceFunction, fn)


def load_function(spec: str) -> object:
    """Import ``MODULE:FUNCTION`` (any attribute): ``UsageError`` for a spec of the
    wrong shape, ``ValueError`` when it cannot be imported or found."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"expected MODULE:FUNCTION, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ValueError(f"cannot import {module_name!r} (from {spec}): {exc}") from exc
    fn: object = module
    for part in attr.split("."):
        try:
            fn = getattr(fn, part)
        except AttributeError:
            raise ValueError(f"{spec}: {module_name!r} has no attribute {attr!r}") from None
    return fn


def check_source_fn(fn: object, name: str) -> None:
    """``ValueError`` unless ``fn`` is a callable that takes one positional argument and
    is no coroutine function (a source function yields sources: an async generator)."""
    if not callable(fn):
        raise ValueError(f"{name} is a {type(fn).__name__}, not a function")
    if inspect.iscoroutinefunction(fn):
        raise ValueError(
            f"{name} is an 'async def' without 'yield': a source function is an async "
            f"generator of Source (or returns an async iterable of Source)"
        )
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # nothing to check against (some builtins)
    try:
        signature.bind(b"")
    except TypeError:
        raise ValueError(
            f"{name} must take one argument, the request body, but its signature is {signature}"
        ) from None


class Shutdown:
    """Stops :func:`run_serve`: :meth:`request` once for a graceful stop (peers are told
    GOAWAY, requests in flight get the grace period, the rest end with
    :class:`~chanserv_trio.ServerShuttingDown`), a second time to stop at once."""

    def __init__(self) -> None:
        self.requested = trio.Event()
        #: True once asked a second time.
        self.forced = False
        self._now: Callable[[], object] | None = None

    def request(self) -> None:
        if not self.requested.is_set():
            self.requested.set()
            return
        self.forced = True
        if self._now is not None:
            self._now()


async def run_serve(
    source_fn: SourceFunction | None,
    urls: Sequence[str],
    name: str,
    out: TextIO = sys.stdout,
    *,
    ssl_context: ssl.SSLContext | None = None,
    joins: Sequence[str] = (),
    join_ssl_context: ssl.SSLContext | None = None,
    router: bool = False,
    registry: Registry | None = None,
    grace: float = 10.0,
    shutdown: Shutdown | None = None,
    metrics: str | None = None,
    accept_offers: bool | None = None,
    credential: bytes | None = None,
    authenticate: Authenticator | None = None,
    console: str | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``source_fn`` (if given) as ``name`` on every URL until cancelled, or until
    ``shutdown`` is requested, with the stats service, and Prometheus metrics at
    ``metrics`` if given; ``ssl_context`` serves the ``tls://`` and ``wss://`` ones.

    The node also joins every URL in ``joins`` (``join_ssl_context`` for the TLS ones),
    retrying in the background with the multiplexer's redial backoff until the node
    there is up, so nodes may start in any order. ``router`` makes it a router node.
    ``registry`` is handed to the multiplexer (a fleet's registry). A graceful stop
    gives requests in flight ``grace`` seconds. ``accept_offers`` (None: the same as
    ``router``) lets the peers that join the listeners offer services: a router relays
    what the nodes that join it serve. ``credential`` and ``authenticate`` are the
    multiplexer's.
    ``console`` (``http://HOST:PORT``) also serves the node's console page there.
    """
    if source_fn is None and not router:
        raise ValueError("serve needs a MODULE:FUNCTION to serve, or --router")
    if not urls and not joins and registry is None:
        raise ValueError("serve needs at least one --listen or --join URL (or --registry)")
    # ``outer`` outlives the node: a second request to stop runs mpx.shutdown(0) there,
    # beside the graceful one the node's exit is waiting for.
    async with (
        trio.open_nursery() as outer,
        Multiplexer(
            router=router,
            registry=registry,
            shutdown_grace=grace,
            credential=credential,
            authenticate=authenticate,
        ) as mpx,
        trio.open_nursery() as nursery,
    ):
        if shutdown is not None:
            shutdown._now = lambda: outer.start_soon(mpx.shutdown, 0.0)
        options = {"accept_offers": router if accept_offers is None else accept_offers}
        bound = [await _listen(mpx, url, options | _tls_options(url, ssl_context)) for url in urls]
        server: Server | None = None
        if source_fn is not None:
            server = Server(mpx)
            await server.listen_and_serve(name, source_fn)
            for address in bound:
                _emit(out, f"serving {name!r} on {address}")
        if router:
            for address in bound:
                _emit(out, f"routing on {address}")
        await nursery.start(partial(serve_operations, mpx, server, metrics=metrics, out=out))
        for url in joins:
            options = _tls_options(url, join_ssl_context)
            nursery.start_soon(_join_eventually, mpx, url, options, out)
        if console:
            await nursery.start(partial(serve_console, mpx, console, out=out))
        task_status.started(bound)
        if shutdown is None:
            await trio.sleep_forever()
        else:
            await shutdown.requested.wait()
            if shutdown.forced:
                await mpx.shutdown(0.0)
        nursery.cancel_scope.cancel()
    # Leaving the block shuts the node down gracefully (Multiplexer.shutdown).


async def _join_eventually(
    mpx: Multiplexer, url: str, options: dict[str, Any], out: TextIO
) -> None:
    """Join ``url``, retrying with the redial backoff while nobody answers there."""
    for delay in Backoff(*mpx.redial_backoff).delays():
        try:
            await mpx.join(url, **options)
        except (ChanservError, OSError) as exc:
            logger.warning("cannot join %s yet (%s); retrying in %.2g s", url, exc, delay)
            await trio.sleep(delay)
            continue
        _emit(out, f"joined {url}")
        return


# -------------------------------------------------------------------- post


async def run_post(
    url: str | None,
    name: str,
    body: bytes,
    dial_timeout: float,
    out: TextIO = sys.stdout,
    *,
    ssl_context: ssl.SSLContext | None = None,
    joins: Sequence[str] = (),
    bucket: str | None = None,
    registry: Registry | None = None,
    output: str = "text",
    credential: bytes | None = None,
) -> None:
    """Join ``url`` and every URL in ``joins``, post ``body`` to ``name`` and print the
    sources and frames (``output``: ``text``, ``raw`` or ``json``; ``raw`` writes to
    ``out.buffer``). Among several nodes offering ``name`` one is picked at random,
    or by ``bucket`` (the same key reaches the same node). A node that cannot be joined
    is reported and skipped, as long as one can."""
    printer = _Printer(out, output)
    async with Multiplexer(registry=registry, credential=credential) as mpx:
        failures: list[str] = []
        for each in (*([url] if url else []), *joins):
            try:
                await mpx.join(each, redial=False, **_tls_options(each, ssl_context))
            except ChanservError as exc:
                failures.append(f"cannot join {each}: {exc}")
        if failures and not mpx.links and registry is None:
            raise ConnectionLost("; ".join(failures))
        for failure in failures:
            logger.warning("%s", failure)
        tags = None if bucket is None else {"bucket": bucket}
        client = Client(mpx, dial_timeout=dial_timeout, fast_not_found=True)
        await _post(client, name, body, printer, tags)


# ------------------------------------------------------------ shared helpers


async def _listen(mpx: Multiplexer, url: str, options: dict[str, Any]) -> str:
    try:
        return await mpx.listen(url, **options)
    except OSError as exc:
        raise OSError(f"cannot listen on {url}: {_reason(exc)}") from exc


def _tls_options(url: str, ssl_context: ssl.SSLContext | None) -> dict[str, Any]:
    return {"ssl_context": ssl_context} if ssl_context and parse_url(url).tls else {}


def _server_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if certfile is None:
        if keyfile is not None:
            raise UsageError("--keyfile needs --certfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    try:
        context.load_cert_chain(certfile, keyfile)
    except OSError as exc:
        files = certfile if keyfile is None else f"{certfile} and {keyfile}"
        raise OSError(f"cannot load the certificate from {files}: {_reason(exc)}") from exc
    return context


def _trust(cafile: str | None) -> ssl.SSLContext | None:
    if cafile is None:
        return None
    try:
        return ssl.create_default_context(cafile=cafile)
    except OSError as exc:
        raise OSError(f"cannot load --cafile {cafile}: {_reason(exc)}") from exc


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def _add_credential_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--credential-file",
        metavar="PATH",
        help="present the bytes of this file (a final newline dropped) to the nodes joined",
    )


def read_credential(path: str | None) -> bytes | None:
    """The credential in the file at ``path`` (one final newline dropped), or None."""
    if path is None:
        return None
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        raise OSError(f"cannot read --credential-file {path}: {_reason(exc)}") from exc
    return data.removesuffix(b"\n").removesuffix(b"\r")


def _registry(url: str | None, prefix: str) -> Registry | None:
    if url is None:
        return None
    from .node._registry_etcd import EtcdRegistry

    return EtcdRegistry(url, prefix=prefix)


def _post_words(words: Sequence[str], registry: str | None) -> tuple[str | None, str, str]:
    """``URL NAME [BODY]``, or ``NAME [BODY]`` when a registry finds the nodes."""
    words = list(words)
    url = None if registry else (words.pop(0) if words else None)
    if not words or len(words) > 2 or (url is None and not registry):
        raise UsageError("post takes URL NAME [BODY], or NAME [BODY] with --registry")
    return url, words[0], words[1] if len(words) > 1 else ""


async def _read_body(word: str) -> bytes:
    """A body from the command line: ``-`` reads standard input, ``@PATH`` a file."""
    if word == "-":
        return await trio.to_thread.run_sync(sys.stdin.buffer.read, abandon_on_cancel=True)
    if word.startswith("@"):
        path = word[1:]
        try:
            return await trio.Path(path).read_bytes()
        except OSError as exc:
            raise OSError(f"cannot read the body from {path}: {_reason(exc)}") from exc
    return word.encode()


# ------------------------------------------------------- running a command


@attrs.define(eq=False)
class Run:
    """What a running subcommand sees of its process: the signals that reach it.

    SIGINT and SIGTERM stop a command at once (exit status 128 + the signal) unless it
    set :attr:`on_signal`, which is then called with each one instead.
    """

    on_signal: Callable[[int], object] | None = None
    #: The signal that stopped the command.
    stopped_by: int | None = None


Command = Callable[[argparse.Namespace, Run], Awaitable[int]]


async def _run(command: Command, args: argparse.Namespace, run: Run) -> int:
    status = 1
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:

            async def take_signals() -> None:
                async for signum in signals:
                    if run.on_signal is not None:
                        run.on_signal(signum)
                        continue
                    run.stopped_by = signum
                    nursery.cancel_scope.cancel()

            nursery.start_soon(take_signals)
            status = await command(args, run)
            nursery.cancel_scope.cancel()
    return status if run.stopped_by is None else 128 + run.stopped_by


# ---------------------------------------------------------- the subcommands


def _add_demo(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="run a server and a client on loopback", parents=[_common()]
    )
    demo.add_argument(
        "--transport",
        choices=sorted(DEMO_URLS),
        help="link over tcp (default), tls, ws, wss or unix (tls, wss: the demo extra)",
    )
    demo.add_argument("--listen", help="where the demo listens (default: per --transport)")
    demo.set_defaults(command=_demo, subparser=demo, default_log_level="error")


async def _demo(args: argparse.Namespace, run: Run) -> int:
    transport = args.transport
    if args.listen is not None:
        try:
            scheme = parse_url(args.listen).scheme
        except ValueError as exc:
            raise UsageError(f"--listen: {exc}") from None
        if transport is not None and scheme != transport:
            raise UsageError(f"--transport {transport} does not match --listen {args.listen}")
        transport = scheme
    await run_demo(args.listen, sys.stdout, transport=transport or "tcp")
    return 0


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve", help="serve a source function, or route", parents=[_common()]
    )
    serve.add_argument(
        "function",
        nargs="?",
        help="MODULE:FUNCTION, an async generator of Source (optional with --router)",
    )
    serve.add_argument("--listen", action="append", default=[], help="URL to listen on")
    serve.add_argument(
        "--join", action="append", default=[], help="URL of a node to link to (repeatable)"
    )
    serve.add_argument(
        "--router",
        action="store_true",
        help="relay requests to the services of the nodes linked to this one",
    )
    serve.add_argument("--cafile", help="trust this PEM certificate authority for --join")
    serve.add_argument("--name", default="chanserv", help="service name (default: chanserv)")
    serve.add_argument("--certfile", help="PEM certificate chain for tls:// and wss:// URLs")
    serve.add_argument("--keyfile", help="PEM private key (if not in --certfile)")
    serve.add_argument(
        "--grace",
        type=float,
        default=10.0,
        metavar="SECONDS",
        help="on SIGINT or SIGTERM, give requests in flight this long (default: 10)",
    )
    serve.add_argument(
        "--registry",
        help="publish and find nodes through etcd, e.g. etcd://127.0.0.1:2379",
    )
    serve.add_argument(
        "--registry-prefix", default="/chanserv_trio/", help="key prefix in the registry"
    )
    serve.add_argument(
        "--accept-offers",
        action="store_true",
        default=None,
        help="use the services the nodes that join this one offer (always on with --router)",
    )
    serve.add_argument(
        "--authenticate",
        metavar="MODULE:FUNCTION",
        help="judge the credentials of the nodes that join this one: "
        "FUNCTION(credential, peer) returns a chanserv_trio.Identity, or None to refuse",
    )
    _add_credential_option(serve)
    add_metrics_option(serve)
    serve.add_argument("--console", help="also serve the node's console page, http://HOST:PORT")
    serve.set_defaults(command=_serve, subparser=serve, default_log_level="info")


async def _serve(args: argparse.Namespace, run: Run) -> int:
    if args.function is None and not args.router:
        raise UsageError("serve needs a MODULE:FUNCTION to serve, or --router")
    if not args.listen and not args.join and args.registry is None:
        raise UsageError("serve needs at least one --listen or --join URL (or --registry)")
    if not args.grace >= 0:
        raise UsageError(f"--grace must be a number of seconds >= 0, not {args.grace}")
    for url in (*args.listen, *args.join):
        try:
            endpoint = parse_url(url)
        except ValueError as exc:
            raise UsageError(str(exc)) from None
        if endpoint.tls and url in args.listen and args.certfile is None:
            raise UsageError(f"--listen {url} needs --certfile (a PEM certificate chain)")
    if "" not in sys.path:
        sys.path.insert(0, "")  # MODULE may be in the working directory
    source_fn = load_source_fn(args.function) if args.function else None
    context = _server_context(args.certfile, args.keyfile)
    shutdown = Shutdown()
    forced: list[int] = []

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if shutdown.requested.is_set():
            logger.warning("%s again: stopping at once", name)
            forced.append(signum)
        else:
            logger.info(
                "%s: shutting down gracefully (%g s of grace; %s again stops at once)",
                name,
                args.grace,
                name,
            )
        shutdown.request()

    run.on_signal = on_signal
    await run_serve(
        source_fn,
        args.listen,
        args.name,
        sys.stdout,
        ssl_context=context,
        joins=args.join,
        join_ssl_context=_trust(args.cafile),
        router=args.router,
        registry=_registry(args.registry, args.registry_prefix),
        grace=args.grace,
        shutdown=shutdown,
        metrics=args.metrics,
        accept_offers=True if args.accept_offers or args.router else None,
        credential=read_credential(args.credential_file),
        authenticate=cast(Authenticator, load_function(args.authenticate))
        if args.authenticate
        else None,
        console=args.console,
    )
    logger.info("stopped")
    return 128 + forced[0] if forced else 0


def _add_console(commands: Any) -> None:
    console = commands.add_parser(
        "console", help="serve a page that shows nodes at work", parents=[_common()]
    )
    console.add_argument("--join", action="append", required=True, help="a node's URL")
    console.add_argument("--listen", default="http://127.0.0.1:8080", help="the page's URL")
    console.set_defaults(command=_console_command, subparser=console, default_log_level="info")


async def _console_command(args: argparse.Namespace, run: Run) -> int:
    await run_console(args.join, args.listen)
    return 0


def _add_post(commands: Any) -> None:
    post = commands.add_parser(
        "post",
        help="post a request and print the answer",
        usage=f"{PROG} post [options] URL NAME [BODY | - | @PATH]\n"
        f"       {PROG} post [options] --registry etcd://HOST:PORT NAME [BODY | - | @PATH]",
        parents=[_common()],
    )
    post.add_argument(
        "words",
        nargs="+",
        metavar="URL NAME [BODY]",
        help="a node to join (left out with --registry), the service name, the body "
        "(- reads it from standard input, @PATH from a file)",
    )
    post.add_argument(
        "--join", action="append", default=[], help="another node to join (repeatable)"
    )
    post.add_argument("--bucket", help="route by this key: the same key, the same node")
    post.add_argument("--dial-timeout", type=float, default=10.0)
    post.add_argument("--cafile", help="trust this PEM certificate authority (tls, wss)")
    _add_credential_option(post)
    post.add_argument(
        "--output",
        choices=("text", "raw", "json"),
        default="text",
        help="text (default: a line per header and frame, control bytes escaped), raw "
        "(the frames' bytes only), json (an object a line; bytes as UTF-8 or base64)",
    )
    post.add_argument("--registry", help="find the nodes through etcd, e.g. etcd://127.0.0.1:2379")
    post.add_argument(
        "--registry-prefix", default="/chanserv_trio/", help="key prefix in the registry"
    )
    post.set_defaults(command=_post_command, subparser=post, default_log_level="error")


async def _post_command(args: argparse.Namespace, run: Run) -> int:
    url, name, word = _post_words(args.words, args.registry)
    if args.dial_timeout < 0:
        raise UsageError("--dial-timeout must not be negative")
    body = await _read_body(word)
    await run_post(
        url,
        name,
        body,
        args.dial_timeout,
        sys.stdout,
        ssl_context=_trust(args.cafile),
        joins=args.join,
        bucket=args.bucket,
        registry=_registry(args.registry, args.registry_prefix),
        output=args.output,
        credential=read_credential(args.credential_file),
    )
    return 0


#: Each registers one subcommand on the subparsers; its parser's ``command`` default is
#: the ``async def (args, run) -> exit status`` that runs it.
def _add_stats(commands: Any) -> None:
    stats = add_stats_parser(commands, parents=[_common()])
    stats.set_defaults(command=stats_command, subparser=stats, default_log_level="error")


SUBCOMMANDS: list[Callable[[Any], None]] = [
    _add_demo,
    _add_serve,
    _add_post,
    _add_stats,
    _add_console,
]


# ---------------------------------------------------------------- the parser


LEVELS = ("debug", "info", "warning", "error", "critical")


def _common() -> argparse.ArgumentParser:
    """The options every subcommand takes, also accepted before it."""
    common = argparse.ArgumentParser(add_help=False, argument_default=argparse.SUPPRESS)
    group = common.add_argument_group("logging and errors")
    group.add_argument(
        "-v", "--verbose", action="count", help="log more (repeatable); show tracebacks"
    )
    group.add_argument("-q", "--quiet", action="count", help="log less (repeatable)")
    group.add_argument(
        "--log-level", type=str.lower, choices=LEVELS, help="log this level and above"
    )
    group.add_argument(
        "--log-format", choices=("text", "json"), help="log lines as text (default) or JSON"
    )
    group.add_argument("--traceback", action="store_true", help="show the traceback of an error")
    return common


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Stream a stream of streams over one connection.",
        epilog="Exit status: 0 done, 1 error, 2 usage error, 130 SIGINT, 143 SIGTERM.",
        parents=[_common()],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command_name", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(commands)
    return parser


# ------------------------------------------------------------------- logging


class JsonFormatter(logging.Formatter):
    """One JSON object a line: time (UTC, ISO 8601), level, logger, message and, for an
    exception, its traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.datetime.fromtimestamp(record.created, datetime.UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["traceback"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


def _log_level(args: argparse.Namespace) -> int:
    """``--log-level``, else the command's default (serve: info; post, demo: error)
    made more verbose by each ``-v`` (the first reaches info at least) and less by
    each ``-q``."""
    named: str | None = getattr(args, "log_level", None)
    if named is None:
        index = LEVELS.index(getattr(args, "default_log_level", "warning"))
        verbose = getattr(args, "verbose", 0)
        if verbose:
            index = min(index - verbose, LEVELS.index("info") - verbose + 1)
        index += getattr(args, "quiet", 0)
        named = LEVELS[max(0, min(len(LEVELS) - 1, index))]
    return cast(int, getattr(logging, named.upper()))


@contextmanager
def _logging(args: argparse.Namespace) -> Iterator[None]:
    """Log the package's records to standard error for the time of the command."""
    handler = logging.StreamHandler(sys.stderr)
    if getattr(args, "log_format", "text") == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    package, own = logging.getLogger("chanserv_trio"), logger
    previous = package.level, own.level
    level = _log_level(args)
    package.setLevel(level)
    if not any(hasattr(args, name) for name in ("log_level", "verbose", "quiet")):
        # By default the command's own warnings show (a node post skipped) even where
        # the library's do not: a failure is then the one line saying so.
        own.setLevel(min(level, logging.WARNING))
    package.addHandler(handler)
    try:
        yield
    finally:
        package.removeHandler(handler)
        package.setLevel(previous[0])
        own.setLevel(previous[1])


# ---------------------------------------------------------------------- main


def _leaves(exc: BaseException) -> list[BaseException]:
    if isinstance(exc, BaseExceptionGroup):
        return [leaf for inner in exc.exceptions for leaf in _leaves(inner)]
    return [exc]


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    if isinstance(exc, RemoteError):
        return f"the service failed: {text}"
    return text


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that flushing it at exit stays quiet."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass


def _failed(exc: BaseException, args: argparse.Namespace, run: Run) -> int:
    """The exit status for ``exc``, having said what went wrong."""
    leaves = _leaves(exc)
    if run.stopped_by is not None:
        return 128 + run.stopped_by
    if any(isinstance(leaf, KeyboardInterrupt) for leaf in leaves):
        return 128 + signal.SIGINT
    if any(isinstance(leaf, _OutputClosed) for leaf in leaves):
        _silence_stdout()
        return 1
    for leaf in leaves:
        if isinstance(leaf, UsageError):
            args.subparser.print_usage(sys.stderr)
            print(f"{args.subparser.prog}: error: {leaf}", file=sys.stderr)
            return 2
    for leaf in leaves:
        if isinstance(leaf, SystemExit):
            return leaf.code if isinstance(leaf.code, int) else 1
    unexpected = [leaf for leaf in leaves if not isinstance(leaf, EXPECTED)]
    if unexpected:  # a bug: the whole story
        first = unexpected[0]
        traceback.print_exception(first)
        print(f"{PROG}: error: unexpected {type(first).__name__}: {first}", file=sys.stderr)
        return 1
    if getattr(args, "traceback", False) or getattr(args, "verbose", 0):
        traceback.print_exception(leaves[0])
    print(f"{PROG}: error: {_describe(leaves[0])}", file=sys.stderr)
    return 1


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    try:
        args = _parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, usage errors
        return exc.code if isinstance(exc.code, int) else 2
    run = Run()
    with _logging(args):
        try:
            return trio.run(_run, args.command, args, run)
        except BaseException as exc:
            return _failed(exc, args, run)
