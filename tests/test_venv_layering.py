"""Two checkouts sharing one third-party environment each import their own code (issue: shared cached venv).

`make venv` builds a checkout-local `.venv` with `scripts/link_venv.py`; here the same script layers a fake
shared environment under two fake checkouts, and each checkout's interpreter must import its own package and
still see the shared third-party module.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO


def _checkout(root: Path, marker: str) -> Path:
    pkg = root / "probe_pkg"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(f"WHO = {marker!r}\n")
    return root


def _local_venv(tmp: Path, shared: Path, checkout: Path) -> Path:
    venv = tmp / f"venv-{checkout.name}"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run([str(python), str(REPO / "scripts" / "link_venv.py"), str(shared), str(checkout)], check=True)
    return python


def test_each_checkout_imports_its_own_code_over_one_shared_env(tmp_path):
    version = f"python{sys.version_info.major}.{sys.version_info.minor}"
    shared = tmp_path / "shared-env"
    site = shared / "lib" / version / "site-packages"
    site.mkdir(parents=True)
    (site / "third_party_probe.py").write_text("VALUE = 42\n")
    a = _checkout(tmp_path / "clone_a", "a")
    b = _checkout(tmp_path / "clone_b", "b")
    code = "import probe_pkg, third_party_probe; print(probe_pkg.WHO, third_party_probe.VALUE, probe_pkg.__file__)"
    for clone, who in ((a, "a"), (b, "b")):
        python = _local_venv(tmp_path, shared, clone)
        out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=True,
                             cwd=tmp_path).stdout.split()
        assert out[:2] == [who, "42"]
        assert Path(out[2]).resolve().is_relative_to(clone.resolve())
    # the shared environment itself never learns about either checkout
    assert sorted(p.name for p in site.iterdir()) == ["third_party_probe.py"]


def test_link_venv_refuses_a_directory_that_is_not_an_environment(tmp_path):
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "link_venv.py"), str(tmp_path), str(tmp_path)],
                          capture_output=True, text=True)
    assert proc.returncode != 0
    assert proc.stderr.strip().startswith("temde: error:") and str(tmp_path) in proc.stderr
