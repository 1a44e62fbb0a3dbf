"""Which source tree a benchmark process imports chanserv_trio from.

The ``ours`` peers run this tree: their processes start in its root, which comes first on
``sys.path``. The ``base`` peers (``--baseline PATH``) run another checkout of chanserv_trio
with *this* tree's benchmark code, so both sides run the same workloads. Neither tree's root
can simply go first on the path: this one holds its own ``chanserv_trio``, and the other may
hold a ``benchmarks`` of its own. So a base process starts in a folder of its own that holds
just two links, ``chanserv_trio`` to PATH's package and ``benchmarks`` to this tree's, and that
folder is the first entry of its ``PYTHONPATH``. PATH may also be an environment's
site-packages folder holding the compiled build (``nox -s compiled`` measures it so): its
mypyc runtime module is linked too. Every process reports the package it imported
(:func:`imported_package`) and the runner checks it against :func:`expected_package`.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

#: This tree's root: the benchmark code always comes from here.
ROOT = Path(__file__).resolve().parent.parent
PACKAGE = "chanserv_trio"


def source_tree(path: str | Path) -> Path:
    """``path`` resolved, if it is a tree with a chanserv_trio package; ValueError if not."""
    tree = Path(path).expanduser().resolve()
    if not (tree / PACKAGE / "__init__.py").is_file():
        raise ValueError(f"{path} holds no {PACKAGE}/__init__.py")
    return tree


def expected_package(tree: Path | None) -> Path:
    """The package folder a process launched for ``tree`` (None: this tree) must import."""
    return ((tree or ROOT) / PACKAGE).resolve()


def _import_folder(tree: Path, scratch: Path) -> Path:
    """A folder holding only links to ``tree``'s chanserv_trio and this tree's benchmarks."""
    folder = scratch / f"imports-{hashlib.sha256(bytes(tree)).hexdigest()[:12]}"
    if not folder.is_dir():
        folder.mkdir(parents=True)
        (folder / PACKAGE).symlink_to(tree / PACKAGE, target_is_directory=True)
        (folder / "benchmarks").symlink_to(ROOT / "benchmarks", target_is_directory=True)
        # A compiled build (setup.py, CHANSERV_TRIO_MYPYC=1) installed in a site-packages
        # folder has its mypyc runtime beside the package, as a module of its own.
        for runtime in tree.glob("*__mypyc.*"):
            (folder / runtime.name).symlink_to(runtime)
    return folder


def launch(tree: Path | None, scratch: Path) -> tuple[Path, dict[str, str]]:
    """The working directory and environment for a benchmark subprocess
    (``python -m benchmarks...``) that imports chanserv_trio from ``tree``, or from this tree
    when ``tree`` is None. ``scratch`` is where the link folder goes, if one is needed."""
    env = dict(os.environ)
    folder = ROOT if tree is None else _import_folder(tree, scratch)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), *filter(None, [env.get("PYTHONPATH")])])
    env.setdefault("PYTHONUNBUFFERED", "1")
    return folder, env


def imported_package() -> str:
    """The folder this process's chanserv_trio was imported from, links resolved."""
    import chanserv_trio

    return str(Path(chanserv_trio.__file__).resolve().parent)


def run_report(
    tree: Path | None, scratch: Path, module: str, *args: str, timeout: float = 600
) -> dict[str, Any]:
    """Run ``python -m module *args --report`` in a process that imports chanserv_trio from
    ``tree`` (see :func:`launch`) and return the JSON object its last line prints, once
    its ``package`` is checked to be the one ``tree`` holds."""
    cwd, env = launch(tree, scratch)
    done = subprocess.run(
        [sys.executable, "-m", module, *args, "--report"],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
        check=True,
        timeout=timeout,
    )
    report: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    expected = str(expected_package(tree))
    if report["package"] != expected:
        raise SystemExit(f"imported {PACKAGE} from {report['package']}, not {expected}")
    return report
