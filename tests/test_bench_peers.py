"""The benchmark runner's peer table and ``--baseline``: which peers run, in which order, and
that a base process imports chanserv_trio from the baseline tree but the benchmark code from
this one."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import _trees as trees
from benchmarks._runner import choose_peers, package_mismatch, peer_table

ALL_OF_THIS_TREE = ["ours", "ceiling", "grpc", "zmq", "ours-ws", "ceiling-ws", "js-node"]


def test_without_a_baseline_there_are_no_base_peers() -> None:
    assert list(peer_table()) == ALL_OF_THIS_TREE
    assert choose_peers(None, baseline=False) == ALL_OF_THIS_TREE
    with pytest.raises(ValueError, match="base-ws"):
        choose_peers(["ours", "base-ws"], baseline=False)


def test_a_baseline_puts_base_beside_ours(tmp_path: Path) -> None:
    table = peer_table(tmp_path)
    assert list(table) == [
        "ours",
        "base",
        "ceiling",
        "grpc",
        "zmq",
        "ours-ws",
        "base-ws",
        "ceiling-ws",
        "js-node",
    ]
    assert choose_peers(None, baseline=True) == list(table)
    # Added right after the peer they stand beside, unless named already, each once.
    assert choose_peers(["zmq", "ours"], baseline=True) == ["zmq", "ours", "base"]
    assert choose_peers(["base", "ours", "ours"], baseline=True) == ["base", "ours"]
    assert choose_peers(["ours-ws", "ceiling"], baseline=True) == ["ours-ws", "base-ws", "ceiling"]
    # The base peers are ours and ours-ws on the other tree, and run the same scenarios.
    for base, ours in (("base", "ours"), ("base-ws", "ours-ws")):
        assert table[base].tree == tmp_path and table[ours].tree is None
        assert (table[base].module, table[base].arguments) == (
            table[ours].module,
            table[ours].arguments,
        )
        assert table[base].scenarios == table[ours].scenarios


def test_zmq_skips_slow_with_a_reason() -> None:
    zmq = peer_table()["zmq"]
    reason = zmq.skip_reason("slow")
    assert reason is not None and "flow control" in reason
    assert [zmq.skip_reason(scenario) for scenario in ("empty", "flood", "heavy", "open")] == [
        None
    ] * 4


def test_a_source_tree_must_hold_the_package(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="chanserv_trio"):
        trees.source_tree(tmp_path)
    (tmp_path / "chanserv_trio").mkdir()
    (tmp_path / "chanserv_trio" / "__init__.py").write_text("")
    assert trees.source_tree(tmp_path) == tmp_path.resolve()


def test_a_base_process_imports_the_baseline_package_and_this_trees_benchmarks(
    tmp_path: Path,
) -> None:
    # A baseline with a package of its own and a stray benchmarks folder of its own.
    baseline = tmp_path / "baseline"
    for folder in ("chanserv_trio", "benchmarks"):
        (baseline / folder).mkdir(parents=True)
        (baseline / folder / "__init__.py").write_text("")
    scratch = tmp_path / "scratch"
    report = (
        "import benchmarks, chanserv_trio, pathlib;"
        "print(pathlib.Path(benchmarks.__file__).resolve().parent);"
        "from benchmarks._trees import imported_package; print(imported_package())"
    )
    for tree, package in (
        (baseline, baseline / "chanserv_trio"),
        (None, trees.ROOT / "chanserv_trio"),
    ):
        cwd, env = trees.launch(tree, scratch)
        lines = subprocess.run(
            [sys.executable, "-c", report],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=True,
            timeout=60,
        ).stdout.splitlines()
        assert lines == [str(trees.ROOT / "benchmarks"), str(package.resolve())]
        assert str(trees.expected_package(tree)) == lines[1]


def test_a_process_that_imported_another_package_is_caught(tmp_path: Path) -> None:
    table = peer_table(tmp_path)
    right = {"chanserv_trio": str(trees.expected_package(tmp_path))}
    assert package_mismatch(table["base"], "client", right) is None
    wrong = {"chanserv_trio": str(trees.expected_package(None))}
    assert "client imported" in (package_mismatch(table["base"], "client", wrong) or "")
    assert package_mismatch(table["ours"], "server", wrong) is None
    assert "(not said)" in (package_mismatch(table["ours"], "server", {}) or "")
    # Peers that do not run chanserv_trio are not asked.
    assert package_mismatch(table["zmq"], "server", {"pyzmq": "27"}) is None
