"""Sessions that build, check and measure chanserv_trio: ``nox -s tests lint docs bench``."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "lint"]
nox.options.reuse_existing_virtualenvs = True

#: The Pythons the package supports (pyproject's classifiers say the same): ``tests``
#: runs on each one found on the machine; the other sessions on the oldest.
PYTHON = ["3.11", "3.12", "3.13"]
PYPROJECT = nox.project.load_toml("pyproject.toml")
#: What ruff checks and formats.
LINTED = ["chanserv_trio", "tests", "benchmarks", "js/test", "noxfile.py", "setup.py"]


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
    session.run("ruff", "check", *LINTED)
    session.run("ruff", "format", "--check", *LINTED)
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


#: Tests that read the source tree itself (the docs against the code, the console's package
#: data, the benchmark scripts, the JavaScript package): ``compiled`` runs all the others.
SOURCE_TREE_TESTS = [
    "test_bench_memory.py",
    "test_bench_peers.py",
    "test_bench_resume.py",
    "test_console.py",
    "test_docs.py",
    "test_js.py",
    "test_sphinx.py",
]


@nox.session(python=PYTHON[0])
def compiled(session: nox.Session) -> None:
    """The opt-in compiled build (``setup.py``): the wire layer's hot modules compiled with
    mypyc and installed, not editable, in the session. The suite runs against it (less the
    tests that read the source tree); then the sans-IO benchmark and, with posargs, the
    main one (``nox -s compiled -- --scenarios flood,empty``) measure this tree interpreted
    (``ours``) beside the compiled install (``base``), in turns."""
    build = PYPROJECT["build-system"]["requires"]
    dependencies = PYPROJECT["project"]["dependencies"]
    session.install("mypy>=1.10", "wheel", *build, *dependencies)
    session.install("--no-build-isolation", ".[test]", env={"CHANSERV_TRIO_MYPYC": "1"})
    # The pytest script, not python -m pytest, so the source tree is not on sys.path.
    session.run(
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *(f"--ignore=tests/{name}" for name in SOURCE_TREE_TESTS),
        env={"CHANSERV_TRIO_EXPECT_COMPILED": "1"},
    )
    site = session.run(
        "python",
        "-P",
        "-c",
        "import chanserv_trio, pathlib; print(pathlib.Path(chanserv_trio.__file__).parent.parent)",
        silent=True,
    )
    assert isinstance(site, str)
    session.install(*nox.project.dependency_groups(PYPROJECT, "bench"))
    session.run("python", "-m", "benchmarks.wire", "--baseline", site.strip())
    if session.posargs:
        compare = ["--peers", "ours,base", "--baseline", site.strip()]
        session.run("python", "-m", "benchmarks", *compare, *session.posargs)


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
