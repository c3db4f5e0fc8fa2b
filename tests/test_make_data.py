"""`make reproduce` / `make eval` never fall back to synthetic data: real by default, synthetic only when asked."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from temde.data.required import require_files
from temde.errors import InputError
from temde.reproduce import build_plan, compose_run_config
from tests.conftest import REPO

needs_make = pytest.mark.skipif(shutil.which("make") is None, reason="GNU make not installed")


def _make_n(*args: str) -> subprocess.CompletedProcess:
    """What make would run (-n: print, run nothing; the venv recipe is not executed either)."""
    return subprocess.run(["make", "-n", "-C", str(REPO), *args], capture_output=True, text=True, timeout=60)


@needs_make
def test_make_reproduce_defaults_to_the_tables_real_data():
    for table in ("f30k", "coco1k"):
        out = _make_n("reproduce", f"TABLE={table}")
        assert out.returncode == 0, out.stderr
        line = next(x for x in out.stdout.splitlines() if "scripts/reproduce.py" in x)
        assert f"--table {table} --data real" in line and "synthetic" not in line
    line = next(x for x in _make_n("reproduce", "TABLE=f30k", "DATA=synthetic").stdout.splitlines()
                if "scripts/reproduce.py" in x)
    assert "--data synthetic" in line


@needs_make
def test_make_eval_requires_data():
    out = _make_n("eval", "CKPT=a.ckpt")
    assert out.returncode != 0 and "DATA=f30k|coco|synthetic" in out.stderr and "temde.evaluate" not in out.stdout
    out = _make_n("eval", "CKPT=a.ckpt", "DATA=f30k")
    assert out.returncode == 0 and "data=f30k" in out.stdout


def test_reproduce_without_real_data_stops_with_one_line(tmp_path):
    # the script's own default is the real data too; no training starts
    result = subprocess.run([sys.executable, str(REPO / "scripts" / "reproduce.py"), "--table", "f30k",
                             "--override", f"data.root={tmp_path}", "--out-root", str(tmp_path / "runs")],
                            capture_output=True, text=True, timeout=120, cwd=REPO)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("temde: error: ")
    assert "f30k_precomp" in lines[0] and "DATA=synthetic" in lines[0]
    assert not (tmp_path / "runs").exists()


def test_required_files_of_every_run_of_a_table(tmp_path):
    plan = build_plan("f30k", "real", overrides=[f"data.root={tmp_path}"], out_root=tmp_path / "runs")
    datas = [compose_run_config(run).data for run in plan.runs]
    with pytest.raises(InputError, match="train_ims.npy.*f30k_precomp.*DATA=synthetic"):
        require_files(datas, "or DATA=synthetic")
    for split in ("train", "dev", "test"):
        for kind in ("ims.npy", "caps.txt"):
            (tmp_path / "f30k_precomp").mkdir(exist_ok=True)
            (tmp_path / "f30k_precomp" / f"{split}_{kind}").touch()
    (tmp_path / "vocab").mkdir()
    for name in ("f30k_precomp_vocab.json", "vsrn_f30k_precomp_vocab.pkl"):
        (tmp_path / "vocab" / name).touch()
    require_files(datas, "or DATA=synthetic")  # every run of the table finds its files: no error
    (tmp_path / "f30k_precomp" / "dev_caps.txt").unlink()
    with pytest.raises(InputError, match="dev_caps.txt"):
        require_files(datas, "or DATA=synthetic")
