"""The rooms of ``thotd`` import one way down, and no two modules import each other.

Every import counts, the lazy ones inside functions too: a lazy import is still a
dependency, only a cheaper one.  The order (see ``thotd/__init__.py``)::

    thot (the script API) > cli > service > web > engine > executor > project > leaves

The leaves are the modules beside ``thotd/__init__.py``; they import nothing from thotd.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RANK = {"leaf": 0, "project": 1, "executor": 2, "engine": 3, "web": 4, "service": 5, "cli": 6,
        "thot": 7}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _room(module: str) -> str:
    parts = module.split(".")
    if parts[0] == "thot":
        return "thot"
    if len(parts) >= 2 and parts[1] in RANK:
        return parts[1]
    return "leaf"


def _modules() -> dict[str, Path]:
    found = {}
    for top in ("thotd", "thot"):
        for path in sorted((REPO / top).rglob("*.py")):
            if "example" in path.relative_to(REPO).parts:
                continue
            found[_module_name(path)] = path
    return found


def _typing_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``: names for the type checker,
    never imported when the code runs."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            out.update(id(sub) for stmt in node.body for sub in ast.walk(stmt))
    return out


def _imports(path: Path, known: set[str], *, typing: bool = True) -> set[str]:
    """Every thotd/thot module this file imports, at the top or inside a function (and under
    ``if TYPE_CHECKING:`` unless ``typing`` is false)."""
    tree = ast.parse(path.read_text(), str(path))
    skip = set() if typing else _typing_only(tree)
    out: set[str] = set()
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # ``from thotd.project import index`` names a module; ``from thotd.x import f`` not
            names = [f"{node.module}.{alias.name}" for alias in node.names] + [node.module]
        else:
            continue
        out.update(name for name in names if name in known)
    return out


def _graph(*, typing: bool = True) -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    graph = {name: _imports(path, known, typing=typing) - {name}
             for name, path in modules.items()}
    # a package's ``__init__`` is imported on the way to its modules: not an edge of interest
    return {name: {dep for dep in deps if modules[dep].name != "__init__.py"}
            for name, deps in graph.items()}


def layer_violations(graph: dict[str, set[str]]) -> list[str]:
    return sorted(
        f"{module} ({_room(module)}) imports {dep} ({_room(dep)})"
        for module, deps in graph.items()
        for dep in deps
        if RANK[_room(dep)] > RANK[_room(module)]
    )


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for dep in graph.get(node, ()):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in on_stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return cycles


def test_no_room_imports_a_room_above_it() -> None:
    """Type-only imports count here: a room that names a higher room's types depends on it."""
    assert layer_violations(_graph()) == []


def test_no_import_cycles() -> None:
    """Imports that run count, lazy ones too; ``if TYPE_CHECKING:`` ones do not (two modules
    may name each other's types; that is how a lazy import is typed)."""
    assert import_cycles(_graph(typing=False)) == []


def test_the_checks_can_fail() -> None:
    """The two rules catch what they are for (a check that cannot fail proves nothing)."""
    bad = {"thotd.project.index": {"thotd.service.daemon"}, "thotd.service.daemon": set()}
    assert layer_violations(bad) == [
        "thotd.project.index (project) imports thotd.service.daemon (service)"]
    loop = {"thotd.a": {"thotd.b"}, "thotd.b": {"thotd.a"}}
    assert import_cycles(loop) == [["thotd.a", "thotd.b"]]


@pytest.mark.parametrize("init", sorted((REPO / "thotd").rglob("__init__.py")),
                         ids=lambda p: str(p.relative_to(REPO)))
def test_package_inits_import_nothing_and_say_what_they_own(init: Path) -> None:
    tree = ast.parse(init.read_text())
    assert ast.get_docstring(tree), f"{init} needs a docstring: what the room owns, may import"
    assert not [n for n in tree.body if isinstance(n, ast.Import | ast.ImportFrom)], init
