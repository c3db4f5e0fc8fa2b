"""Training as a library function: ``train(cfg, out_dir)`` fits, exports the best model and evaluates it.

Callable without Hydra's global state (``python -m temde.train`` is a thin shell over it; tests and
``temde.reproduce`` call it directly). Trains with validation on dev every epoch, and also every
``callbacks.validation_schedule.every_n_steps`` iterations where set (VSRN rows: 500). The best checkpoint is
chosen by ``val/<model_selection>`` over all validations, and ``last.ckpt`` (epoch ends) is kept for resume.
Then evaluates the best checkpoint on the test splits and writes ``metrics.json``, ``model_best.ckpt`` (our
portable format) and a Recall table into ``out_dir``.
A run resumed from ``ckpt_path`` continues: best score, best checkpoint and the CSV / wandb history carry over.
"""

from __future__ import annotations

import copy
import logging
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, OmegaConf, open_dict
from pytorch_lightning.callbacks import LearningRateMonitor, ModelCheckpoint, ProgressBar
from pytorch_lightning.loggers import Logger, WandbLogger

from temde.checkpoint import atomic_torch_save, build_model, load_model, read_resume_checkpoint, save_model
from temde.data.validate import check_split, validate_run_inputs
from temde.errors import InputError
from temde.evaluating import evaluate_models, resolve_device, write_metrics
from temde.evaluation import METRIC_KEYS
from temde.interrupt import GracefulStop, StopRequested
from temde.lightning import RetrievalLitModule
from temde.preflight import check_train_options
from temde.run_dir import checkpoint_run_dir
from temde.runtime import apply_threads
from temde.tracking import (
    HistoryCSVLogger,
    finish_wandb,
    log_objective,
    offline_unless_logged_in,
    remember_wandb_id,
    wandb_resume_kwargs,
)

log = logging.getLogger(__name__)


def model_config_for(cfg: DictConfig, vocab_size: int) -> dict[str, Any]:
    """The resolved model config (``_target_`` + kwargs) with the dataset's vocabulary size filled in."""
    config = OmegaConf.to_container(cfg.model, resolve=True)
    config["vocab_size"] = vocab_size
    return config


def follow_data_regions(model_config: dict[str, Any], datamodule: Any) -> None:
    """SGRAF's ``num_region`` (VisualSA's BatchNorm over region slots; 36 upstream) follows the train split: your
    own grid features have 49 regions (7 x 7), detector features ``--num-regions``. The other splits must then
    have as many (checked by :func:`validate_run_inputs`). Only the feature file's header is read."""
    if "num_region" not in model_config:
        return
    n_regions = check_split(datamodule.root, datamodule.name, datamodule.train_split, values=False).n_regions
    if model_config["num_region"] != n_regions:
        log.info("model.num_region=%s follows the data: %s has %d regions per image", model_config["num_region"],
                 datamodule.train_split, n_regions)
        model_config["num_region"] = n_regions


def bind_run(cfg: DictConfig, out_dir: Path, experiment: str | None) -> DictConfig:
    """A copy of ``cfg`` whose ``run_dir`` / ``experiment_name`` are plain values (no ``${hydra:...}``)."""
    cfg = copy.deepcopy(cfg)
    OmegaConf.set_readonly(cfg, False)
    with open_dict(cfg):
        cfg.run_dir = str(out_dir)
        cfg.experiment_name = experiment
    return cfg


def _resume_point(path: Path, meta: dict[str, Any]) -> tuple[int, int]:
    """(first epoch, first global step) a resume from the checkpoint at ``path`` (its ``meta``) trains."""
    try:
        return int(meta["epoch"]) + 1, int(meta["global_step"])
    except (KeyError, TypeError, ValueError) as err:
        raise InputError(path, f"a readable Lightning checkpoint to resume from (no epoch/global_step: {err})") from err


