"""The package's modules import each other without a cycle (deferred imports included)."""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "pfedhn"


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported(tree: ast.AST, modules: set[str]) -> set[str]:
    """The package's modules an AST imports anywhere (a package for ``from package import
    name`` unless ``name`` is its submodule; a submodule also runs its package's ``__init__``)."""
    found = set()
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [
                f"{node.module}.{a.name}" if f"{node.module}.{a.name}" in modules else node.module for a in node.names
            ]
        for name in names:
            parts = name.split(".")
            found |= {".".join(parts[:i]) for i in range(2, len(parts) + 1)} & modules
    return found


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {module_name(p) for p in paths}
    graph = {module_name(p): imported(ast.parse(p.read_text()), modules) for p in paths}
    return {module: edges - {module} - ancestors(module) for module, edges in graph.items()}


def ancestors(module: str) -> set[str]:
    """A module's packages: they run before it, and may import it (a registry does), no cycle."""
    parts = module.split(".")
    return {".".join(parts[:i]) for i in range(1, len(parts))}


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """A cycle of ``graph`` as a path that ends where it starts, or None."""
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> list[str] | None:
        if module in path:
            return path[path.index(module) :] + [module]
        if module in done:
            return None
        for child in sorted(graph.get(module, ())):
            cycle = visit(child, path + [module])
            if cycle:
                return cycle
        done.add(module)
        return None

    for module in sorted(graph):
        cycle = visit(module, [])
        if cycle:
            return cycle
    return None


def test_the_package_has_no_import_cycle() -> None:
    cycle = find_cycle(import_graph())
    assert cycle is None, " -> ".join(cycle)


def test_a_cycle_is_found() -> None:
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set()}) is None


def test_a_module_needing_a_registry_that_needs_it_is_a_cycle() -> None:
    """strategy -> methods.base runs methods/__init__, which imports strategy: a real cycle."""
    modules = {"p", "p.strategy", "p.methods", "p.methods.base"}
    graph = {
        "p.strategy": imported(ast.parse("from p.methods.base import Method"), modules),
        "p.methods": imported(ast.parse("from p.strategy import S"), modules),
        "p.methods.base": set(),
    }
    assert find_cycle(graph) == ["p.methods", "p.strategy", "p.methods"]


def test_a_submodule_import_runs_its_package() -> None:
    modules = {"pfedhn", "pfedhn.methods", "pfedhn.methods.fedavg", "pfedhn.config"}
    tree = ast.parse("from pfedhn.methods.fedavg import build\nfrom pfedhn import config")
    assert imported(tree, modules) == {"pfedhn.methods", "pfedhn.methods.fedavg", "pfedhn.config"}
