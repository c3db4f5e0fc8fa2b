"""LightningModule that trains and validates any :class:`~temde.models.base.RetrievalModel`.

It knows nothing of a particular backbone: it calls ``encode_images`` / ``encode_texts`` / ``similarity`` and the
optional hooks ``auxiliary_losses`` and ``optimizer_parameters`` (docs/CONVENTIONS.md). Validation encodes the
dev images and captions once (two loaders), scores them in blocks and logs Recall@K / rsum, which drives
checkpoint selection (``val/rsum`` or ``val/r1r5``).
"""

from __future__ import annotations

import math
import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from temde.distributed import gather_eval_parts
from temde.errors import InputError
from temde.evaluation import retrieval_metrics
from temde.optim import clip_grad_norm_per_entry, has_duplicates, listed_tensors, make_adam
from temde.repr import to_device
from temde.retrieval import blocked_similarity


class RetrievalLitModule(pl.LightningModule):
    def __init__(
        self,
        model: nn.Module,
        model_config: dict[str, Any],
        loss: nn.Module,
        word2idx: dict[str, int] | None = None,
        lr: float = 2e-4,
        lr_update: int = 15,
        lr_decay: float = 0.1,
        grad_clip: float = 2.0,
        seed: int = 0,
        img_block: int | None = None,
        txt_block: int | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.loss = loss
        self.word2idx = word2idx
        # model_config lets temde.checkpoint rebuild the model from a Lightning .ckpt; the vocabulary is stored
        # in the checkpoint itself (on_save_checkpoint), not in hparams.yaml (COCO's has 11k words).
        self.save_hyperparameters(ignore=["model", "loss", "word2idx"])
        self._val_parts: dict[int, list[tuple[Tensor, dict[str, Tensor]]]] = {}

    # ---- training -------------------------------------------------------------------------------------------
    def on_fit_start(self) -> None:
        # float16 loss scaling unscales every list entry: a repeated tensor's gradient would be divided twice.
        if str(self.trainer.precision) == "16-mixed" and has_duplicates(self._optimized_parameters()):
            raise InputError("trainer.precision", "32-true or bf16-mixed for a model whose optimizer list names a "
                                                  "tensor twice (16-mixed would unscale its gradient twice)")

    def on_train_epoch_start(self) -> None:
        # Train mode every epoch, whatever mode the model came in (loaders return eval mode and Lightning >= 2.6
        # only warns): BatchNorm must use batch statistics and dropout must be on, as in the official loops.
        self.train()
        # Reseed every epoch (dropout, shuffling): a run resumed from an epoch-end checkpoint then continues
        # exactly as the uninterrupted run would (Lightning checkpoints do not store RNG states).
        seed = self.hparams.seed + self.current_epoch
        random.seed(seed)
        np.random.seed(seed % 2**32)  # noqa: NPY002 - libraries still draw from the legacy global RNG
        torch.manual_seed(seed)
        if hasattr(self.loss, "set_epoch"):
            self.loss.set_epoch(self.current_epoch)

    def training_step(self, batch: dict[str, Tensor], batch_idx: int) -> Tensor:
        img = self.model.encode_images(batch["images"], batch["regions_mask"])
        txt = self.model.encode_texts(batch["tokens"], batch["lengths"])
        # The loss scores the batch itself: GatheredContrastiveLoss widens it to every DDP rank's items.
        loss = self.loss.forward_reprs(self.model.similarity, img, txt)
        batch_size = batch["tokens"].shape[0]
        self.log("train/contrastive", loss, on_step=True, on_epoch=True, batch_size=batch_size)
        if hasattr(self.model, "auxiliary_losses"):
            for name, value in self.model.auxiliary_losses(batch, img, txt).items():
                self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=batch_size)
                loss = loss + value
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)
        return loss

    def _optimized_parameters(self) -> list[Tensor]:
        """The model's optimizer list (hook ``optimizer_parameters``; it may name a tensor twice), else all."""
        if hasattr(self.model, "optimizer_parameters"):
            return list(self.model.optimizer_parameters())
        return [p for p in self.model.parameters() if p.requires_grad]

    def configure_optimizers(self) -> dict[str, Any]:
        # A tensor listed twice gets two updates per step (temde.optim): per-tensor Adam for such lists. Groups
        # with an lr_scale (pretrained text weights) get their own learning rate.
        optimizer = make_adam(with_group_lrs(self._optimized_parameters(), self.hparams.lr), lr=self.hparams.lr)
        # Official step decay, set per epoch: lr = lr0 * decay ** (epoch // lr_update).
        lr_update, decay = self.hparams.lr_update, self.hparams.lr_decay
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: decay ** (epoch // lr_update))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        # Total L2 norm over every optimized parameter, every step (official clip_grad_norm_(params, 2.0)).
        if not self.hparams.grad_clip or self.hparams.grad_clip <= 0:
            return
        params = listed_tensors(optimizer.param_groups)
        if has_duplicates(params):  # count and scale each list entry, on every device (temde.optim)
            clip_grad_norm_per_entry(params, self.hparams.grad_clip)
        else:
            self.clip_gradients(optimizer, gradient_clip_val=self.hparams.grad_clip, gradient_clip_algorithm="norm")

    # ---- validation -----------------------------------------------------------------------------------------
    def on_validation_epoch_start(self) -> None:
        self._val_parts = {0: [], 1: []}

    def validation_step(self, batch: dict[str, Tensor], batch_idx: int, dataloader_idx: int = 0) -> None:
        if dataloader_idx == 0:
            rep = self.model.encode_images(batch["images"], batch["regions_mask"])
        else:
            rep = self.model.encode_texts(batch["tokens"], batch["lengths"])
        self._val_parts[dataloader_idx].append((batch["index"].cpu(), to_device(rep, "cpu", torch.float32)))

    def on_validation_epoch_end(self) -> None:
        if not self._val_parts.get(0) or not self._val_parts.get(1):
            return
        # Under DDP each rank encoded a shard of the dev set: gather all parts, then score blocks split by rank.
        # gather_eval_parts returns one part, de-duplicated and already in dataset order.
        [(_, img)] = gather_eval_parts(self._val_parts[0])
        [(_, txt)] = gather_eval_parts(self._val_parts[1])
        sims = blocked_similarity(self.model, img, txt, self.hparams.img_block, self.hparams.txt_block,
                                  device=self.device, progress=False)
        metrics = retrieval_metrics(sims)
        metrics["r1r5"] = metrics["i2t_r1"] + metrics["i2t_r5"] + metrics["t2i_r1"] + metrics["t2i_r5"]
        for key, value in metrics.items():
            self.log(f"val/{key}", float(value), prog_bar=key == "rsum", sync_dist=False)
        self._val_parts = {}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["word2idx"] = self.word2idx


def with_group_lrs(params: list[Any], lr: float) -> list[Any]:
    """Parameter groups from ``optimizer_parameters`` carry an ``lr_scale`` (e.g. 0.1 for pretrained weights):
    turn it into the group's ``lr``; the step decay then scales every group alike. Plain tensors pass as is."""
    return [{**{k: v for k, v in g.items() if k != "lr_scale"}, "lr": lr * g.get("lr_scale", 1.0)}
            if isinstance(g, dict) else g for g in params]


class ValidationSchedule(pl.Callback):
    """Validate every ``every_n_steps`` training iterations of the whole run *and* at the end of every epoch.

    This is the official VSRN cadence (``val_step=500``: validate when the global iteration count is a multiple
    of 500, and again after each epoch), which Lightning's ``val_check_interval`` cannot express (it offers one
    or the other), so the training loop's per-batch decision is extended when fitting starts. ``None`` keeps
    Lightning's once-per-epoch validation (official SGRAF). Checkpoint selection then sees every validation.
    """

    def __init__(self, every_n_steps: int | None = None) -> None:
        if every_n_steps is not None and (not isinstance(every_n_steps, int) or every_n_steps < 1):
            raise InputError("callbacks.validation_schedule.every_n_steps", "a positive integer or null")
        self.every_n_steps = every_n_steps

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if self.every_n_steps is None or stage != "fit":
            return
        loop, every = trainer.fit_loop.epoch_loop, self.every_n_steps

        def should_check_val(data_fetcher: Any) -> bool:
            if not loop._should_check_val_epoch():
                return False
            # total_batch_idx counts every training batch of the run (restored on resume), like official Eiters.
            return loop.batch_progress.is_last_batch or (loop.total_batch_idx + 1) % every == 0

        loop._should_check_val_fx = should_check_val


def count_validations(iterations_per_epoch: int, epochs: int, every_n_steps: int | None) -> int:
    """How many validations :class:`ValidationSchedule` runs in a whole run (for time estimates).

    One per epoch end, plus one per run-wide multiple of ``every_n_steps`` that is not also an epoch end (a batch
    that is both validates once).
    """
    if every_n_steps is None:
        return epochs
    total = iterations_per_epoch * epochs
    both = math.lcm(every_n_steps, iterations_per_epoch)
    return epochs + total // every_n_steps - total // both
