"""The JavaScript package in ``js/``, driven from pytest so the README's test command runs it.

``npm ci`` installs its development tools when ``js/node_modules`` is missing; then
``node --test`` runs its suites: the codec, LZ4 and connection state machine with
property tests, post/serve between two nodes in memory, the worked example of
``docs/protocol.md``, the declarations in ``js/types``, the end-to-end tests against
this repository's Python node (``js/test/server.py``, run with this interpreter), and
the page in a headless Chromium. Without node (or Chromium) the tests say so in their
skip reason.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
JS = ROOT / "js"
NODE = shutil.which("node")
NPM = shutil.which("npm")
CHROMIUM = os.environ.get("CHANSERV_CHROMIUM", "/usr/bin/chromium")

pytestmark = pytest.mark.skipif(
    NODE is None or NPM is None,
    reason="node and npm are not installed: the JavaScript package's tests need Node 20 or later",
)

UNIT_SUITES = [
    "test/codec.test.js",
    "test/lz4.test.js",
    "test/connection.test.js",
    "test/node.test.js",
    "test/websocket.test.js",
    "test/docs.test.js",
    "test/types.test.js",
]


@pytest.fixture(scope="module")
def node_modules() -> Path:
    """The package's development dependencies, installed from its lock file if missing."""
    modules = JS / "node_modules"
    if not modules.is_dir():
        assert NPM is not None
        subprocess.run(
            [NPM, "ci", "--no-audit", "--no-fund"],
            cwd=JS,
            check=True,
            timeout=600,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
    return modules


def run_node_tests(files: list[str], **env: str) -> tuple[dict[str, int], str]:
    """Run ``node --test`` on ``files``; the summary counts and the whole output."""
    assert NODE is not None
    result = subprocess.run(
        [NODE, "--test", "--test-timeout=120000", *files],
        cwd=JS,
        env={**os.environ, "CHANSERV_PYTHON": sys.executable, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=300,
    )
    summary = re.findall(r"^# (pass|fail|skipped|cancelled|tests) (\d+)$", result.stdout, re.M)
    counts = {name: int(value) for name, value in summary}
    assert result.returncode == 0 and counts.get("fail") == 0, failures(result.stdout)
    return counts, result.stdout


def failures(output: str) -> str:
    """The failed tests' reports out of node's TAP output (all of it if none is found)."""
    lines = output.splitlines()
    picked = [
        "\n".join(lines[index : index + 30])
        for index, line in enumerate(lines)
        if line.lstrip().startswith("not ok")
    ]
    return "\n\n".join(picked)[-20000:] or output[-20000:]


def skip_reasons(output: str) -> list[str]:
    return sorted(set(re.findall(r"# SKIP (.+)$", output, re.M)))


def test_codec_connection_and_node_suites_pass(node_modules: Path) -> None:
    counts, output = run_node_tests(UNIT_SUITES)
    assert counts["pass"] >= 70, output[-5000:]


def test_end_to_end_against_the_python_node(node_modules: Path) -> None:
    counts, output = run_node_tests(["test/e2e.test.js"])
    if counts["pass"] == 0 and counts["skipped"] == counts["tests"]:
        pytest.skip("; ".join(skip_reasons(output)))
    assert counts["skipped"] == 0, skip_reasons(output)


@pytest.mark.skipif(
    not os.access(CHROMIUM, os.X_OK),
    reason=f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHANSERV_CHROMIUM)",
)
def test_the_page_runs_the_seed_scenario_in_headless_chromium(node_modules: Path) -> None:
    counts, output = run_node_tests(["test/browser.test.js"], CHANSERV_CHROMIUM=CHROMIUM)
    # The page against a node of this package always runs; the one against the Python
    # node runs once the Python side speaks the same protocol version.
    assert counts["pass"] >= 1, output[-5000:]
