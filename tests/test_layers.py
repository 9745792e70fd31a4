"""The layers are checked, not remembered: pyproject.toml's import-linter contracts hold (run with
the lint-imports of this interpreter's environment), no module is in an import circle, and both
checks fail on a copy of the package given an upward import or a circle.

Imports inside functions count (grimp's default); imports under `if TYPE_CHECKING:` do not (they
never run), as pyproject.toml's [tool.importlinter] says.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
GRAPH = """
import json, grimp
graph = grimp.build_graph("deltajobs", exclude_type_checking_imports=True, cache_dir=None)
print(json.dumps({m: sorted(graph.find_modules_directly_imported_by(m)) for m in sorted(graph.modules)}))
"""


def lint_imports(package_parent: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports with this repository's contracts, on the deltajobs found in `package_parent`."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    argv = [str(LINT_IMPORTS), "--no-logo", "--no-cache", str(REPO / "pyproject.toml")]
    return subprocess.run(argv, capture_output=True, text=True, cwd=package_parent, env=env, timeout=300)


def import_circles(package_parent: Path) -> list[list[str]]:
    """Every set of deltajobs modules that import each other in a circle (strongly connected
    components of the module graph with more than one module, or a module importing itself). The
    graph is built in a fresh interpreter: this one's deltajobs may be another copy."""
    env = {**os.environ, "PYTHONPATH": str(package_parent)}
    done = subprocess.run(
        [sys.executable, "-c", GRAPH], capture_output=True, text=True, cwd=package_parent, env=env, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return strongly_connected(json.loads(done.stdout))


def strongly_connected(edges: dict[str, list[str]]) -> list[list[str]]:
    """Tarjan's algorithm, iterative: the components that hold a circle."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    circles: list[list[str]] = []
    for root in edges:
        if root in index:
            continue
        work = [(root, iter(edges[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, targets = work[-1]
            for target in targets:
                if target not in index:
                    index[target] = low[target] = len(index)
                    stack.append(target)
                    on_stack.add(target)
                    work.append((target, iter(edges.get(target, []))))
                    break
                if target in on_stack:
                    low[node] = min(low[node], index[target])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1 or node in edges.get(node, []):
                        circles.append(sorted(component))
    return circles


@pytest.fixture
def package_copy(tmp_path: Path) -> Path:
    """A copy of the deltajobs package in tmp_path (the directory to put on PYTHONPATH)."""
    shutil.copytree(REPO / "deltajobs", tmp_path / "deltajobs", ignore=shutil.ignore_patterns("__pycache__"))
    return tmp_path


def test_the_contracts_in_pyproject_are_kept() -> None:
    done = lint_imports(REPO)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_no_module_is_in_an_import_circle() -> None:
    circles = import_circles(REPO)
    assert circles == [], "modules importing each other in a circle (move what they share below both):\n" + "\n".join(
        " <-> ".join(c) for c in circles
    )


def test_an_upward_import_inside_a_function_breaks_the_layers(package_copy: Path) -> None:
    low = package_copy / "deltajobs" / "slurm" / "upward.py"
    low.write_text(
        '"""A low layer asking the CLI."""\n\n\ndef ask() -> None:\n    from deltajobs.cli import app  # noqa\n'
    )
    done = lint_imports(package_copy)
    assert done.returncode != 0
    assert "deltajobs is layered: cli at the top, errors at the bottom BROKEN" in done.stdout
    assert "deltajobs.slurm.upward -> deltajobs.cli" in done.stdout


def test_a_circle_is_found_by_both_checks(package_copy: Path) -> None:
    sweep = package_copy / "deltajobs" / "sweep"
    (sweep / "circle_a.py").write_text("from deltajobs.sweep import circle_b  # noqa\n")
    (sweep / "circle_b.py").write_text("def back() -> None:\n    from deltajobs.sweep import circle_a  # noqa\n")
    assert import_circles(package_copy) == [["deltajobs.sweep.circle_a", "deltajobs.sweep.circle_b"]]
    done = lint_imports(package_copy)
    assert done.returncode != 0
    assert "No circles between the packages, nor between the modules of one package BROKEN" in done.stdout
    assert "- .circle_b -> .circle_a (1 import)" in done.stdout


def test_a_type_checking_import_is_no_circle(package_copy: Path) -> None:
    """What pyproject.toml promises: an import that never runs (a type hint's) is left out."""
    sweep = package_copy / "deltajobs" / "sweep"
    (sweep / "circle_a.py").write_text("from deltajobs.sweep import circle_b  # noqa\n")
    (sweep / "circle_b.py").write_text(
        "from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n    from deltajobs.sweep import circle_a  # noqa\n"
    )
    assert import_circles(package_copy) == []
