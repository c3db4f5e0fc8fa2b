"""Training entry point: ``python -m temde.train [experiment=<row>] [overrides]``.

Composes data + model (+ T-EMDE options) + loss + trainer from ``configs/``, trains with validation on dev every
epoch (best checkpoint by ``val/<model_selection>``, ``last.ckpt`` for resume), then evaluates the best
checkpoint on the test splits and writes ``metrics.json``, ``model_best.ckpt`` (our portable format) and a
Recall table in the Hydra run directory.
"""

from __future__ import annotations

import logging
import netrc
import os
import sys
import time
from pathlib import Path
from typing import Any

import hydra
import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf
from pytorch_lightning.callbacks import LearningRateMonitor
from pytorch_lightning.loggers import WandbLogger

from temde.checkpoint import build_model, load_model, read_resume_checkpoint, save_model
from temde.data.validate import check_split, validate_run_inputs
from temde.errors import InputError, exit_bad_input
from temde.evaluate import evaluate_models, resolve_device, write_metrics
from temde.evaluation import METRIC_KEYS
from temde.lightning import RetrievalLitModule

log = logging.getLogger(__name__)


def _wandb_configured() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


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


def train(cfg: DictConfig) -> tuple[dict[str, Any], dict[str, Any]]:
    """Fit, export the best model, evaluate it; returns (test metrics per split, run metadata)."""
    out_dir = Path(hydra.core.hydra_config.HydraConfig.get().runtime.output_dir)
    if not _wandb_configured():
        os.environ.setdefault("WANDB_MODE", "offline")  # never block on a login prompt
    pl.seed_everything(cfg.seed, workers=True)

    datamodule = hydra.utils.instantiate(cfg.data)
    vocab = datamodule.vocab
    model_config = model_config_for(cfg, len(vocab))
    follow_data_regions(model_config, datamodule)
    validate_run_inputs(datamodule, model_config, test=cfg.eval.test)  # every split, before any training
    model = build_model(model_config)
    module = RetrievalLitModule(
        model=model,
        model_config=model_config,
        loss=hydra.utils.instantiate(cfg.loss),
        word2idx=vocab.word2idx,
        seed=cfg.seed,
        img_block=cfg.eval.img_block,
        txt_block=cfg.eval.txt_block,
        **cfg.optim,
    )
    callbacks = [hydra.utils.instantiate(c) for c in cfg.callbacks.values() if c is not None]
    loggers = [hydra.utils.instantiate(c) for c in cfg.logger] if cfg.logger else False
    if not loggers:  # nothing to monitor the learning rate into
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer: pl.Trainer = hydra.utils.instantiate(cfg.trainer, callbacks=callbacks, logger=loggers)
    for lg in trainer.loggers:
        lg.log_hyperparams(OmegaConf.to_container(cfg, resolve=True))

    started = time.time()
    if cfg.ckpt_path:
        read_resume_checkpoint(cfg.ckpt_path)  # allow-listed model + Lightning layout, read with weights_only
    trainer.fit(module, datamodule=datamodule, ckpt_path=cfg.ckpt_path, weights_only=True)
    train_seconds = time.time() - started

    checkpoint_cb = trainer.checkpoint_callback
    best_path = checkpoint_cb.best_model_path if checkpoint_cb else ""
    best_model, _ = load_model(best_path) if best_path else (model.eval(), None)
    meta = {"val_best": float(checkpoint_cb.best_model_score) if best_path else None,
            "model_selection": cfg.model_selection, "source": best_path}
    save_model(out_dir / "model_best.ckpt", best_model, model_config, vocab.word2idx, meta)

    results: dict[str, Any] = {}
    if cfg.eval.test:
        test_splits = OmegaConf.to_container(cfg.data.test_splits, resolve=True)
        results = evaluate_models([(best_model, vocab)], datamodule, test_splits, cfg.eval.img_block,
                                  cfg.eval.txt_block, cfg.eval.batch_size, resolve_device(cfg.eval.device))
        for lg in trainer.loggers:
            lg.log_metrics({f"test/{label}/{k}": v for label, m in results.items() for k, v in m.items()})
            if isinstance(lg, WandbLogger):  # the final Recall table, and the score sweeps optimise
                lg.log_table("test/metrics", columns=["split", *METRIC_KEYS],
                             data=[[label, *(m[k] for k in METRIC_KEYS)] for label, m in results.items()])
                lg.experiment.summary["val/best"] = meta["val_best"]
    if "wandb" in sys.modules and sys.modules["wandb"].run is not None:
        sys.modules["wandb"].finish()  # one wandb run per training run, also inside a Hydra multirun
    meta.update(train_seconds=round(train_seconds, 1),
                experiment=hydra.core.hydra_config.HydraConfig.get().runtime.choices.get("experiment"))
    write_metrics(results, out_dir, meta)
    log.info("run directory: %s", out_dir)
    return results, meta


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    try:
        _, meta = train(cfg)
    except InputError as err:
        exit_bad_input(err)
    # Returned for Hydra sweepers (Optuna): the best validation score, never a test number.
    return meta["val_best"]


if __name__ == "__main__":
    main()
