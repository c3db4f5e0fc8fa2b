"""The package's import graph: no cycles, and no hidden (function-level) imports of the project's own modules.

Walks ``temde/`` with :mod:`ast` (nothing is imported), so it sees lazy imports too: a cycle hidden inside a
function is still a cycle of the design.
"""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

PACKAGE = REPO / "temde"

# Function-level imports of temde modules that are allowed, as (importing module, imported module): each needs
# a reason a test documents (an optional dependency that must not load at import time).
ALLOWED_LOCAL_IMPORTS: set[tuple[str, str]] = set()

# Being removed by the owners of these modules (issue 11); an entry that no longer occurs fails the test below,
# so the list can only shrink. Their edges are left out of the cycle check until then.
PENDING_LOCAL_IMPORTS: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _resolve(name: str, modules: dict[str, Path]) -> str | None:
    """The project module an import refers to (``from temde.a import b`` may name module ``temde.a.b``)."""
    while name and name not in modules:
        name = name.rpartition(".")[0]
    return name or None


def _imports(path: Path, modules: dict[str, Path]) -> list[tuple[str, bool]]:
    """(imported project module, at module level?) for every import statement of ``path``."""
    tree = ast.parse(path.read_text(), str(path))
    top_level = {id(node) for node in tree.body}
    for node in tree.body:  # `if TYPE_CHECKING:` / try blocks at module level count as module level
        if isinstance(node, (ast.If, ast.Try)):
            top_level.update(id(n) for n in ast.walk(node))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            if name.split(".")[0] == "temde" and (target := _resolve(name, modules)):
                out.append((target, id(node) in top_level))
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    return {name: {t for t, _ in _imports(path, modules) if t != name and (name, t) not in PENDING_LOCAL_IMPORTS}
            for name, path in modules.items()}


def _local_imports() -> set[tuple[str, str]]:
    modules = _modules()
    return {(name, target) for name, path in modules.items()
            for target, top in _imports(path, modules) if not top and target != name}


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == ["a", "b", "c", "a"]
    assert _find_cycle({"a": {"b"}, "b": {"c"}, "c": set(), "d": {"a", "c"}}) is None


def test_import_walker_sees_lazy_imports(tmp_path):
    src = tmp_path / "m.py"
    src.write_text("from temde.errors import InputError\n\ndef f():\n    from temde.modules import norms\n")
    modules = {"temde.errors": Path(), "temde.modules": Path(), "temde.modules.norms": Path()}
    assert sorted(_imports(src, modules)) == [("temde.errors", True), ("temde.modules.norms", False)]


def test_no_import_cycles():
    cycle = _find_cycle(_graph())
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def test_no_function_level_imports_of_the_project():
    hidden = _local_imports()
    unexpected = sorted(hidden - ALLOWED_LOCAL_IMPORTS - PENDING_LOCAL_IMPORTS)
    assert not unexpected, "function-level imports of temde modules (import them at module level):\n" + "\n".join(
        f"  {a} imports {b}" for a, b in unexpected)


def test_pending_list_only_names_imports_that_still_exist():
    stale = sorted(PENDING_LOCAL_IMPORTS - _local_imports())
    assert not stale, f"fixed, remove from PENDING_LOCAL_IMPORTS: {stale}"


# What each lower layer may import from the project (itself included). Models know nothing of training,
# evaluation, files or devices; layers and data know nothing of models.
LAYERS = {
    "temde.data": ("temde.data", "temde.pretrained", "temde.errors"),
    "temde.modules": ("temde.modules", "temde.pretrained", "temde.errors"),
    "temde.pretrained": ("temde.errors",),
    "temde.repr": ("temde.errors",),
    "temde.distributed": ("temde.repr", "temde.errors"),
    "temde.losses": ("temde.distributed", "temde.repr", "temde.errors"),
    "temde.models": ("temde.models", "temde.modules", "temde.losses", "temde.distributed", "temde.repr",
                     "temde.errors"),
}


def _layer(name: str) -> str | None:
    return next((layer for layer in LAYERS if name == layer or name.startswith(layer + ".")), None)


def test_lower_layers_import_only_what_comes_before_them():
    bad = sorted((name, target) for name, targets in _graph().items() if (layer := _layer(name))
                 for target in targets if not any(target == a or target.startswith(a + ".") for a in LAYERS[layer]))
    assert not bad, "layering violations:\n" + "\n".join(f"  {a} imports {b}" for a, b in bad)
