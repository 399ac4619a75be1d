"""The layout shows the architecture: a library and the applications on top of it (docs/architecture.md).

Read from the source with ``ast``: every import of a ufinebench module at any depth, which modules
are applications, the length of every function. What holds: the library never imports an
application, no two modules import each other (directly or round a cycle), imports inside
functions are the few heavy optional dependencies named here, and functions stay short enough to
read whole.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "ufinebench"
APPLICATIONS = re.compile(r"^ufinebench\.(cli|training|demo|report|serve|__main__)(\.|$)")
# imports of our own modules that may stay inside a function, and why
INNER_ALLOWED = {"ufinebench._rank_kernels": "numba kernels: compiling them costs seconds, paid only when the numba path runs"}
MAX_FUNCTION_LINES = 100


def _modules() -> dict[str, Path]:
    out = {}
    for p in sorted(SRC.rglob("*.py")):
        name = "ufinebench." + ".".join(p.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = p
    return out


def _targets(node: ast.Import | ast.ImportFrom, known: dict[str, Path]) -> list[str]:
    """The ufinebench modules an import statement loads (``from a import b`` may name module a.b)."""
    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        assert node.level == 0, "relative imports are not used in this code base"
        names = [node.module or ""] + [f"{node.module}.{a.name}" for a in node.names]
    return [n for n in names if n in known]


def _graph() -> tuple[dict[str, set[str]], list[tuple[str, str, int]]]:
    """({module: modules it imports}, [(module, imported module, line) of imports inside functions])."""
    mods = _modules()
    edges: dict[str, set[str]] = {m: set() for m in mods}
    inner = []
    for m, p in mods.items():
        tree = ast.parse(p.read_text())
        in_functions = {id(n) for f in ast.walk(tree) if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) for n in ast.walk(f)}
        for n in ast.walk(tree):
            if isinstance(n, (ast.Import, ast.ImportFrom)):
                for t in _targets(n, mods):
                    if t != m:
                        edges[m].add(t)
                        if id(n) in in_functions:
                            inner.append((m, t, n.lineno))
    return edges, inner


def test_the_library_never_imports_an_application():
    edges, _ = _graph()
    wrong = sorted(f"{m} -> {t}" for m, ts in edges.items() if not APPLICATIONS.match(m) for t in ts if APPLICATIONS.match(t))
    assert wrong == []
    assert any(APPLICATIONS.match(m) for m in edges) and "ufinebench.evaluate.run" in edges  # the patterns name real modules


def test_no_import_cycles():
    """No module reaches itself through the import graph (Kahn's algorithm leaves nothing behind)."""
    edges, _ = _graph()
    indegree = {m: 0 for m in edges}
    for ts in edges.values():
        for t in ts:
            indegree[t] += 1
    ready = [m for m, d in indegree.items() if d == 0]
    done = 0
    while ready:
        m = ready.pop()
        done += 1
        for t in edges[m]:
            indegree[t] -= 1
            if indegree[t] == 0:
                ready.append(t)
    assert done == len(edges), sorted(m for m, d in indegree.items() if d > 0)


def test_imports_inside_functions_are_only_the_named_heavy_ones():
    _, inner = _graph()
    assert [(m, t, line) for m, t, line in inner if t not in INNER_ALLOWED] == []


def test_functions_are_short_enough_to_read_whole():
    long = []
    for p in SRC.rglob("*.py"):
        for f in ast.walk(ast.parse(p.read_text())):
            if isinstance(f, (ast.FunctionDef, ast.AsyncFunctionDef)) and f.end_lineno is not None:
                n = f.end_lineno - f.lineno + 1
                if n > MAX_FUNCTION_LINES:
                    long.append(f"{p.relative_to(SRC)}:{f.name} ({n} lines)")
    assert long == []


@pytest.mark.parametrize("pattern", ["presets/*.yaml", "vocab/*.json", "threec/prompts/*.yaml"])
def test_data_files_live_in_the_package_and_pyproject_ships_them(pattern):
    """Presets, built-in vocabularies and prompts are package data (an installed package has them:
    .ci/install_check.sh runs one); torch is a range, not one release."""
    assert list(SRC.glob(pattern))
    pyproject = (SRC.parents[1] / "pyproject.toml").read_text()
    assert f'"{pattern}"' in pyproject
    assert not re.search(r'"torch==', pyproject)
