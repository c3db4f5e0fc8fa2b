"""Bad input through the entry points: one line ``temde: error: <file>: <expected>``, exit 2, before any training."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import InstantiationException

from temde.cli import bad_input, one_line, resume_command
from temde.convert.__main__ import main as convert_main
from temde.data.precomp import DataError
from temde.errors import InputError
from temde.evaluating import evaluate
from temde.preflight import check_train_options
from temde.runtime import auto_threads, resolve_threads
from temde.training import bind_run, train
from tests.conftest import REPO
from tests.helpers import TINY_DATA_OVERRIDES, compose_config, tiny_train_overrides

ENV = {k: v for k, v in os.environ.items() if k not in ("HYDRA_FULL_ERROR", "TEMDE_DEBUG")}
ENV["OMP_NUM_THREADS"] = "1"


def _cli(module: str, *args: str, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=ENV, cwd=cwd,
                          timeout=300)


def _one_line_error(proc: subprocess.CompletedProcess, where: str) -> str:
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines and lines[-1].startswith(f"temde: error: {where}: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "Error executing job" not in proc.stderr
    return lines[-1]


def test_evaluate_without_checkpoint_is_one_line(tmp_path):
    line = _one_line_error(_cli("temde.evaluate", f"hydra.run.dir={tmp_path / 'eval'}"), "ckpt")
    assert "python -m temde.evaluate ckpt=<path>" in line


def test_non_integer_epochs_is_one_line(tmp_path):
    line = _one_line_error(_cli("temde.train", "trainer.max_epochs=abc", f"hydra.run.dir={tmp_path / 'run'}"),
                           "trainer.max_epochs")
    assert "'abc'" in line


def _broken_copy(tmp_path, tiny_data_root, split: str, breakage: str):
    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    path = root / "synthetic_precomp" / f"{split}_ims.npy"
    if breakage == "missing":
        path.unlink()
    else:
        feats = np.load(path)
        feats[3, 2, 1] = np.nan
        np.save(path, feats)
    return root, path


def test_missing_test_split_is_reported_before_training(tmp_path, tiny_data_root):
    root, path = _broken_copy(tmp_path, tiny_data_root, "test", "missing")
    cfg = compose_config("train", [*tiny_train_overrides(root, 2), "data.synthetic=null"])
    with pytest.raises(DataError, match=str(path)):
        train(cfg, tmp_path / "run")
    assert not (tmp_path / "run" / "checkpoints").exists()
    # eval.test=false does not touch the test splits
    train(compose_config("train", [*tiny_train_overrides(root, 1), "data.synthetic=null", "eval.test=false"]),
          tmp_path / "run2")
    assert (tmp_path / "run2" / "model_best.ckpt").is_file()


def test_feature_width_mismatch_names_the_file(tmp_path, tiny_data_root):
    cfg = compose_config("train", [*tiny_train_overrides(tiny_data_root, 1), "model.img_dim=64"])
    with pytest.raises(InputError, match="expected model.img_dim=48") as err:
        train(cfg, tmp_path / "run")
    assert err.value.where == "model.img_dim" and not (tmp_path / "run" / "checkpoints").exists()


def test_convert_errors_are_one_line(tmp_path, capsys):
    assert convert_main(["sgraf", str(tmp_path / "missing.pth.tar"), str(tmp_path / "out.ckpt")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("temde: error: ") and "missing.pth.tar" in err[0]
    assert not (tmp_path / "out.ckpt").exists()


def test_wrapped_errors_are_found_and_printed_on_one_line():
    cause = InputError("data/x.npy", "finite region\n  features")
    try:
        try:
            raise cause
        except InputError as e:
            raise InstantiationException("Error in call to target") from e
    except InstantiationException as wrapped:
        assert bad_input(wrapped) is cause
    assert one_line(cause) == "temde: error: data/x.npy: finite region features"
    assert bad_input(RuntimeError("bug")) is None  # our bugs keep their traceback
    missing = FileNotFoundError(2, "No such file or directory", "a.ckpt")
    assert one_line(missing) == "temde: error: a.ckpt: an existing file (No such file or directory)"
    cmd = resume_command("temde.train", ["experiment=x", "ckpt_path=old", "optim.lr=1e-3"], "/r un/last.ckpt")
    assert cmd == "python -m temde.train experiment=x optim.lr=1e-3 'ckpt_path=/r un/last.ckpt'"


def test_thread_rule():
    assert auto_threads(2, 0.0) == 1 and auto_threads(1, 0.0) == 1
    assert auto_threads(16, 0.2) == 15 and auto_threads(16, 14.5) == 1 and auto_threads(16, 40.0) == 1
    assert auto_threads(8, 0.0) == 8 and auto_threads(8, 3.0) == 5
    assert auto_threads(16, 0.0, omp_env="3") == 3 and auto_threads(2, 0.0, omp_env="x") == 1
    assert resolve_threads(4) == 4 and resolve_threads("2") == 2
    for bad in ("abc", 0, -1, True):
        with pytest.raises(InputError, match="threads"):
            resolve_threads(bad)


def test_evaluate_library_function_matches_training_and_says_where(tmp_path, tiny_data_root, capsys):
    results, _ = train(compose_config("train", tiny_train_overrides(tiny_data_root, 2)), tmp_path / "run")
    cfg = compose_config("eval", [f"data.root={tiny_data_root}", *TINY_DATA_OVERRIDES,
                                  f"ckpt={tmp_path / 'run' / 'model_best.ckpt'}", "save_sims=true"])
    evaluated = evaluate(cfg, tmp_path / "eval")
    assert evaluated["test"] == pytest.approx(results["test"])
    assert f"wrote {tmp_path / 'eval' / 'metrics.json'}" in capsys.readouterr().out
    assert (tmp_path / "eval" / "sims_test.npy").is_file() and not list((tmp_path / "eval").glob(".*tmp*"))
    with pytest.raises(InputError, match="a checkpoint file"):
        evaluate(compose_config("eval", [f"ckpt={tmp_path / 'nope.ckpt'}"]), tmp_path / "eval2")


def test_every_shipped_experiment_passes_the_option_checks(tmp_path):
    experiments = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "configs")):
        for experiment in experiments:  # the up-front checks never reject a shipped row
            cfg = compose(config_name="train", overrides=[f"experiment={experiment}", "logger=wandb"])
            check_train_options(bind_run(cfg, tmp_path, experiment))
        bad = compose(config_name="train", overrides=[f"experiment={experiments[0]}", "optim.lr=-1"])
    with pytest.raises(InputError, match="optim.lr"):
        check_train_options(bind_run(bad, tmp_path, experiments[0]))
