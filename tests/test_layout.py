"""The layout's rules, from the source: which package may import which (docs: README's layout,
components/interfaces/README.md). Every import counts, those inside functions too: an import
hidden in a function is still a dependency, only a later one.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: Source folder -> the package it installs as.
FOLDERS = {"components": "cleancoin.components", "sandbox": "cleancoin.sandbox", "cli": "cleancoin.cli"}

#: What each package may import besides itself (and the standard library and third parties).
ALLOWED = {
    "components": set(),                   # the package itself: a docstring
    "components.common": set(),
    "components.interfaces": {"components.common"},
    "components.rpc": {"components.common", "components.interfaces"},
    "components.ipc": {"components.common", "components.interfaces"},
    "components.wallet": {"components.common", "components.interfaces", "components.rpc"},
    "components.node": {"components.common", "components.interfaces", "components.rpc",
                        "components.ipc", "sandbox"},
    "components.gui": {"components.common", "components.interfaces", "components.rpc",
                       "components.ipc", "sandbox"},
    "components.init": {"components.common", "components.interfaces", "components.rpc",
                        "components.ipc", "components.node", "components.wallet", "components.gui",
                        "sandbox"},
    "sandbox": set(),
    "cli": {"components.common", "components.init", "components.ipc", "components.node",
            "components.rpc", "components.wallet", "sandbox"},
}


def _module(path: Path) -> tuple[str, bool]:
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [FOLDERS[rel.parts[0]], *rel.parts[1:]]
    is_package = parts[-1] == "__init__"
    return ".".join(parts[:-1] if is_package else parts), is_package


def _package(module: str) -> str:
    parts = module.split(".")[1:]          # without "cleancoin."
    if parts[0] == "components" and len(parts) > 1:
        return ".".join(parts[:2])
    return parts[0]


def _imports(path: Path, module: str, is_package: bool) -> set[str]:
    """Every cleancoin module `path` (the module `module`) imports, wherever in the file."""
    here = module.split(".") if is_package else module.split(".")[:-1]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = here[:len(here) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
                found.add(target)
                if not node.module:      # from . import x: x is a module of that package
                    found |= {f"{target}.{a.name}" for a in node.names}
            elif node.module:
                found.add(node.module)
    return {t for t in found if t.startswith("cleancoin.")}


def package_graph() -> dict[str, set[str]]:
    """package -> the packages it imports (ignoring itself)."""
    graph: dict[str, set[str]] = defaultdict(set)
    for folder in FOLDERS:
        for path in (ROOT / folder).rglob("*.py"):
            source = _package(_module(path)[0])
            graph[source] |= {_package(t) for t in _imports(path, *_module(path))} - {source}
    return graph


def test_each_package_imports_only_what_the_layout_allows() -> None:
    graph = package_graph()
    assert set(graph) <= set(ALLOWED), f"a package the layout does not know: {set(graph) - set(ALLOWED)}"
    wrong = {pkg: sorted(deps - ALLOWED[pkg]) for pkg, deps in graph.items() if deps - ALLOWED[pkg]}
    assert wrong == {}


def test_no_package_imports_in_a_circle() -> None:
    graph = package_graph()
    cycles: list[list[str]] = []

    def visit(node: str, path: list[str]) -> None:
        for nxt in sorted(graph.get(node, ())):
            if nxt in path:
                cycles.append(path[path.index(nxt):] + [nxt])
            elif len(path) < len(graph) + 1:
                visit(nxt, path + [nxt])

    for start in sorted(graph):
        visit(start, [start])
    assert cycles == []


def test_the_checker_sees_an_import_hidden_in_a_function(tmp_path: Path) -> None:
    """The rules above are only as good as the import finder: a function-level relative
    import of the node from the wallet must show up as components.wallet -> components.node."""
    source = tmp_path / "probe.py"
    source.write_text("def f():\n    from ..node import node\n    return node\n")
    found = _imports(source, "cleancoin.components.wallet.probe", False)
    assert {_package(t) for t in found} == {"components.node"}
