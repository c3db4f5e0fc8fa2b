"""Sweep definitions: wandb files are valid Hydra overrides of our configs, the Optuna/grid counterparts hold the
same search space, and a two-trial sweep runs offline on tiny synthetic data."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from temde import sweeps as sweep_cli
from tests.conftest import REPO

SWEEPS = sorted((REPO / "sweeps").glob("*.yaml"))


def _compose(overrides: list[str], hydra_config: bool = False):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "configs")):
        return compose(config_name="train", overrides=overrides, return_hydra_config=hydra_config)


def _canon(expr: str) -> str:
    """Numbers in one spelling (2.0e-3 == 0.002), so search spaces compare by value."""
    return re.sub(r"(?<![\w.])[-+]?\d+\.?\d*(?:[eE][-+]?\d+)?", lambda m: repr(float(m.group())), expr)


def _samples(spec: dict) -> list:
    if "value" in spec:
        return [spec["value"]]
    if "values" in spec:
        return list(spec["values"])
    return [spec["min"], spec["max"]]


def test_there_are_sweeps():
    assert {p.stem for p in SWEEPS} >= {"temde_bayes", "temde_grid"}


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_wandb_sweep_command_and_parameters_are_valid_hydra_overrides(path):
    sweep = sweep_cli.load_sweep(path)
    assert sweep["method"] in ("bayes", "grid", "random") and sweep["metric"]["name"].startswith("val/")
    command = sweep["command"]
    assert command[command.index("-m") + 1] == "temde.train" and "${args_no_hyphens}" in command
    params = sweep["parameters"]
    fixed = sweep_cli.fixed_overrides(sweep)
    searched = [k for k in params if "value" not in params[k]]
    n = max(len(_samples(params[k])) for k in searched)
    for i in range(n):  # every listed value / both interval ends of every parameter, as the agent would pass it
        overrides = fixed + [f"{k}={_samples(params[k])[i % len(_samples(params[k]))]}" for k in searched]
        cfg = _compose(overrides)
        for override in overrides:
            key, value = override.split("=", 1)
            if key in ("experiment", "logger"):
                continue
            assert str(OmegaConf.select(cfg, key)) == str(yaml.safe_load(value) if value != "none" else "none")
    cfg = _compose(fixed)
    assert OmegaConf.select(cfg, "model.global_pooling.kind") == "temde"


@pytest.mark.parametrize("path", SWEEPS, ids=lambda p: p.stem)
def test_hydra_counterpart_has_the_same_search_space(path):
    sweep = sweep_cli.load_sweep(path)
    hparams = REPO / "configs" / "hparams_search" / path.name
    assert hparams.is_file(), f"{hparams} missing: sweeps must also run without a wandb server"
    cfg = _compose(["hparams_search=" + path.stem, *sweep_cli.fixed_overrides(sweep)], hydra_config=True)
    assert {k: _canon(v) for k, v in cfg.hydra.sweeper.params.items()} == \
        {k: _canon(v) for k, v in sweep_cli.search_space(sweep).items()}
    if sweep["method"] == "bayes":
        assert "optuna" in cfg.hydra.sweeper._target_.lower() and cfg.hydra.sweeper.direction == "maximize"


def test_wandb_spec_translation():
    assert sweep_cli.hydra_search_param({"values": [1, None, "a"]}) == "choice(1, null, a)"
    assert sweep_cli.hydra_search_param({"distribution": "log_uniform_values", "min": 0.1, "max": 2}) == \
        "tag(log, interval(0.1, 2))"
    assert sweep_cli.hydra_search_param({"distribution": "int_uniform", "min": 1, "max": 4}) == "int(interval(1, 4))"
    with pytest.raises(ValueError, match="q_log_uniform"):
        sweep_cli.hydra_search_param({"distribution": "q_log_uniform", "min": 1, "max": 2})


def test_two_trial_optuna_sweep_runs_offline_on_synthetic_data(tmp_path):
    tiny = [f"data.root={tmp_path / 'data'}", "data.synthetic.n_train=8", "data.synthetic.n_dev=5",
            "data.synthetic.n_test=5", "data.synthetic.n_testall=10", "data.synthetic.feature_dim=16",
            "model.img_dim=16", "model.embed_size=32", "model.word_dim=16", "data.batch_size=20",
            "trainer.max_epochs=1", "trainer.enable_progress_bar=false", "callbacks.progress_bar=null",
            "eval.test=false", f"hydra.sweep.dir={tmp_path / 'multirun'}"]
    env = {k: v for k, v in os.environ.items() if k != "WANDB_API_KEY"}
    proc = subprocess.run([sys.executable, str(REPO / "scripts" / "sweep.py"),
                           str(REPO / "sweeps" / "temde_bayes.yaml"), "--offline", "--count", "2",
                           "--", *tiny], cwd=tmp_path, env={**env, "WANDB_MODE": "offline"},
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    runs = tmp_path / "multirun"
    result = yaml.safe_load((runs / "optimization_results.yaml").read_text())
    assert result["best_value"] > 0 and set(result["best_params"]) == set(
        sweep_cli.search_space(sweep_cli.load_sweep(REPO / "sweeps" / "temde_bayes.yaml")))
    for trial in ("0", "1"):
        assert (runs / trial / "metrics.json").is_file()
        assert list((runs / trial / "wandb").glob("offline-run-*")), "wandb did not log the trial offline"
    assert not (runs / "2").exists()
    # Optuna's objective is each trial's best validation score (what wandb sweeps read as val/best)
    val_best = [json.loads((runs / t / "metrics.json").read_text())["_meta"]["val_best"] for t in ("0", "1")]
    assert result["best_value"] == pytest.approx(max(val_best))
    assert Path(runs / "0" / ".hydra" / "overrides.yaml").read_text().count("model.global_pooling.depth") == 1
