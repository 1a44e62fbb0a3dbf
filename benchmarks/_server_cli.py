"""What every ``benchmarks.server_<peer>`` module shares: its command line and how it says
which port it bound."""

from __future__ import annotations

import argparse
import sys


def server_port(argv: list[str] | None = None) -> int:
    """Parse ``--port`` (0 picks a free one)."""
    parser = argparse.ArgumentParser(description="One peer's benchmark server, on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0, help="TCP port; 0 picks a free one")
    return int(parser.parse_args(argv).port)


def announce(port: int) -> None:
    """Tell the runner the bound port: the first line on stdout."""
    sys.stdout.write(f"{port}\n")
    sys.stdout.flush()
