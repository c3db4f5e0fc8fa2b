"""Training objectives shared by every backbone: the VSE++ hinge loss in all its forms (one (B, B) matrix, over
(rows, columns) blocks of a global batch, and with negatives gathered from every DDP rank)."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from temde.distributed import all_gather_repr, world
from temde.repr import Repr


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

    @property
    def hardest(self) -> bool:
        """Hardest negative only (after the warm-up) or the sum over all negatives."""
        return self.max_violation and self.epoch >= self.warmup_epochs

    def forward_reprs(self, similarity: Callable[[Repr, Repr], Tensor], img: Repr, txt: Repr) -> Tensor:
        """The loss of one encoded batch: ``self(similarity(img, txt))``; gathered variants widen the batch."""
        return self(similarity(img, txt))

    def forward(self, scores: Tensor) -> Tensor:
        if scores.dim() != 2 or scores.shape[0] != scores.shape[1]:
            raise ValueError(f"ContrastiveLoss expects a square (B, B) score matrix, got {tuple(scores.shape)}")
        diagonal = scores.diag().view(-1, 1)
        cost_caption = (self.margin + scores - diagonal).clamp(min=0)  # image i vs wrong caption j
        cost_image = (self.margin + scores - diagonal.t()).clamp(min=0)  # caption j vs wrong image i
        positives = torch.eye(scores.shape[0], dtype=torch.bool, device=scores.device)
        cost_caption = cost_caption.masked_fill(positives, 0)
        cost_image = cost_image.masked_fill(positives, 0)
        if self.hardest:
            return cost_caption.max(dim=1).values.sum() + cost_image.max(dim=0).values.sum()
        return cost_caption.sum() + cost_image.sum()


def contrastive_over_blocks(
    i2t: Tensor, t2i: Tensor, offset: int, margin: float = 0.2, hardest: bool = True
) -> Tensor:
    """VSE++ hinge for this rank's b queries against the global batch of B items.

    ``i2t``: (b, B) scores of the local images vs all captions; ``t2i``: (B, b) scores of all images vs the
    local captions; the positives are at global position ``offset + i``. Summed over ranks this equals
    :class:`ContrastiveLoss` on the full (B, B) matrix.
    """
    b = i2t.shape[0]
    rows = torch.arange(b, device=i2t.device)
    cols = rows + offset
    pos_img = i2t[rows, cols].view(-1, 1)  # score of local image i with its caption
    pos_txt = t2i[cols, rows].view(1, -1)  # score of local caption j with its image
    cost_caption = (margin + i2t - pos_img).clamp(min=0)
    cost_image = (margin + t2i - pos_txt).clamp(min=0)
    mask_c = torch.zeros_like(cost_caption, dtype=torch.bool)
    mask_c[rows, cols] = True
    mask_i = torch.zeros_like(cost_image, dtype=torch.bool)
    mask_i[cols, rows] = True
    cost_caption = cost_caption.masked_fill(mask_c, 0)
    cost_image = cost_image.masked_fill(mask_i, 0)
    if hardest:
        return cost_caption.max(dim=1).values.sum() + cost_image.max(dim=0).values.sum()
    return cost_caption.sum() + cost_image.sum()


class GatheredContrastiveLoss(ContrastiveLoss):
    """:class:`ContrastiveLoss` whose negatives come from every device under DDP.

    VSE++/SGRAF/VSRN train with the *hardest* negative in the batch; under plain DDP each device only sees its
    own batch, so the hardest negative is per device. Here :meth:`forward_reprs` gathers the encoded batch from
    all ranks and scores local images vs all captions and all images vs local captions ((b x B) + (B x b) pairs
    instead of b x b: for cross-attention models 2 x world_size times the similarity work of a step); gradients
    flow back to the device that produced each feature. With one process it equals :class:`ContrastiveLoss`.
    """

    def forward_reprs(self, similarity: Callable[[Repr, Repr], Tensor], img: Repr, txt: Repr) -> Tensor:
        _, size = world()
        if size == 1:
            return super().forward_reprs(similarity, img, txt)
        all_img, offset = all_gather_repr(img)
        all_txt, _ = all_gather_repr(txt)
        return contrastive_over_blocks(similarity(img, all_txt), similarity(all_img, txt), offset,
                                       self.margin, self.hardest)
