"""The Sphinx site builds with warnings as errors (a broken docstring, a bad cross
reference or a missing page fails here, not only in ``nox -s docs``), and its API
reference has an entry for every exported name."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import chanserv_trio as cs

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_sphinx_site_builds_without_warnings(tmp_path: Path) -> None:
    for module in ("sphinx", "myst_parser", "furo"):
        pytest.importorskip(module)
    out = tmp_path / "html"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "sphinx",
            "-W",
            "--keep-going",
            "-q",
            "-b",
            "html",
            "-d",
            str(tmp_path / "doctrees"),
            str(ROOT / "docs"),
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr
    api = (out / "api.html").read_text(encoding="utf-8")
    for name in cs.__all__:
        assert f'id="chanserv_trio.{name}"' in api, name
    for page in ROOT.joinpath("docs").glob("*.md"):
        assert (out / f"{page.stem}.html").exists(), page.name
