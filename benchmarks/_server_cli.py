"""What every ``benchmarks.server_<peer>`` module shares: its command line and how it says
which port it bound (and, for some, which library it runs)."""

from __future__ import annotations

import argparse
import json
import sys

import attrs


@attrs.frozen
class ServerArguments:
    port: int
    #: Transport, for peers that have more than one (ours: tcp or ws).
    scheme: str
    #: ours: ``Multiplexer(resume_timeout=...)``, seconds (None: resumption off).
    resume_timeout: float | None = None
    #: ours: ``Multiplexer(resume_buffer_size=...)`` (None: the default).
    resume_buffer_size: int | None = None


def add_resume_arguments(parser: argparse.ArgumentParser) -> None:
    """``--resume-timeout`` and ``--resume-buffer-size``, which ours' server and client share."""
    parser.add_argument(
        "--resume-timeout",
        type=float,
        default=None,
        metavar="S",
        help="ours: turn resumption on, keeping a detached link S seconds (default: off)",
    )
    parser.add_argument(
        "--resume-buffer-size",
        type=int,
        default=None,
        metavar="BYTES",
        help="ours, with --resume-timeout: Multiplexer(resume_buffer_size=...) (default: its own)",
    )


def server_arguments(argv: list[str] | None = None) -> ServerArguments:
    """Parse ``--port`` (0 picks a free one), ``--scheme`` and the resumption options."""
    parser = argparse.ArgumentParser(description="One peer's benchmark server, on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    parser.add_argument("--scheme", choices=("tcp", "ws"), default="tcp", help="transport")
    add_resume_arguments(parser)
    args = parser.parse_args(argv)
    return ServerArguments(
        port=args.port,
        scheme=args.scheme,
        resume_timeout=args.resume_timeout,
        resume_buffer_size=args.resume_buffer_size,
    )


def announce(port: int, about: dict[str, str] | None = None) -> None:
    """Tell the runner the bound port: the first line on stdout, followed on that line by
    what the server says of itself (libraries and where they came from) as a JSON object."""
    sys.stdout.write(f"{port} {json.dumps(about)}\n" if about else f"{port}\n")
    sys.stdout.flush()
