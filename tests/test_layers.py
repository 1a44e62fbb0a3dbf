"""Imports run one way between the layers of chanserv_trio (README.md, "Layout").

    wire  <-  link  <-  node  <-  chanserv        transports  <-  node

- ``wire`` (frames, connection state; sans-IO) imports nothing above it, and no trio;
- ``link`` (the trio driver) imports wire;
- ``transports`` import neither wire nor link;
- ``node`` (multiplexer, router, registries) imports link and transports, not chanserv;
- ``chanserv`` (envelope, server, client) imports node and whatever is below it;
- ``_errors`` imports nothing of the package, and every layer may import it.
  ``_cli``, ``__init__`` and ``__main__`` sit on top and may import anything.

Every module is read with ``ast`` (imports under ``TYPE_CHECKING`` and inside functions
count too) and its layer is the package folder it sits in (``wire/_codec.py`` is in
``wire``).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "chanserv_trio"

#: A module's layer: the package folder it sits in under chanserv_trio/.
FOLDERS = {name: name for name in ("wire", "link", "transports", "node", "chanserv")}
#: Modules at the top of the package that belong to a layer (the rest are entry points).
TOP_LEVEL = {"_errors": "errors"}
#: What else each layer may import of the package (its own layer it always may).
MAY_IMPORT: dict[str, frozenset[str]] = {
    "errors": frozenset(),
    "wire": frozenset({"errors"}),
    "link": frozenset({"wire", "errors"}),
    "transports": frozenset({"errors"}),
    "node": frozenset({"link", "wire", "transports", "errors"}),
    "chanserv": frozenset({"node", "link", "wire", "transports", "errors"}),
    "top": frozenset({"errors", "wire", "link", "transports", "node", "chanserv"}),
}
#: Libraries a layer must not import at all.
FORBIDDEN_LIBRARIES: dict[str, frozenset[str]] = {
    # The protocol is sans-IO: bytes in, events out, testable with no event loop.
    "wire": frozenset({"trio", "trio_websocket"}),
}

#: Imports that break the rules today, as (importer, imported) modules: removed by the
#: architecture issue's seams; delete each entry once its import is gone (a test below
#: fails while an entry names an import that no longer exists).
KNOWN_VIOLATIONS: frozenset[tuple[str, str]] = frozenset()


def layer_of(module: str) -> str:
    """The layer of ``module``, a dotted name inside chanserv_trio ("" for the package)."""
    first = module.split(".")[0]
    if first in FOLDERS:
        return FOLDERS[first]
    return TOP_LEVEL.get(first, "top")


def module_name(path: Path) -> str:
    """``chanserv_trio/wire/codec.py`` -> ``wire.codec``; ``.../__init__.py`` -> its folder."""
    parts = list(path.relative_to(PACKAGE).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


@attrs.frozen
class Import:
    line: int
    #: A module of the package (dotted, "" for the package itself), or None.
    module: str | None
    #: The top-level name of an outside library, or None.
    library: str | None


def imports(
    source: str, module: str, *, is_package: bool, known: frozenset[str]
) -> Iterator[Import]:
    """Every import in ``source``, the code of ``module``, resolved to what it names."""
    package = module.split(".") if is_package else module.split(".")[:-1]
    package = [part for part in package if part]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield _absolute(node.lineno, alias.name)
        elif isinstance(node, ast.ImportFrom):
            if node.level == 0:
                name = node.module or ""
                if name != "chanserv_trio" and not name.startswith("chanserv_trio."):
                    yield _absolute(node.lineno, name)
                    continue
                base = name.removeprefix("chanserv_trio").lstrip(".").split(".")
            else:
                up = node.level - 1
                if up > len(package):
                    raise ValueError(f"{module}: relative import above the package")
                base = package[: len(package) - up] + (node.module or "").split(".")
            base_name = ".".join(part for part in base if part)
            for alias in node.names:
                yield Import(node.lineno, _submodule(base_name, alias.name, known), None)


def _absolute(line: int, name: str) -> Import:
    if name == "chanserv_trio" or name.startswith("chanserv_trio."):
        return Import(line, name.removeprefix("chanserv_trio").lstrip("."), None)
    return Import(line, None, name.split(".")[0])


def _submodule(base: str, name: str, known: frozenset[str]) -> str:
    """What ``from base import name`` imports: the submodule ``base.name`` if there is
    one (or, at the top, one the layer table names), else ``base`` itself."""
    candidate = f"{base}.{name}" if base else name
    if candidate in known or (not base and layer_of(candidate) != "top"):
        return candidate
    return base


def violations(
    source: str, module: str, *, is_package: bool = False, known: frozenset[str] = frozenset()
) -> list[tuple[int, str, str]]:
    """``(line, what is imported, which rule it breaks)`` for each forbidden import."""
    layer = layer_of(module)
    found = []
    for imported in imports(source, module, is_package=is_package, known=known):
        if imported.library is not None:
            if imported.library in FORBIDDEN_LIBRARIES.get(layer, frozenset()):
                found.append(
                    (imported.line, imported.library, f"{layer} imports no {imported.library}")
                )
            continue
        assert imported.module is not None
        target = layer_of(imported.module)
        if target != layer and target not in MAY_IMPORT[layer]:
            what = imported.module or "chanserv_trio"
            found.append((imported.line, what, f"{layer} may not import {target}"))
    return sorted(set(found))  # once per line, however many names it imports


def package_modules() -> dict[str, Path]:
    return {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def package_violations() -> list[tuple[str, int, str, str]]:
    modules = package_modules()
    known = frozenset(modules)
    found = []
    for module, path in modules.items():
        source = path.read_text(encoding="utf-8")
        is_package = path.name == "__init__.py"
        for line, imported, rule in violations(source, module, is_package=is_package, known=known):
            found.append((module, line, imported, rule))
    return found


# ------------------------------------------------------------------ the package


def test_every_module_has_a_layer_it_was_meant_to_have() -> None:
    top = {module for module in package_modules() if layer_of(module) == "top"}
    # Only the entry points sit on top; a new module must say which layer it is in.
    assert top <= {"", "__main__", "_cli"}, top


def test_imports_run_one_way_between_the_layers() -> None:
    breaches = [
        f"chanserv_trio/{module}:{line} imports {imported}: {rule}"
        for module, line, imported, rule in package_violations()
        if (module, imported) not in KNOWN_VIOLATIONS
    ]
    assert breaches == []


def test_the_allow_list_holds_only_imports_that_still_break_the_rules() -> None:
    found = {(module, imported) for module, _, imported, _ in package_violations()}
    assert KNOWN_VIOLATIONS - found == set(), "these are gone: delete them from the list"


# ------------------------------------------------------------------ the checker


@pytest.mark.parametrize(
    ("module", "layer"),
    [
        ("wire._codec", "wire"),
        ("wire", "wire"),
        ("link._link", "link"),
        ("transports._schemes", "transports"),
        ("node._registry_etcd", "node"),
        ("chanserv._envelope", "chanserv"),
        ("_errors", "errors"),
        ("_cli", "top"),
        ("", "top"),
    ],
)
def test_a_module_s_folder_is_its_layer(module: str, layer: str) -> None:
    assert layer_of(module) == layer


def test_the_checker_catches_what_each_layer_may_not_import() -> None:
    wire = "import trio\nimport attrs\nfrom ..link._link import Link\nfrom .._errors import E\n"
    assert violations(wire, "wire._codec") == [
        (1, "trio", "wire imports no trio"),
        (3, "link._link", "wire may not import link"),
    ]
    lazy = "def f():\n    from trio_websocket import open_websocket_url\n"
    assert violations(lazy, "wire._events") == [
        (2, "trio_websocket", "wire imports no trio_websocket")
    ]
    transports = "from ..wire._connection import Settings\nfrom ..link._link import Link\n"
    assert [rule for _, _, rule in violations(transports, "transports._socket")] == [
        "transports may not import wire",
        "transports may not import link",
    ]
    node = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n"
        "    from ..chanserv._server import Server\n"
        "from .. import Multiplexer\n"
    )
    assert violations(node, "node._registry") == [
        (3, "chanserv._server", "node may not import chanserv"),
        (4, "chanserv_trio", "node may not import top"),
    ]
    errors = "from .wire._codec import ErrorCode\n"
    assert violations(errors, "_errors") == [(1, "wire._codec", "errors may not import wire")]


def test_the_checker_reads_the_folder_layout_too() -> None:
    good = (
        "from ..link.stream import LinkStream\n"
        "from ..transports import dial\n"
        "from .. import _errors\n"
        "from . import router\n"
        "import chanserv_trio.wire.codec\n"
    )
    assert violations(good, "node.multiplexer") == []
    bad = (
        "from ..chanserv.envelope import bucket_of_request\n"
        "from .. import chanserv\n"
        "from chanserv_trio.node import multiplexer\n"
    )
    assert [rule for _, _, rule in violations(bad, "node.multiplexer")] == [
        "node may not import chanserv",
        "node may not import chanserv",
    ]
    assert violations(bad, "wire.connection")[2][2] == "wire may not import node"
    # In a package's __init__, "." is the package itself: .link is its own submodule.
    assert violations("from .link import Link\n", "transports", is_package=True) == []
    assert violations("from ..link import Link\n", "transports", is_package=True) == [
        (1, "link", "transports may not import link")
    ]
