"""Repository-shape rules of issue 11: small files, and each shared constant or helper defined in one place."""

from __future__ import annotations

import ast
from pathlib import Path

from tests.conftest import REPO

MAX_LINES = 400
SOURCES = sorted([*(REPO / "temde").rglob("*.py"), *(REPO / "scripts").rglob("*.py")])
ONE_HOME = ("CAPTIONS_PER_IMAGE", "RECALL_KS", "RECALL_KEYS", "NORM_EPS", "EMBED_INIT_RANGE",
            "l2norm", "l1norm", "masked_mean", "lengths_to_mask", "IMAGENET_MEAN", "IMAGENET_STD")


def _definitions(path: Path) -> set[str]:
    """Names a file defines at module level (assignments, functions, classes)."""
    names = set()
    for node in ast.parse(path.read_text(), str(path)).body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def test_no_file_under_temde_is_over_400_lines():
    long = {str(p.relative_to(REPO)) for p in (REPO / "temde").rglob("*.py")
            if len(p.read_text().splitlines()) > MAX_LINES}
    assert not long, f"over {MAX_LINES} lines: {sorted(long)}"


def test_each_shared_constant_and_helper_has_one_home():
    homes = {name: [str(p.relative_to(REPO)) for p in SOURCES if name in _definitions(p)] for name in ONE_HOME}
    duplicated = {name for name, files in homes.items() if len(files) > 1}
    assert all(homes.values()), f"not defined anywhere: {[n for n, f in homes.items() if not f]}"
    assert not duplicated, {n: homes[n] for n in duplicated}


def test_readme_module_table_lists_every_module():
    """The README's architecture table names every top-level module and package of temde/ and their files."""
    readme = (REPO / "README.md").read_text()
    table = readme[readme.index("## Architecture"):]
    table = table[: table.index("\n## ")]
    missing = [str(p.relative_to(REPO)) for p in sorted((REPO / "temde").iterdir())
               if (p.suffix == ".py" and p.name != "__init__.py" and f"`{p.relative_to(REPO)}`" not in table)
               or (p.is_dir() and p.name != "__pycache__" and f"`{p.relative_to(REPO)}/`" not in table
                   and f"`{p.relative_to(REPO)}`" not in table)]
    for package in ("data", "modules", "models"):
        missing += [f"temde/{package}/{p.name}" for p in sorted((REPO / "temde" / package).glob("*.py"))
                    if p.name != "__init__.py" and f"`{p.name}`" not in table]
    assert not missing, f"README architecture table lacks: {missing}"