def _carry_over(ckpt_path: Path, source: Path, out_dir: Path) -> Path:
    """Resuming into another directory: copy the history and checkpoints, re-point the checkpoint callback."""
    for sub in ("csv", "checkpoints"):
        if (source / sub).is_dir() and not (out_dir / sub).exists():
            shutil.copytree(source / sub, out_dir / sub)
    for name in ("wandb_id.txt",):
        if (source / name).is_file() and not (out_dir / name).exists():
            shutil.copy2(source / name, out_dir / name)
    old, new = str((source / "checkpoints").resolve()), str((out_dir / "checkpoints").resolve())
    state = torch.load(ckpt_path, map_location="cpu", weights_only=True)

    def remap(value: Any) -> Any:
        if isinstance(value, str) and value.startswith(old):
            return new + value[len(old):]
        if isinstance(value, dict):
            return {remap(k): remap(v) for k, v in value.items()}
        return value

    state["callbacks"] = {k: remap(v) for k, v in state.get("callbacks", {}).items()}
    target = out_dir / "checkpoints" / ckpt_path.name
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(state, target)
    return target


def prepare_resume(ckpt_path: str | None, out_dir: Path) -> tuple[str | None, tuple[int, int] | None]:
    """The checkpoint Lightning resumes from and where the resumed run starts (None, None for a fresh run)."""
    if not ckpt_path:
        return None, None
    path = Path(ckpt_path)
    if not path.is_file():
        raise InputError(path, "a checkpoint to resume from (<run>/checkpoints/last.ckpt)")
    # allow-listed model + Lightning layout, read with weights_only; its meta says where the run stopped
    resume_at = _resume_point(path, read_resume_checkpoint(path)["meta"])
    source = checkpoint_run_dir(path)
    if source is not None and source.resolve() != out_dir.resolve():
        log.info("resuming %s into %s: copying its history and checkpoints", source, out_dir)
        path = _carry_over(path, source, out_dir)
    return str(path), resume_at


def _loggers(cfg: DictConfig, out_dir: Path, resume_at: tuple[int, int] | None) -> list[Logger]:
    loggers = []
    for conf in cfg.logger or []:
        cls = hydra.utils.get_class(conf._target_)
        extra: dict[str, Any] = {}
        if issubclass(cls, HistoryCSVLogger):
            extra["resume_at"] = resume_at
        if issubclass(cls, WandbLogger):
            extra.update(wandb_resume_kwargs(out_dir, resume_at is not None))
        loggers.append(hydra.utils.instantiate(conf, **extra))
    return loggers


def _callbacks(cfg: DictConfig, bar: bool, has_loggers: bool) -> list[pl.Callback]:
    callbacks = [hydra.utils.instantiate(c) for c in cfg.callbacks.values() if c is not None]
    if not has_loggers:  # nothing to monitor the learning rate into
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    if not bar:  # redirected output or enable_progress_bar=false: LogProgress writes lines instead
        callbacks = [c for c in callbacks if not isinstance(c, ProgressBar)]
    return callbacks


