"""The wire layer's two builds: interpreted (the default install) and compiled by
mypyc (``CHANSERV_TRIO_MYPYC=1``, see ``setup.py``; ``nox -s compiled``)."""

from __future__ import annotations

import ast
from pathlib import Path

import chanserv_trio.wire as wire
from chanserv_trio.wire import _codec, _connection, _events, _resume, _settings, _state, _windows

ROOT = Path(__file__).resolve().parent.parent
HOT = (_connection, _resume, _state, _windows)


def test_compiled_says_which_build_runs() -> None:
    compiled = [not str(module.__file__).endswith(".py") for module in HOT]
    # All of the hot modules or none: a half-compiled install is not one of the builds.
    assert compiled == [wire.COMPILED] * len(HOT)
    # The rest of the layer stays interpreted either way.
    for module in (_codec, _events, _settings):
        assert str(module.__file__).endswith(".py")


def test_the_build_compiles_exactly_the_hot_modules() -> None:
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    listed = next(
        ast.literal_eval(node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Assign)
        and any(isinstance(t, ast.Name) and t.id == "COMPILED_MODULES" for t in node.targets)
    )
    assert sorted(listed) == sorted(
        f"chanserv_trio/wire/{Path(str(m.__file__)).name.split('.')[0]}.py" for m in HOT
    )
