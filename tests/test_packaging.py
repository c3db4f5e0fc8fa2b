"""Packaging: pyproject declares what requirements.txt pins and what the code imports; the wheel carries the
configs, and `python -m temde.train --cfg job` works from another directory after installing it."""

from __future__ import annotations

import ast
import importlib.metadata
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]


def _name(req: str) -> str:
    return re.split(r"[=<>!~\[ ;]", req.strip(), maxsplit=1)[0].lower().replace("_", "-")


def _requirements() -> tuple[list[str], list[str]]:
    runtime, dev, current = [], [], None
    for line in (REPO / "requirements.txt").read_text().splitlines():
        if line.startswith("# Runtime"):
            current = runtime
        elif line.startswith("# Development"):
            current = dev
        elif line.strip() and not line.startswith("#") and current is not None:
            current.append(line.strip())
    return runtime, dev


def test_pyproject_pins_what_requirements_pin():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    runtime, dev = _requirements()
    assert runtime and dev
    assert set(runtime) <= set(project["dependencies"])
    assert set(dev) == set(project["optional-dependencies"]["dev"])


def _third_party_imports() -> set[str]:
    names = set()
    for path in (REPO / "temde").rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "temde"}


def test_every_imported_package_is_declared():
    declared = {_name(r) for r in tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]}
    dists = importlib.metadata.packages_distributions()  # import name -> distributions (PIL -> Pillow)
    missing = {mod: dists.get(mod) for mod in _third_party_imports()
               if not {d.lower().replace("_", "-") for d in dists.get(mod, [mod])} & declared}
    assert not missing, f"imported but not declared in pyproject.toml: {missing}"


def test_wheel_carries_configs_and_runs_from_elsewhere(tmp_path):
    wheels, site = tmp_path / "wheels", tmp_path / "site"
    pip = [sys.executable, "-m", "pip"]
    subprocess.run([*pip, "wheel", str(REPO), "--no-deps", "--no-build-isolation", "-q", "-w", str(wheels)],
                   check=True, cwd=tmp_path, capture_output=True)
    wheel = next(wheels.glob("temde-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    ours = {f"temde/configs/{p.relative_to(REPO / 'configs')}" for p in (REPO / "configs").rglob("*.yaml")}
    assert ours and ours <= names
    subprocess.run([*pip, "install", "-q", "--no-deps", "--target", str(site), str(wheel)], check=True,
                   capture_output=True)
    env = {**os.environ, "PYTHONPATH": str(site)}
    job = subprocess.run([sys.executable, "-m", "temde.train", "--cfg", "job", "experiment=synthetic_sgr"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert job.returncode == 0, job.stderr
    assert "_target_: temde.models.sgraf.SGRAF" in job.stdout
    where = subprocess.run([sys.executable, "-c", "import temde; print(temde.__file__)"], cwd=tmp_path, env=env,
                           capture_output=True, text=True, check=True)
    assert where.stdout.strip().startswith(str(site))