def train(cfg: DictConfig, out_dir: str | Path, experiment: str | None = None) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit, export the best model, evaluate it; returns (test metrics per split, run metadata).

    SIGTERM / SIGINT raise :class:`~temde.interrupt.StopRequested` (during ``fit`` at the next batch boundary)
    whose ``resume_hint`` names the ``last.ckpt`` to resume from.
    """
    out_dir = Path(out_dir)
    stopper = GracefulStop()
    with stopper.installed():
        try:
            return _train(cfg, out_dir, experiment, stopper)
        except StopRequested as stop:
            finish_wandb()
            last = out_dir / "checkpoints" / "last.ckpt"
            hint = f"ckpt_path={last}" if last.is_file() else "no epoch finished: start again"
            raise StopRequested(stop.signum, hint) from None


def _train(cfg: DictConfig, out_dir: Path, experiment: str | None,
           stopper: GracefulStop) -> tuple[dict[str, Any], dict[str, Any]]:
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = bind_run(cfg, out_dir, experiment)
    check_train_options(cfg)
    apply_threads(cfg.get("threads", "auto"))
    offline_unless_logged_in()
    ckpt_path, resume_at = prepare_resume(cfg.ckpt_path, out_dir)
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = hydra.utils.instantiate(cfg.data)
    vocab = datamodule.vocab
    model_config = model_config_for(cfg, len(vocab))
    follow_data_regions(model_config, datamodule)
    validate_run_inputs(datamodule, model_config, test=cfg.eval.test)  # every split, before any training
    test_splits = OmegaConf.to_container(cfg.data.test_splits, resolve=True)
    model = build_model(model_config)
    module = RetrievalLitModule(
        model=model, model_config=model_config, loss=hydra.utils.instantiate(cfg.loss), word2idx=vocab.word2idx,
        seed=cfg.seed, img_block=cfg.eval.img_block, txt_block=cfg.eval.txt_block, **cfg.optim,
    )
    bar = bool(cfg.trainer.enable_progress_bar) and sys.stdout.isatty()
    loggers = _loggers(cfg, out_dir, resume_at)
    callbacks = [*_callbacks(cfg, bar, bool(loggers)), stopper]
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers or False,
                                                  enable_progress_bar=bar)
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))
    remember_wandb_id(trainer.loggers, out_dir)

    started = time.time()
    stopper.deferred = True  # never stop inside a checkpoint write: at the next batch boundary
    try:
        trainer.fit(module, datamodule=datamodule, ckpt_path=ckpt_path, weights_only=True)
    finally:
        stopper.deferred = False
    stopper.check()
    train_seconds = time.time() - started
    results, meta = _finish(cfg, trainer, model, model_config, datamodule, test_splits, out_dir)
    meta.update(train_seconds=round(train_seconds, 1), experiment=experiment)
    write_metrics(results, out_dir, meta)
    log.info("run directory: %s (metrics.json, model_best.ckpt, checkpoints/, csv/)", out_dir)
    return results, meta


def _finish(cfg: DictConfig, trainer: pl.Trainer, model: torch.nn.Module, model_config: dict[str, Any],
            datamodule: Any, test_splits: dict[str, Any], out_dir: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Export the selected model, log the sweep objective, evaluate on the test splits."""
    ckpt = trainer.checkpoint_callback
    best_path = ckpt.best_model_path if isinstance(ckpt, ModelCheckpoint) else ""
    best_model, _ = load_model(best_path) if best_path else (model.eval(), None)
    val_best = float(ckpt.best_model_score) if best_path and ckpt.best_model_score is not None else None
    meta = {"val_best": val_best, "model_selection": cfg.model_selection, "source": best_path}
    vocab = datamodule.vocab
    save_model(out_dir / "model_best.ckpt", best_model, model_config, vocab.word2idx, meta)
    log_objective(trainer.loggers, val_best, trainer.global_step)  # the one number wandb sweeps and Optuna maximise

    results: dict[str, Any] = {}
    if cfg.eval.test:
        results = evaluate_models([(best_model, vocab)], datamodule, test_splits, cfg.eval.img_block,
                                  cfg.eval.txt_block, cfg.data.eval_batch_size, resolve_device(cfg.eval.device),
                                  precision=cfg.eval.get("precision", "fp32"))
        for lg in trainer.loggers:
            lg.log_metrics({f"test/{label}/{k}": v for label, m in results.items() for k, v in m.items()})
            if isinstance(lg, WandbLogger):  # the final Recall table
                lg.log_table("test/metrics", columns=["split", *METRIC_KEYS],
                             data=[[label, *(m[k] for k in METRIC_KEYS)] for label, m in results.items()])
    finish_wandb()  # one wandb run per training run, also inside a Hydra multirun
    return results, meta
