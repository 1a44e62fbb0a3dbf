"""Sessions that build, check and measure chanserv_trio: ``nox -s tests lint docs bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

#: The Pythons the package supports (pyproject's classifiers say the same): ``tests``
#: runs on each one found on the machine; the other sessions on the oldest.
PYTHON = ["3.11", "3.12", "3.13"]
PYPROJECT = nox.project.load_toml("pyproject.toml")


@nox.session(python=PYTHON)
def tests(session: nox.Session) -> None:
    """Run the whole test suite with branch coverage."""
    session.install("-e", ".[test]")
    session.run(
        "coverage",
        "run",
        "-m",
        "pytest",
        *(session.posargs or ["-q"]),
    )
    session.run("coverage", "report", "--skip-covered", "--show-missing", "--fail-under=0")


@nox.session(python=PYTHON[0])
def lint(session: nox.Session) -> None:
    """ruff (lint and format check) and mypy --strict over the package and its tests."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", "chanserv_trio", "tests", "benchmarks", "js/test", "noxfile.py")
    session.run(
        "ruff",
        "format",
        "--check",
        "chanserv_trio",
        "tests",
        "benchmarks",
        "js/test",
        "noxfile.py",
    )
    session.run("mypy", "--strict", "chanserv_trio", "tests")


@nox.session(python=PYTHON[0])
def docs(session: nox.Session) -> None:
    """Check that the documentation's code examples run against the package, then build
    the Sphinx site (guide pages and API reference) with warnings as errors."""
    session.install("-e", ".[test]")
    session.run("python", "-m", "pytest", "-q", "tests/test_docs.py", "tests/test_sphinx.py")
    session.run("sphinx-build", "-W", "-b", "html", "docs", "docs/_build/html")


@nox.session(python=PYTHON[0])
def bench(session: nox.Session) -> None:
    """The benchmark suite: ours beside the trio ceiling, gRPC and pyzmq, then memory, attacks
    and resumption (benchmarks/README.md)."""
    session.install("-e", ".", *nox.project.dependency_groups(PYPROJECT, "bench"))
    session.run("python", "-m", "benchmarks", *session.posargs)
    session.run("python", "-m", "benchmarks.memory")
    session.run("python", "-m", "benchmarks.attacks")
    session.run("python", "-m", "benchmarks.resume")


@nox.session(python=False)
def console_client(session: nox.Session) -> None:
    """Copy the JavaScript client (js/src) into the console's package data, which the
    console's page loads (js/ is not installed with the package; tests/test_console.py
    checks the copy is current)."""
    import shutil
    from pathlib import Path

    source = Path("js/src")
    target = Path("chanserv_trio/chanserv/console_static/client")
    target.mkdir(parents=True, exist_ok=True)
    for stale in target.glob("*.js"):
        if not (source / stale.name).exists():
            stale.unlink()
    for module in source.glob("*.js"):
        shutil.copyfile(module, target / module.name)
    session.log(f"copied {len(list(source.glob('*.js')))} modules into {target}")
