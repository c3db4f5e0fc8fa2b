"""SAF: similarity attention filtration, with the official BatchNorm statistics emulated in training.

For one (image, caption) pair with alignment nodes ``S`` (n, d)::

    a = sigmoid(BN1d(1)(W_f S))        # one scalar per node
    a = l1norm(a, over nodes)          # weights sum to 1 (eps 1e-8)
    sim_vec = l2norm(a^T S)

**BatchNorm semantics.** The official code scores one caption at a time against all images of the batch and
calls ``SAF_module.bn`` once per caption. In training each call therefore normalises with the statistics of
*that caption's* ``N_img x (L_i + 1)`` values and updates the running mean/var (unbiased var, momentum 0.1)
once per caption, in caption order: after a batch of B captions ``num_batches_tracked`` has grown by B.
``bn_stats="per_caption"`` (default) reproduces this exactly in one vectorized pass over an
``(N_img, N_cap, n, d)`` block: per-caption masked statistics for the normalisation, and the B sequential
running-stat updates folded into one closed-form geometric sum. ``bn_stats="batched"`` uses a single set of
statistics over every valid node of every pair in the call and one update (a conventional BN). Eval mode uses
the running statistics either way, so every score depends only on its own pair.
"""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor, nn

from temde.modules.init import xavier_linears_
from temde.modules.norms import l1norm, l2norm

BnStats = Literal["per_caption", "batched"]


class AttentionFiltration(nn.Module):
    """SAF on node features (..., n, d) -> (..., d). In training the layout must be (N_img, N_cap, n, d)."""

    def __init__(self, sim_dim: int, bn_stats: BnStats = "per_caption") -> None:
        super().__init__()
        if bn_stats not in ("per_caption", "batched"):
            raise ValueError(f"bn_stats must be 'per_caption' or 'batched', got {bn_stats!r}")
        self.bn_stats = bn_stats
        self.attn_sim_w = nn.Linear(sim_dim, 1)
        self.bn = nn.BatchNorm1d(1)  # official defaults: eps 1e-5, momentum 0.1
        self.sigmoid = nn.Sigmoid()
        xavier_linears_(self)

    def forward(self, nodes: Tensor, mask: Tensor | None = None) -> Tensor:
        logits = self.attn_sim_w(nodes).squeeze(-1)  # (..., n)
        if mask is None:
            mask = torch.ones_like(logits, dtype=torch.bool)
        mask = mask.expand_as(logits)
        if self.training and self.bn.track_running_stats:
            logits = self._normalize_train(logits, mask)
        else:
            bn = self.bn
            scale = bn.weight / torch.sqrt(bn.running_var + bn.eps)
            logits = (logits - bn.running_mean) * scale + bn.bias
        weights = self.sigmoid(logits) * mask.to(logits.dtype)  # padded nodes get no weight
        weights = l1norm(weights, dim=-1)
        return l2norm(torch.matmul(weights.unsqueeze(-2), nodes).squeeze(-2), dim=-1)

    def _normalize_train(self, logits: Tensor, mask: Tensor) -> Tensor:
        bn = self.bn
        m = mask.to(logits.dtype)
        if self.bn_stats == "per_caption":
            if logits.dim() != 3:
                raise ValueError(
                    "SAF per-caption BatchNorm needs an (N_img, N_cap, nodes) block in training, got logits of "
                    f"shape {tuple(logits.shape)}; use bn_stats='batched' for other layouts"
                )
            reduce_dims: tuple[int, ...] = (0, 2)  # statistics per caption, over images and its valid nodes
        else:
            reduce_dims = tuple(range(logits.dim()))
        count = m.sum(dim=reduce_dims, keepdim=True)
        mean = (logits * m).sum(dim=reduce_dims, keepdim=True) / count
        var = ((logits - mean).pow(2) * m).sum(dim=reduce_dims, keepdim=True) / count  # biased, as BN
        normed = (logits - mean) / torch.sqrt(var + bn.eps) * bn.weight + bn.bias
        with torch.no_grad():
            self._update_running_stats(mean.flatten(), (var * count / (count - 1).clamp(min=1)).flatten())
        return normed

    @torch.no_grad()
    def _update_running_stats(self, means: Tensor, unbiased_vars: Tensor) -> None:
        """Apply ``len(means)`` sequential BN momentum updates (in order) in closed form."""
        bn = self.bn
        k = means.numel()
        momentum = bn.momentum if bn.momentum is not None else 0.1
        keep = 1.0 - momentum
        # update j (0-based) ends up multiplied by keep^(k-1-j); the old value by keep^k
        powers = keep ** torch.arange(k - 1, -1, -1, dtype=means.dtype, device=means.device)
        bn.running_mean.mul_(keep**k).add_((momentum * powers * means).sum())
        bn.running_var.mul_(keep**k).add_((momentum * powers * unbiased_vars).sum())
        bn.num_batches_tracked.add_(k)
