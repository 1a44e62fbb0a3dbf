"""The ``chanserv-trio`` command line (also ``python -m chanserv_trio``).

- ``demo [--transport tcp|tls|ws|wss|unix]``: a server and a client in one process,
  over real loopback sockets.
- ``serve [MODULE:FUNCTION] --listen URL --join URL --name NAME [--router]``: serve a
  source function, link to other nodes (both repeatable), and with ``--router`` relay
  requests to the services of the nodes linked to this one (``--certfile``/``--keyfile``
  for ``tls://`` and ``wss://`` listeners, ``--cafile`` for joins).
- ``post URL NAME [BODY] [--join URL] [--bucket KEY]``: join one or more nodes, post a
  request and print what comes back (``--cafile`` to trust a private certificate
  authority).
- ``console --join URL --listen http://HOST:PORT`` (or ``serve --console URL``): a page
  showing the node's links, services and a post panel (needs the ``console`` extra).
"""

from __future__ import annotations

import argparse
import importlib
import ssl
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from functools import partial
from typing import Any, TextIO, cast

import trio

from ._errors import ChanservError, ConnectionLost
from .chanserv._client import Client, RemoteSource
from .chanserv._console import run_console, serve_console
from .chanserv._operations import (
    add_metrics_option,
    add_stats_parser,
    serve_operations,
    stats_command,
)
from .chanserv._server import Server, Source, SourceFunction
from .node._backoff import Backoff
from .node._multiplexer import Multiplexer
from .node._registry import Registry
from .transports._schemes import parse_url

__all__ = ["demo_source_fn", "main"]


async def _demo_frames(index: int) -> AsyncIterator[bytes]:
    yield b"wait for me!"
    await trio.sleep(0.1 * (index + 1))
    yield b"ok I'm ready"


async def demo_source_fn(request: bytes) -> AsyncIterator[Source]:
    """The demo's source function: five sources, two frames each, the second delayed."""
    for index in range(5):
        yield Source(header=b"source @%d" % index, frames=_demo_frames(index))


def _show(data: bytes) -> str:
    try:
        return data.decode()
    except UnicodeDecodeError:
        return repr(data)


async def _print_source(source: RemoteSource, out: TextIO) -> None:
    label = _show(source.header) or "<no header>"
    print(f"[{label}] announced by {source.meta.remote_addr}", file=out, flush=True)
    count = 0
    async for frame in source:
        count += 1
        print(f"[{label}] frame {count}: {_show(frame)}", file=out, flush=True)
    print(f"[{label}] done after {count} frames", file=out, flush=True)


async def _post(
    client: Client, name: str, body: bytes, out: TextIO, tags: dict[str, str] | None = None
) -> None:
    async with (
        client.lookup_and_post(name, body, tags) as sources,
        trio.open_nursery() as nursery,
    ):
        async for source in sources:
            nursery.start_soon(_print_source, source, out)


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
            raise ImportError(f"the {transport} demo needs trustme: pip install trustme") from exc
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
        address = await server_mpx.listen(url, **listen_options)
        print(f"server listening on {address}", file=out, flush=True)
        server = Server(server_mpx, on_error=lambda exc: print(f"server error: {exc!r}"))
        await server.listen_and_serve("chanserv", demo_source_fn)
        async with Multiplexer() as client_mpx:
            await client_mpx.join(address, **join_options)
            print(f"client joined {address}", file=out, flush=True)
            client = Client(client_mpx, dial_timeout=5.0)
            await _post(client, "chanserv", b"hello", out)
    print("demo finished", file=out, flush=True)


