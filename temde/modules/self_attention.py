"""SGRAF's self-attention global pooling (``VisualSA`` / ``TextSA``), masked and batched.

A global vector is a softmax-weighted sum of the *original* local features, where the weights come from a
gate ``Linear(dim -> 1)`` applied to ``local_embedding * global_embedding`` (the global embedding is computed
from the mean of the locals). Submodule names (``embedding_local``, ``embedding_global``, ``embedding_common``
Sequentials) match the official checkpoint keys (docs/sgraf.md, "Official checkpoint format").

The official ``TextSA`` runs per caption on its ``L_i`` valid words; here padding is handled with a masked mean
and a masked softmax, which gives the same vector for every caption of a padded batch.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from temde.modules.init import xavier_linears_
from temde.modules.norms import l2norm, masked_mean

SA_DROPOUT = 0.4  # official: dropout 0.4 in the local and global branches of VisualSA / TextSA
NUM_REGIONS = 36  # official: 36 bottom-up-attention regions; VisualSA's BN treats the slots as channels


def _attend(x: Tensor, local_emb: Tensor, global_emb: Tensor, gate: nn.Module, mask: Tensor | None) -> Tensor:
    """Softmax over positions of ``gate(local * global)``, weighted sum of ``x``, then l2norm."""
    logits = gate(local_emb * global_emb.unsqueeze(1)).squeeze(-1)  # (B, T)
    if mask is not None:
        logits = logits.masked_fill(~mask, float("-inf"))
    weights = torch.softmax(logits, dim=1)
    return l2norm(torch.bmm(weights.unsqueeze(1), x).squeeze(1), dim=-1)


class VisualSA(nn.Module):
    """Self-attention pooling of region features: (B, R, D) -> (B, D), l2-normalised.

    ``BatchNorm1d(num_region)`` is applied to the (B, R, D) local embeddings, i.e. one channel per region
    slot with statistics over batch and feature dims (official behaviour), so ``R`` must equal
    ``num_region``. With a region mask, masked regions are excluded from the mean and from the softmax (the
    BN still sees every slot, as in the official model, which never masks regions).
    """

    def __init__(self, dim: int, num_region: int = NUM_REGIONS, dropout: float = SA_DROPOUT) -> None:
        super().__init__()
        self.num_region = num_region
        self.embedding_local = nn.Sequential(
            nn.Linear(dim, dim), nn.BatchNorm1d(num_region), nn.Tanh(), nn.Dropout(dropout)
        )
        self.embedding_global = nn.Sequential(
            nn.Linear(dim, dim), nn.BatchNorm1d(dim), nn.Tanh(), nn.Dropout(dropout)
        )
        self.embedding_common = nn.Sequential(nn.Linear(dim, 1))
        xavier_linears_(self)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if x.shape[1] != self.num_region:
            raise ValueError(
                f"VisualSA expects {self.num_region} regions (its BatchNorm has one channel per region slot), "
                f"got input of shape {tuple(x.shape)}"
            )
        local_emb = self.embedding_local(x)
        global_emb = self.embedding_global(masked_mean(x, mask))
        return _attend(x, local_emb, global_emb, self.embedding_common[0], mask)


class TextSA(nn.Module):
    """Self-attention pooling of word features: (B, L, D) -> (B, D), l2-normalised, no BatchNorm.

    Equal to the official per-caption computation on the valid words (mean and softmax over ``mask``)."""

    def __init__(self, dim: int, dropout: float = SA_DROPOUT) -> None:
        super().__init__()
        self.embedding_local = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Dropout(dropout))
        self.embedding_global = nn.Sequential(nn.Linear(dim, dim), nn.Tanh(), nn.Dropout(dropout))
        self.embedding_common = nn.Sequential(nn.Linear(dim, 1))
        xavier_linears_(self)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        if mask is not None:
            x = x * mask.unsqueeze(-1).to(x.dtype)  # padded words never leak into the weighted sum
        local_emb = self.embedding_local(x)
        global_emb = self.embedding_global(masked_mean(x, mask))
        return _attend(x, local_emb, global_emb, self.embedding_common[0], mask)
