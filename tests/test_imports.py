"""The import graph of spolab: no cycle among its modules, and no module imports an entry point.

The graph is read from the source (the AST of every module under src/spolab), so it holds every
``import`` statement, those inside functions included, whether or not it has run. An entry point is a
module that defines ``main = entry(...)`` (spolab.cli.entry: ``python -m spolab.<step>``): glue that
only a shell, Snakemake or a test imports.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src"


def module_files(root: Path) -> dict[str, Path]:
    """Dotted module name -> file, for every .py file of the packages under ``root``."""
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def _imported(node: ast.Import | ast.ImportFrom, module: str, is_package: bool, files) -> list[str]:
    """The modules an import statement imports: ``import a.b`` a.b; ``from a import b`` the submodule a.b
    where there is one, else a (b is a name defined in a). Parent packages, which Python initialises
    first whatever the statement, are not counted."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    base = node.module or ""
    if node.level:  # relative: from the module's package, level - 1 packages up
        pkg = module.split(".") if is_package else module.split(".")[:-1]
        pkg = pkg[: len(pkg) - node.level + 1]
        base = ".".join([*pkg, *([base] if base else [])])
    return [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base for a in node.names]


def import_graph(root: Path, package: str = "spolab") -> tuple[dict[str, set[str]], dict[str, Path]]:
    """``{module: modules of package it imports}``, with imports inside functions and classes."""
    files = module_files(root)
    graph: dict[str, set[str]] = {m: set() for m in files if m.split(".")[0] == package}
    for module in graph:
        path = files[module]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if not isinstance(node, ast.Import | ast.ImportFrom):
                continue
            for name in _imported(node, module, path.name == "__init__.py", files):
                while name and name not in files:  # import a.b.c of a name c defined in a.b
                    name = name.rpartition(".")[0]
                if name and name != module and name.split(".")[0] == package:
                    graph[module].add(name)
    return graph, files


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def entry_points(files: dict[str, Path]) -> set[str]:
    """Modules that define ``main = entry(...)``."""
    out = set()
    for module, path in files.items():
        for node in ast.parse(path.read_text()).body:
            if (isinstance(node, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "main" for t in node.targets)
                    and isinstance(node.value, ast.Call) and getattr(node.value.func, "id", None) == "entry"):
                out.add(module)
    return out


@pytest.fixture(scope="module")
def spolab_graph():
    return import_graph(SRC)


def test_no_import_cycle(spolab_graph):
    graph, _ = spolab_graph
    assert "spolab.rl" in graph and "spolab.builder" in graph["spolab.rl"]  # the graph is read at all
    assert cycles(graph) == []


def test_no_module_imports_an_entry_point(spolab_graph):
    graph, files = spolab_graph
    entries = entry_points(files)
    assert {"spolab.rl", "spolab.data", "spolab.bench", "spolab.diagnostics", "spolab.evaluate"} <= entries
    bad = sorted((m, e) for m, deps in graph.items() for e in deps & entries)
    assert bad == [], f"entry points are glue; move what these import into a library module: {bad}"


def test_the_checks_see_function_level_imports_and_cycles(tmp_path):
    """On a tiny package: an import inside a function closes a cycle, and an entry point is found."""
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "a.py").write_text("from pkg import b\n")
    (pkg / "b.py").write_text("def f():\n    from pkg.c import g\n    return g\n")
    (pkg / "c.py").write_text("from . import a\n\ndef g():\n    pass\n")
    (pkg / "run.py").write_text("from pkg.cli import entry\n\nmain = entry('run', print)\n")
    (pkg / "cli.py").write_text("def entry(name, fn):\n    return fn\n")
    graph, files = import_graph(tmp_path, "pkg")
    assert graph["pkg.a"] == {"pkg.b"} and graph["pkg.b"] == {"pkg.c"} and graph["pkg.c"] == {"pkg.a"}
    assert cycles(graph) == [["pkg.a", "pkg.b", "pkg.c"]]
    assert entry_points(files) == {"pkg.run"}
