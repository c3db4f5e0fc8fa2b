"""Plain log lines about training progress, for runs outside a terminal (batch jobs, redirected output).

Progress bars redraw one terminal line; redirected to a file or a scheduler's log they show nothing useful for
hours. This callback logs the epoch, step and loss (at most every ``every_seconds``), each validation and where
the checkpoints go, through :mod:`logging` (so Hydra's ``train.log`` holds them too). With a progress bar on
screen only the epoch and validation lines are logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger("temde.progress")


class LogProgress(pl.Callback):
    def __init__(self, every_seconds: float = 30.0) -> None:
        self.every_seconds = every_seconds
        self._last = 0.0
        self._steps = True

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._steps = trainer.progress_bar_callback is None
        ckpt = trainer.checkpoint_callback
        if trainer.is_global_zero and ckpt is not None:
            log.info("checkpoints: %s", getattr(ckpt, "dirpath", None))

    def on_train_epoch_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.is_global_zero:
            log.info("epoch %d/%d: %d steps", trainer.current_epoch + 1, trainer.max_epochs,
                     trainer.num_training_batches)
        self._last = time.monotonic()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        now = time.monotonic()
        if not self._steps or not trainer.is_global_zero or now - self._last < self.every_seconds:
            return
        self._last = now
        loss = trainer.callback_metrics.get("train/loss_step")
        log.info("epoch %d step %d/%d (global %d): loss %s", trainer.current_epoch + 1, batch_idx + 1,
                 trainer.num_training_batches, trainer.global_step,
                 "n/a" if loss is None else f"{float(loss):.4f}")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if trainer.sanity_checking or not trainer.is_global_zero:
            return
        metrics = {k[4:]: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
        if not metrics:
            return
        shown = ", ".join(f"{k} {metrics[k]:.2f}" for k in ("rsum", "r1r5", "i2t_r1", "t2i_r1") if k in metrics)
        ckpt = trainer.checkpoint_callback  # runs after this callback: fold in the current score ourselves
        best, current = getattr(ckpt, "best_model_score", None), trainer.callback_metrics.get(
            getattr(ckpt, "monitor", None) or "")
        if current is not None:
            best = current if best is None else max(float(best), float(current))
        log.info("epoch %d validation: %s%s", trainer.current_epoch + 1, shown,
                 "" if best is None else f" (best so far {float(best):.2f})")
