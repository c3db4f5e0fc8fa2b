"""Bad input through the public commands: one line ``temde: error: <file>: <expected>``, exit 2, nothing lost.

Python starts cost seconds, so each command runs once per class of input that only it can show; the finer
classes (every layout of hostile checkpoint, each data defect) are covered in-process by
tests/test_checkpoint_safety.py and tests/test_validate.py through the same functions these commands call.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from temde.checkpoint import FORMAT, build_model, save_model
from temde.errors import EXIT_BAD_INPUT
from tests.conftest import REPO
from tests.helpers import tiny_train_overrides

NAME = "synthetic_precomp"
TINY_MODEL = {"_target_": "temde.models.baseline.MeanPoolBaseline", "vocab_size": 200, "img_dim": 48,
              "embed_size": 8, "word_dim": 4}


def _run(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "disabled", "HYDRA_FULL_ERROR": "0"}
    env.pop("TEMDE_DEBUG", None)
    return subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def _one_error_line(proc: subprocess.CompletedProcess, *fragments: str) -> str:
    assert proc.returncode == EXIT_BAD_INPUT, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.startswith("temde: error: ")]
    assert len(lines) == 1, proc.stderr[-2000:]
    for fragment in fragments:
        assert fragment in lines[0], (fragment, lines[0])
    return lines[0]


def _copy_tree(tiny_data_root: Path, dest: Path) -> Path:
    shutil.copytree(tiny_data_root, dest)
    return dest


def test_evaluate_refuses_hostile_and_vocabulary_less_checkpoints(tmp_path: Path, tiny_data_root: Path) -> None:
    marker = tmp_path / "PWNED"
    hostile = tmp_path / "shared_model.ckpt"
    torch.save({"format": FORMAT, "model_config": {"_target_": "os.system", "_args_": [f"touch {marker}"]},
                "state_dict": {}, "word2idx": None, "meta": {}}, hostile)
    no_vocab = save_model(tmp_path / "converted.ckpt", build_model(TINY_MODEL), TINY_MODEL, None)
    data = [f"data.root={tiny_data_root}", f"hydra.run.dir={tmp_path / 'eval'}"]
    proc = _run("-m", "temde.evaluate", f"ckpt={hostile}", *data, cwd=tmp_path)
    _one_error_line(proc, str(hostile), "expected one of the project's model classes")
    assert not marker.exists()
    proc = _run("-m", "temde.evaluate", f"ckpt={no_vocab}", *data, cwd=tmp_path)
    _one_error_line(proc, str(no_vocab), "carries no vocabulary")
    assert not (tmp_path / "eval" / "metrics.json").exists()


def test_train_checks_every_split_before_training(tmp_path: Path, tiny_data_root: Path) -> None:
    root = _copy_tree(tiny_data_root, tmp_path / "data")
    path = root / NAME / "testall_ims.npy"
    feats = np.load(path)
    feats[3, 0, 0] = np.inf
    np.save(path, feats)
    run_dir = tmp_path / "run"
    overrides = [*tiny_train_overrides(root, epochs=1), "data.synthetic=null", "logger=none",
                 f"hydra.run.dir={run_dir}"]
    proc = _run("-m", "temde.train", *overrides, cwd=tmp_path)
    _one_error_line(proc, str(path), "row 3", "expected finite region features")
    assert not (run_dir / "checkpoints").exists() and not (run_dir / "model_best.ckpt").exists()


def test_convert_and_data_check_commands(tmp_path: Path, tiny_data_root: Path) -> None:
    good = save_model(tmp_path / "model_best.ckpt", build_model(TINY_MODEL), TINY_MODEL, None)
    truncated = tmp_path / "model_best.pth.tar"
    truncated.write_bytes(good.read_bytes()[:300])
    out = tmp_path / "out.ckpt"
    out.write_bytes(b"previous result")
    proc = _run("-m", "temde.convert", "sgraf", str(truncated), str(out), cwd=tmp_path)
    line = _one_error_line(proc, str(truncated), "truncated or corrupt")
    assert "must be converted" not in line
    assert out.read_bytes() == b"previous result" and not list(tmp_path.glob(".*tmp"))

    root = _copy_tree(tiny_data_root, tmp_path / "data")
    (root / NAME / "train_caps.txt").write_bytes(b"\xff\xfe broken\n" * 400)
    proc = _run("-m", "temde.data.check", str(root), cwd=tmp_path)
    assert proc.returncode == 1, proc.stderr
    failed = [line for line in proc.stdout.splitlines() if " FAIL " in line]
    assert len(failed) == 1 and "train_caps.txt: line 1 is not UTF-8" in failed[0], proc.stdout
    proc = _run("-m", "temde.data.check", str(tmp_path / "missing"), cwd=tmp_path)
    _one_error_line(proc, str(tmp_path / "missing"), "data root does not exist")


def test_scripts_run_without_path_edits() -> None:
    """Scripts import the checkout's package through the venv, not through sys.path edits."""
    for script in sorted((REPO / "scripts").glob("*.py")):
        assert "sys.path.insert" not in script.read_text(), script.name
