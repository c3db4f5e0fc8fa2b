"""Runs as a user and a scheduler see them: kill and resume, signals, run directories, the sweep objective."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
import yaml

from temde import training
from temde.run_dir import checkpoint_run_dir, claim_run_dir, resolve_run_dir
from temde.tracking import OBJECTIVE
from temde.training import train
from tests.conftest import REPO
from tests.helpers import compose_config, tiny_train_overrides

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "WANDB_MODE": "offline", "HYDRA_FULL_ERROR": ""}


def _rows(run: Path) -> list[dict[str, str]]:
    with (run / "csv" / "metrics.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def _history(run: Path) -> list[tuple]:
    """Every training-loss and validation row: (epoch, step, key, value)."""
    out = []
    for r in _rows(run):
        for key in ("train/loss_step", "train/loss_epoch", "val/rsum", "lr-Adam"):
            if r.get(key):
                out.append((r["epoch"], r["step"], key, round(float(r[key]), 4)))
    return out


def _spawn(overrides: list[str], cwd: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "temde.train", *overrides], cwd=cwd, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not predicate():
        if proc.poll() is not None:
            out, err = proc.communicate()
            pytest.fail(f"training ended (rc {proc.returncode}) before the condition held:\n{out[-2000:]}\n{err[-3000:]}")
        if time.time() > deadline:
            proc.kill()
            pytest.fail("timed out")
        time.sleep(0.02)


def _in_epoch(run: Path, epoch: int) -> bool:
    try:
        return any(r.get("epoch") == str(epoch) for r in _rows(run))
    except (FileNotFoundError, csv.Error):
        return False


def test_sigkill_then_resume_equals_uninterrupted_run(tmp_path, tiny_data_root):
    epochs = 4
    overrides = [*tiny_train_overrides(tiny_data_root, epochs)]
    straight = tmp_path / "straight"
    _, meta_straight = train(compose_config("train", overrides), straight)

    run = tmp_path / "run"
    proc = _spawn([*overrides, f"hydra.run.dir={run}"], tmp_path)
    _wait_for(lambda: _in_epoch(run, 1) and (run / "checkpoints" / "last.ckpt").is_file(), proc)
    proc.kill()  # SIGKILL, mid-training: no handler runs
    proc.wait()
    before = [float(r["val/rsum"]) for r in _rows(run) if r.get("val/rsum")]
    assert not (run / "metrics.json").exists()

    # Resume as the README says, without naming a run directory: it continues in the same one.
    proc = _spawn([*overrides, f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}"], tmp_path)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert not (tmp_path / "outputs").exists(), "the resume must not start a new run directory"
    assert "ckpt_path" not in (run / ".hydra" / "overrides.yaml").read_text()  # the first config is kept
    assert "ckpt_path" in next((run / ".hydra").glob("resume_*/overrides.yaml")).read_text()
    assert _history(run) == _history(straight)
    got, want = json.loads((run / "metrics.json").read_text()), json.loads((straight / "metrics.json").read_text())
    assert got["test"] == pytest.approx(want["test"]) and got["testall_5fold"] == pytest.approx(want["testall_5fold"])
    val = [float(r["val/rsum"]) for r in _rows(run) if r.get("val/rsum")]
    assert len(val) == epochs
    assert got["_meta"]["val_best"] == pytest.approx(max(val)) == pytest.approx(meta_straight["val_best"])
    assert got["_meta"]["val_best"] >= max(before)  # resuming never lowers the selected model's score
    # the run's log tells a batch user what happened, across both processes
    log = (run / "train.log").read_text()
    assert log.count("validation: rsum") >= epochs  # Hydra appends to train.log: both processes' lines
    assert "epoch 1/4" in log and f"run directory: {run}" in log


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_cleanly_with_exit_code_and_resume_hint(tmp_path, tiny_data_root, signum):
    run = tmp_path / "run"
    proc = _spawn([*tiny_train_overrides(tiny_data_root, 200), f"hydra.run.dir={run}"], tmp_path)
    _wait_for(lambda: (run / "checkpoints" / "last.ckpt").is_file() and _in_epoch(run, 1), proc)
    proc.send_signal(signum)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum
    name = signal.Signals(signum).name
    last_line = err.strip().splitlines()[-1]
    assert last_line.startswith(f"temde: stopped by {name}; resume with: python -m temde.train ")
    assert f"ckpt_path={run / 'checkpoints' / 'last.ckpt'}" in last_line and "Traceback" not in err
    state = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["epoch"] >= 0 and not (run / "metrics.json").exists()


def test_run_directories_are_never_shared(tmp_path):
    base = tmp_path / "outputs" / "train" / "x" / "2026-01-01_00-00-00"
    claimed: list[Path] = []
    threads = [threading.Thread(target=lambda: claimed.append(claim_run_dir(base))) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(claimed)) == 8 and base in claimed and all(p.is_dir() for p in claimed)
    assert {p.name for p in claimed} == {base.name, *(f"{base.name}_{i}" for i in range(1, 8))}
    # the resolver used by hydra.run.dir: a resume goes back to its run, anything else gets a fresh directory
    (tmp_path / "old" / "checkpoints").mkdir(parents=True)
    ckpt = tmp_path / "old" / "checkpoints" / "last.ckpt"
    assert checkpoint_run_dir(ckpt) == tmp_path / "old" and resolve_run_dir(str(ckpt), str(base)) == str(tmp_path / "old")
    other = tmp_path / "other" / "2026"
    assert resolve_run_dir(None, str(other)) == str(other) and other.is_dir()
    assert "temde_run_dir:${ckpt_path}" in (REPO / "configs" / "train.yaml").read_text()


def test_two_processes_started_in_the_same_second_get_two_directories(tmp_path):
    code = ("from temde.run_dir import resolve_run_dir; import sys; "
            "print(resolve_run_dir(None, sys.argv[1]))")
    base = str(tmp_path / "train" / "same-second")
    procs = [subprocess.Popen([sys.executable, "-c", code, base], stdout=subprocess.PIPE, text=True, env=ENV)
             for _ in range(3)]
    dirs = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert len(dirs) == 3


def test_sweep_objective_is_the_best_validation_score(tmp_path, tiny_data_root, monkeypatch):
    wandb = pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    summaries = []  # the wandb run summary as training leaves it, read just before the run is closed

    def finish() -> None:
        if wandb.run is not None:
            summaries.append(dict(wandb.run.summary))
            wandb.finish()

    monkeypatch.setattr(training, "finish_wandb", finish)
    out = tmp_path / "run"
    cfg = compose_config("train", [*tiny_train_overrides(tiny_data_root, 3), "logger=wandb", "eval.test=false"])
    results, meta = train(cfg, out, experiment="tiny")
    val = [float(r["val/rsum"]) for r in _rows(out) if r.get("val/rsum")]
    assert len(val) == 3 and results == {} and len(set(val)) > 1
    assert meta["val_best"] == pytest.approx(max(val))  # what temde.train returns to Optuna
    assert [float(r[OBJECTIVE]) for r in _rows(out) if r.get(OBJECTIVE)] == [pytest.approx(max(val))]
    assert len(summaries) == 1 and summaries[0][OBJECTIVE] == pytest.approx(max(val))
    assert (out / "wandb_id.txt").read_text().strip() in next((out / "wandb").glob("offline-run-*")).name
    for sweep in (REPO / "sweeps").glob("*.yaml"):  # the wandb sweeps read the same name
        assert yaml.safe_load(sweep.read_text())["metric"] == {"name": OBJECTIVE, "goal": "maximize"}


def test_no_progress_bar_logs_lines_instead(tmp_path, tiny_data_root, caplog):
    # The default callbacks keep their progress bar; enable_progress_bar=false used to be a Lightning error.
    overrides = [o for o in tiny_train_overrides(tiny_data_root, 2) if not o.startswith("callbacks.progress_bar")]
    cfg = compose_config("train", [*overrides, "trainer.enable_progress_bar=false", "eval.test=false",
                                   "callbacks.log_progress.every_seconds=0"])
    with caplog.at_level("INFO", logger="temde"):
        train(cfg, tmp_path / "run")
    text = caplog.text
    assert "epoch 1/2: 13 steps" in text and "epoch 2 validation: rsum" in text
    assert "epoch 1 step 13/13 (global 13): loss" in text
    assert f"run directory: {tmp_path / 'run'}" in text


def test_help_lists_only_selectable_groups():
    # Hydra's --help lists every sub-directory of configs/ as a config group: only selectable groups live there.
    groups = {d.name for d in (REPO / "configs").iterdir() if d.is_dir()}
    assert groups == {"callbacks", "data", "experiment", "hparams_search", "logger", "model", "global", "trainer"}
    assert (REPO / "sweeps" / "temde_bayes.yaml").is_file() and (REPO / "tables" / "f30k.yaml").is_file()


def test_resume_continues_the_same_wandb_run(tmp_path, tiny_data_root, monkeypatch):
    pytest.importorskip("wandb")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "run"
    base = [*tiny_train_overrides(tiny_data_root, 1), "logger=wandb", "eval.test=false"]
    train(compose_config("train", base), out, experiment="tiny")
    first_id = (out / "wandb_id.txt").read_text().strip()
    resume = [*tiny_train_overrides(tiny_data_root, 2), "logger=wandb", "eval.test=false",
              f"ckpt_path={out / 'checkpoints' / 'last.ckpt'}"]
    train(compose_config("train", resume), out, experiment="tiny")
    assert (out / "wandb_id.txt").read_text().strip() == first_id
    runs = sorted((out / "wandb").glob("offline-run-*"))
    # two sessions of one wandb run (wandb adds a -1 suffix when both started in the same second)
    assert len(runs) == 2 and all(f"-{first_id}" in r.name for r in runs)
    assert [r["epoch"] for r in _rows(out) if r.get("val/rsum")] == ["0", "1"]
