"""The js-node peer's server: ours over WebSocket (``server_ours --scheme ws``), started only
where the JavaScript client can run (node, and ``js/node_modules`` from ``npm ci`` in js/),
so the runner skips the peer with that reason elsewhere.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

import trio

from ._server_cli import server_arguments
from .server_ours import main

JS = Path(__file__).resolve().parent.parent / "js"

if __name__ == "__main__":
    arguments = server_arguments()
    if shutil.which("node") is None:
        sys.exit("node is not installed")
    if not (JS / "node_modules" / "ws").is_dir():
        sys.exit("js/node_modules is missing: run npm ci in js/")
    trio.run(main, arguments.port, "ws")
