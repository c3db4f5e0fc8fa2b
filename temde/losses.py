"""Training objectives shared by every backbone."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ContrastiveLoss(nn.Module):
    """VSE++ hinge loss over a (B, B) image x caption score matrix with positives on the diagonal.

    Official SGRAF/VSRN defaults: margin 0.2, only the hardest negative per query (``max_violation``), summed
    (not averaged) over the batch and over both directions.

    ``warmup_epochs`` (ours, default 0 = official): sum over all negatives for the first epochs, then the hardest
    negative. Hardest-negative training from scratch sits on a plateau for many epochs (SGRAF issue #13); the
    warm-up lets short CPU runs on the synthetic data leave it quickly. The training loop calls ``set_epoch``.
    """

    def __init__(self, margin: float = 0.2, max_violation: bool = True, warmup_epochs: int = 0) -> None:
        super().__init__()
        self.margin = margin
        self.max_violation = max_violation
        self.warmup_epochs = warmup_epochs
        self.epoch = warmup_epochs  # outside a training loop: behave as configured

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def forward(self, scores: Tensor) -> Tensor:
        if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
            raise ValueError(f"ContrastiveLoss expects a square (B, B) score matrix, got {tuple(scores.shape)}")
        diagonal = scores.diag().view(-1, 1)
        cost_caption = (self.margin + scores - diagonal).clamp(min=0)  # image i vs wrong caption j
        cost_image = (self.margin + scores - diagonal.t()).clamp(min=0)  # caption j vs wrong image i
        positives = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
        cost_caption = cost_caption.masked_fill(positives, 0)
        cost_image = cost_image.masked_fill(positives, 0)
        if self.max_violation and self.epoch >= self.warmup_epochs:
            return cost_caption.max(dim=1).values.sum() + cost_image.max(dim=0).values.sum()
        return cost_caption.sum() + cost_image.sum()
