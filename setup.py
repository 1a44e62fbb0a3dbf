"""Build hook for chanserv_trio.

By default the package is pure Python: ``pip install .`` needs nothing beyond pip.

With ``CHANSERV_TRIO_MYPYC=1`` in the environment, the hot modules of the sans-IO wire
layer (the connection, the state table, the windows and the resumption records) are
compiled with mypyc as well; their Python sources stay in the package and are what
runs wherever they are not compiled. The compiler is not a build requirement by
default, so the opt-in build runs in an environment that has it (README.md, "Optional:
the compiled wire layer")::

    python -m pip install "mypy>=1.10" "setuptools>=77" wheel trio trio-websocket attrs
    CHANSERV_TRIO_MYPYC=1 python -m pip install --no-build-isolation .

``chanserv_trio.wire.COMPILED`` says which one is running.
"""

from __future__ import annotations

import os

from setuptools import setup

#: The modules compiled in the opt-in build: the ones a DATA frame goes through. The
#: codec, events and settings stay interpreted (their attrs classes and enums gain
#: little and lose introspection).
COMPILED_MODULES = [
    "chanserv_trio/wire/_connection.py",
    "chanserv_trio/wire/_resume.py",
    "chanserv_trio/wire/_state.py",
    "chanserv_trio/wire/_windows.py",
]


def _ext_modules() -> list[object]:
    if os.environ.get("CHANSERV_TRIO_MYPYC", "") in ("", "0"):
        return []
    try:
        from mypyc.build import mypycify
    except ModuleNotFoundError as exc:
        raise SystemExit(
            "CHANSERV_TRIO_MYPYC=1 needs mypy (which brings mypyc) in the build "
            "environment: python -m pip install 'mypy>=1.10' 'setuptools>=77' wheel "
            "trio trio-websocket attrs, then build with --no-build-isolation "
            "(README.md, 'Optional: the compiled wire layer')"
        ) from exc
    # The modules they import are type-checked only as far as the compiled ones need
    # (silently), so the optional extras need not be in the build environment.
    options = ["--follow-imports=silent", "--ignore-missing-imports"]
    return list(mypycify([*options, *COMPILED_MODULES], opt_level="3"))


setup(ext_modules=_ext_modules())
