"""VSRN region-relationship reasoning: stacked Rs_GCN blocks (Li et al., ICCV 2019, official ``GCN_lib/Rs_GCN.py``).

Each block builds a fully connected region graph with edge weights R_ij = theta(v_i) . phi(v_j) / N (no softmax,
no row normalisation, no non-linearity) and adds the propagated features back through a 1x1 projection and a
BatchNorm whose affine parameters start at zero, so every block is the identity at initialisation.

The official code works channel-first with ``Conv1d(k=1)``; here features stay region-first (B, N, D) and the
1x1 convolutions are ``nn.Linear`` (same maths; the converter squeezes the kernel dimension). Padded regions
(mask False) neither send messages nor enter BatchNorm statistics; N is the number of valid regions, which is
the official constant 36 when every region is valid.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn


class RsGCN(nn.Module):
    """One residual region-graph block: v + BN(W (R g(v))), R = theta(v) phi(v)^T / N."""

    def __init__(self, dim: int, inter_dim: int | None = None) -> None:
        super().__init__()
        inter_dim = dim if inter_dim is None else inter_dim  # official: inter_channels = in_channels = 2048
        self.g = nn.Linear(dim, inter_dim)
        self.theta = nn.Linear(dim, inter_dim)
        self.phi = nn.Linear(dim, inter_dim)
        self.proj = nn.Linear(inter_dim, dim)  # official W[0]
        self.bn = nn.BatchNorm1d(dim)  # official W[1]; eps 1e-5, momentum 0.1 (PyTorch defaults)
        # Official: W[1].weight and W[1].bias are zero-initialised, so the block starts as the identity.
        nn.init.zeros_(self.bn.weight)
        nn.init.zeros_(self.bn.bias)

    def forward(self, v: Tensor, mask: Tensor | None = None) -> Tensor:
        """v (B, N, D) region features, mask (B, N) bool or None -> (B, N, D); padded rows come out as zeros."""
        g, theta, phi = self.g(v), self.theta(v), self.phi(v)
        relation = theta @ phi.transpose(1, 2)  # (B, N, N), R_ij = theta(v_i) . phi(v_j)
        if mask is None:
            relation = relation / v.shape[1]
        else:
            counts = mask.sum(dim=1).clamp(min=1).to(v.dtype)
            relation = relation * mask[:, None, :].to(v.dtype) / counts[:, None, None]
        update = self.proj(relation @ g)  # (B, N, D)
        if mask is None:
            update = self.bn(update.reshape(-1, update.shape[-1])).view_as(update)
            return v + update
        # BatchNorm statistics over valid regions only (equal to the official (B, D, N) BN when all are valid).
        normed = torch.zeros_like(update)
        normed[mask] = self.bn(update[mask])
        return (v + normed) * mask[..., None].to(v.dtype)


class RegionGCN(nn.Module):
    """``num_blocks`` stacked :class:`RsGCN` blocks (official: 4, ``Rs_GCN_1..4``)."""

    def __init__(self, dim: int, num_blocks: int = 4, inter_dim: int | None = None) -> None:
        super().__init__()
        self.blocks = nn.ModuleList(RsGCN(dim, inter_dim) for _ in range(num_blocks))

    def forward(self, v: Tensor, mask: Tensor | None = None) -> Tensor:
        for block in self.blocks:
            v = block(v, mask)
        return v