def load_source_fn(spec: str) -> SourceFunction:
    """Import ``MODULE:FUNCTION``."""
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"expected MODULE:FUNCTION, got {spec!r}")
    module = importlib.import_module(module_name)
    fn: object = module
    for part in attr.split("."):
        fn = getattr(fn, part)
    if not callable(fn):
        raise ValueError(f"{spec} is not callable")
    return cast(SourceFunction, fn)


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
    metrics: str | None = None,
    console: str | None = None,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``source_fn`` (if given) as ``name`` on every URL until cancelled, with the
    stats service, and Prometheus metrics at ``metrics`` if given;
    ``ssl_context`` serves the ``tls://`` and ``wss://`` ones.

    The node also joins every URL in ``joins`` (``join_ssl_context`` for the TLS ones),
    retrying in the background with the multiplexer's redial backoff until the node
    there is up, so nodes may start in any order. ``router`` makes it a router node.
    ``registry`` is handed to the multiplexer (a fleet's registry). ``console``
    (``http://HOST:PORT``) also serves the node's console page there.
    """
    if source_fn is None and not router:
        raise ValueError("serve needs a MODULE:FUNCTION to serve, or --router")
    if not urls and not joins and registry is None:
        raise ValueError("serve needs at least one --listen or --join URL (or --registry)")
    async with Multiplexer(router=router, registry=registry) as mpx, trio.open_nursery() as n:
        bound = [await mpx.listen(url, **_tls_options(url, ssl_context)) for url in urls]
        if source_fn is not None:
            server = Server(mpx, on_error=lambda exc: print(f"error: {exc!r}", file=sys.stderr))
            await server.listen_and_serve(name, source_fn)
            for address in bound:
                print(f"serving {name!r} on {address}", file=out, flush=True)
        if router:
            for address in bound:
                print(f"routing on {address}", file=out, flush=True)
        await n.start(
            partial(serve_operations, mpx, server if source_fn else None, metrics=metrics, out=out)
        )
        for url in joins:
            n.start_soon(_join_eventually, mpx, url, _tls_options(url, join_ssl_context), out)
        if console:
            await n.start(partial(serve_console, mpx, console, out=out))
        task_status.started(bound)
        await trio.sleep_forever()


async def _join_eventually(
    mpx: Multiplexer, url: str, options: dict[str, Any], out: TextIO
) -> None:
    """Join ``url``, retrying with the redial backoff while nobody answers there."""
    for delay in Backoff(*mpx.redial_backoff).delays():
        try:
            await mpx.join(url, **options)
        except (ChanservError, OSError) as exc:
            print(f"cannot join {url} yet ({exc}); retrying in {delay:.2g} s", file=sys.stderr)
            await trio.sleep(delay)
            continue
        print(f"joined {url}", file=out, flush=True)
        return


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
) -> None:
    """Join ``url`` and every URL in ``joins``, post ``body`` to ``name`` and print the
    sources and frames. Among several nodes offering ``name`` one is picked at random,
    or by ``bucket`` (the same key reaches the same node). A node that cannot be joined
    is reported and skipped, as long as one can."""
    async with Multiplexer(registry=registry) as mpx:
        failures: list[str] = []
        for each in (*([url] if url else []), *joins):
            try:
                await mpx.join(each, redial=False, **_tls_options(each, ssl_context))
            except ChanservError as exc:
                failures.append(f"cannot join {each}: {exc}")
        if failures and not mpx.links and registry is None:
            raise ConnectionLost("; ".join(failures))
        for failure in failures:
            print(f"chanserv-trio: {failure}", file=sys.stderr)
        tags = None if bucket is None else {"bucket": bucket}
        client = Client(mpx, dial_timeout=dial_timeout, fast_not_found=True)
        await _post(client, name, body, out, tags)


def _tls_options(url: str, ssl_context: ssl.SSLContext | None) -> dict[str, Any]:
    return {"ssl_context": ssl_context} if ssl_context and parse_url(url).tls else {}


def _server_context(certfile: str | None, keyfile: str | None) -> ssl.SSLContext | None:
    if certfile is None:
        if keyfile is not None:
            raise ValueError("--keyfile needs --certfile")
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(certfile, keyfile)
    return context


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="chanserv-trio",
        description="Stream a stream of streams over one connection.",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="run a server and a client on loopback")
    demo.add_argument(
        "--transport",
        choices=sorted(DEMO_URLS),
        default="tcp",
        help="link over tcp (default), tls, ws, wss or unix",
    )
    demo.add_argument("--listen", help="where the demo listens (default: per --transport)")
    serve = commands.add_parser("serve", help="serve a source function, or route")
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
        "--registry",
        help="publish and find nodes through etcd, e.g. etcd://127.0.0.1:2379",
    )
    serve.add_argument(
        "--registry-prefix", default="/chanserv_trio/", help="key prefix in the registry"
    )
    serve.add_argument("--console", help="also serve the node's console page, http://HOST:PORT")
    console = commands.add_parser("console", help="serve a page that shows nodes at work")
    console.add_argument("--join", action="append", required=True, help="a node's URL")
    console.add_argument("--listen", default="http://127.0.0.1:8080", help="the page's URL")
    post = commands.add_parser(
        "post",
        help="post a request and print the answer",
        usage="chanserv-trio post [options] URL NAME [BODY]\n"
        "       chanserv-trio post [options] --registry etcd://HOST:PORT NAME [BODY]",
    )
    post.add_argument(
        "words",
        nargs="+",
        metavar="URL NAME [BODY]",
        help="a node to join (left out with --registry), the service name, the body",
    )
    post.add_argument(
        "--join", action="append", default=[], help="another node to join (repeatable)"
    )
    post.add_argument("--bucket", help="route by this key: the same key, the same node")
    post.add_argument("--dial-timeout", type=float, default=10.0)
    post.add_argument("--cafile", help="trust this PEM certificate authority (tls, wss)")
    post.add_argument("--registry", help="find the nodes through etcd, e.g. etcd://127.0.0.1:2379")
    post.add_argument(
        "--registry-prefix", default="/chanserv_trio/", help="key prefix in the registry"
    )
    add_metrics_option(serve)
    add_stats_parser(commands)
    return parser


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
        raise ValueError("post takes URL NAME [BODY], or NAME [BODY] with --registry")
    return url, words[0], words[1] if len(words) > 1 else ""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point; returns the process exit status."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            trio.run(partial(run_demo, args.listen, transport=args.transport))
        elif args.command == "serve":
            sys.path.insert(0, "")
            source_fn = load_source_fn(args.function) if args.function else None
            context = _server_context(args.certfile, args.keyfile)
            join_context = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
            trio.run(
                partial(
                    run_serve,
                    source_fn,
                    args.listen,
                    args.name,
                    ssl_context=context,
                    joins=args.join,
                    join_ssl_context=join_context,
                    router=args.router,
                    registry=_registry(args.registry, args.registry_prefix),
                    metrics=args.metrics,
                    console=args.console,
                )
            )
        elif args.command == "stats":
            trio.run(stats_command, args)
        elif args.command == "console":
            trio.run(partial(run_console, args.join, args.listen))
        else:
            context = ssl.create_default_context(cafile=args.cafile) if args.cafile else None
            url, name, text = _post_words(args.words, args.registry)
            trio.run(
                partial(
                    run_post,
                    url,
                    name,
                    text.encode(),
                    args.dial_timeout,
                    ssl_context=context,
                    joins=args.join,
                    bucket=args.bucket,
                    registry=_registry(args.registry, args.registry_prefix),
                )
            )
    except KeyboardInterrupt:
        return 130
    except (ChanservError, ValueError, ImportError, AttributeError, OSError) as exc:
        print(f"chanserv-trio: error: {exc}", file=sys.stderr)
        return 1
    return 0
