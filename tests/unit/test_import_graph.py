"""No import cycles between the modules of hub, adapters and bench.

A cycle hides a layering mistake: two modules that need each other are one module, or they
share something that belongs lower down. Function-level imports count too, since an import
moved into a function only to dodge a cycle keeps the cycle and hides it. Imports under
``if TYPE_CHECKING:`` are left out: they never run.
"""

from __future__ import annotations

import ast
from collections import deque
from collections.abc import Iterable, Mapping
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("hub", "adapters", "bench")

Graph = Mapping[str, Iterable[str]]


def module_files(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, Path]:
    """Dotted module name -> source file, for every module of the given packages."""
    out: dict[str, Path] = {}
    for pkg in packages:
        for path in sorted((root / pkg).rglob("*.py")):
            parts = list(path.relative_to(root).with_suffix("").parts)
            if parts[-1] == "__init__":
                parts.pop()
            out[".".join(parts)] = path
    return out


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> Iterable[ast.Import | ast.ImportFrom]:
    """Every import statement anywhere in the tree, except under ``if TYPE_CHECKING:``."""
    todo: list[ast.AST] = [tree]
    while todo:
        node = todo.pop()
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        todo.extend(ast.iter_child_nodes(node))


def _targets(node: ast.Import | ast.ImportFrom, module: str, is_package: bool,
             known: set[str]) -> set[str]:
    """The known modules an import statement loads (the most specific one per name)."""
    def closest(name: str) -> str | None:
        while name and name not in known:
            name = name.rpartition(".")[0]
        return name or None

    if isinstance(node, ast.Import):
        names = [a.name for a in node.names]
    else:
        base = node.module or ""
        if node.level:
            anchor = module.split(".")
            if not is_package:
                anchor.pop()
            anchor = anchor[:len(anchor) - (node.level - 1)]
            base = ".".join([*anchor, base] if base else anchor)
        # ``from pkg import name`` loads pkg.name when that is a module, else pkg itself.
        names = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base
                 for a in node.names]
    return {t for t in map(closest, names) if t is not None}


def import_graph(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, set[str]]:
    files = module_files(root, packages)
    known = set(files)
    graph: dict[str, set[str]] = {}
    for module, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        is_package = path.name == "__init__.py"
        edges: set[str] = set()
        for node in _imports(tree):
            edges |= _targets(node, module, is_package, known)
        edges.discard(module)
        graph[module] = edges
    return graph


def _components(graph: Graph) -> list[list[str]]:
    """Strongly connected components (Tarjan, iterative so deep graphs do not recurse)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    comp = []
                    while True:
                        top = stack.pop()
                        on_stack.discard(top)
                        comp.append(top)
                        if top == node:
                            break
                    out.append(sorted(comp))
    return out


def _shortest_cycle(graph: Graph, members: list[str]) -> list[str]:
    """A shortest cycle through the first member, staying inside its component."""
    inside = set(members)
    start = members[0]
    parent: dict[str, str] = {}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        for child in sorted(graph.get(node, ())):
            if child == start:
                path = [node]
                while path[-1] != start:
                    path.append(parent[path[-1]])
                return [*reversed(path), start]
            if child in inside and child not in parent:
                parent[child] = node
                queue.append(child)
    raise AssertionError(f"{members} is not a cycle")  # pragma: no cover


def tangles(graph: Graph) -> list[list[str]]:
    """Groups of modules that import each other, directly or through others."""
    return sorted(comp for comp in _components(graph)
                  if len(comp) > 1 or comp[0] in graph.get(comp[0], ()))


def find_cycles(graph: Graph) -> list[list[str]]:
    """One readable cycle (``[a, b, a]``) per tangle of modules that import each other."""
    return sorted(_shortest_cycle(graph, comp) for comp in tangles(graph))


# --- the cycle finder itself ----------------------------------------------------------------

def test_finder_names_each_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set(),
             "x": {"y"}, "y": {"x"}, "self": {"self"}}
    assert find_cycles(graph) == [["a", "b", "c", "a"], ["self", "self"], ["x", "y", "x"]]


def test_finder_finds_no_cycle_in_a_dag():
    assert find_cycles({"a": {"b", "c"}, "b": {"c"}, "c": set(), "d": {"a"}}) == []


def test_finder_reports_a_shortest_cycle_in_a_tangle():
    graph = {"a": {"b", "e"}, "b": {"c"}, "c": {"d"}, "d": {"a"}, "e": {"a"}}
    assert find_cycles(graph) == [["a", "e", "a"]]
    assert tangles(graph) == [["a", "b", "c", "d", "e"]]


def test_graph_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\n")
    (pkg / "sub" / "leaf.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from pkg import other\n"
        "def f():\n    from ..top import g\n")
    (pkg / "top.py").write_text("import pkg.sub.leaf\n")
    (pkg / "other.py").write_text("from pkg.sub import leaf\n")
    graph = import_graph(tmp_path, ["pkg"])
    assert graph["pkg.sub"] == {"pkg.sub.leaf"}
    assert graph["pkg.sub.leaf"] == {"pkg.top"}  # the TYPE_CHECKING import does not count
    assert graph["pkg.other"] == {"pkg.sub.leaf"}
    assert find_cycles(graph) == [["pkg.sub.leaf", "pkg.top", "pkg.sub.leaf"]]


# --- the project ------------------------------------------------------------------------------

def test_no_import_cycles():
    graph = import_graph()
    assert len(graph) > 50, "the import graph looks empty: are the packages where expected?"
    found = [(_shortest_cycle(graph, t), t) for t in tangles(graph)]
    if found:
        pytest.fail("import cycles (fix the layering, e.g. move what both need lower down):\n"
                    + "\n".join(f"  {' -> '.join(c)}"
                                 + (f"  (tangle: {', '.join(t)})" if len(t) > len(c) - 1
                                    else "") for c, t in found), pytrace=False)
