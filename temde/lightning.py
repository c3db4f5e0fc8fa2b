"""LightningModule that trains and validates any :class:`~temde.models.base.RetrievalModel`.

It knows nothing of a particular backbone: it calls ``encode_images`` / ``encode_texts`` / ``similarity`` and the
optional hooks ``auxiliary_losses`` and ``optimizer_parameters`` (docs/CONVENTIONS.md). Validation encodes the
dev images and captions once (two loaders), scores them in blocks and logs Recall@K / rsum, which drives
checkpoint selection (``val/rsum`` or ``val/r1r5``).
"""

from __future__ import annotations

import random
from typing import Any

import numpy as np
import pytorch_lightning as pl
import torch
from torch import Tensor, nn

from temde.distributed import gather_eval_parts, sharded_blocked_similarity
from temde.evaluation import retrieval_metrics
from temde.models.base import concat_reprs, index_repr, to_device


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
        img_block: int = 128,
        txt_block: int = 128,
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
    def on_train_epoch_start(self) -> None:
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
        if hasattr(self.loss, "forward_reprs"):  # GatheredContrastiveLoss: negatives from every DDP rank
            loss = self.loss.forward_reprs(self.model.similarity, img, txt)
        else:
            loss = self.loss(self.model.similarity(img, txt))
        batch_size = batch["tokens"].shape[0]
        self.log("train/contrastive", loss, on_step=True, on_epoch=True, batch_size=batch_size)
        if hasattr(self.model, "auxiliary_losses"):
            for name, value in self.model.auxiliary_losses(batch, img, txt).items():
                self.log(f"train/{name}", value, on_step=True, on_epoch=True, batch_size=batch_size)
                loss = loss + value
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=batch_size)
        return loss

    def _optimized_parameters(self) -> list[Tensor]:
        if hasattr(self.model, "optimizer_parameters"):
            return list(self.model.optimizer_parameters())
        return [p for p in self.model.parameters() if p.requires_grad]

    def configure_optimizers(self) -> dict[str, Any]:
        # A parameter listed twice (VSRN's official quirk) is updated twice per step only by the per-tensor loop.
        duplicated = getattr(self.model, "duplicate_caption_parameters", False)
        optimizer = torch.optim.Adam(with_group_lrs(self._optimized_parameters(), self.hparams.lr), lr=self.hparams.lr,
                                     foreach=False if duplicated else None)
        # Official step decay, set per epoch: lr = lr0 * decay ** (epoch // lr_update).
        lr_update, decay = self.hparams.lr_update, self.hparams.lr_decay
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda epoch: decay ** (epoch // lr_update))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "epoch"}}

    def configure_gradient_clipping(self, optimizer: torch.optim.Optimizer, gradient_clip_val=None,
                                    gradient_clip_algorithm=None) -> None:
        # Total L2 norm over every optimized parameter, every step (official clip_grad_norm_(params, 2.0)).
        if self.hparams.grad_clip and self.hparams.grad_clip > 0:
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
        img = _ordered(gather_eval_parts(self._val_parts[0]))
        txt = _ordered(gather_eval_parts(self._val_parts[1]))
        sims = sharded_blocked_similarity(self.model, img, txt, self.hparams.img_block, self.hparams.txt_block,
                                          device=self.device)
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


def _ordered(parts: list[tuple[Tensor, dict[str, Tensor]]]) -> dict[str, Tensor]:
    """Concatenate encoded batches and put them back in dataset order."""
    index = torch.cat([p[0] for p in parts])
    rep = concat_reprs([p[1] for p in parts])
    order = torch.argsort(index)
    return index_repr(rep, order)
