"""Vector normalizations and masked reductions shared by every model (one home for each).

``l2norm`` / ``l1norm`` use the official SGRAF/SCAN eps placement: eps is added *after* the root
(``x / (||x|| + eps)``), unlike ``F.normalize`` which clamps the norm. The difference is below 1e-8 for unit-scale
vectors but it is what makes all-zero (padded) rows stay exactly zero, which the masked, vectorized scoring relies
on. The norm is ``torch.linalg.vector_norm`` (same value as ``sqrt(sum(x**2))`` without the squared temporary, and
a zero rather than NaN gradient at zero rows). VSRN's official ``l2norm`` has no eps at all;
:func:`l2norm_clamped` keeps its value and only guards all-zero rows (``F.normalize`` semantics).
"""

from __future__ import annotations

import torch
from torch import Tensor

NORM_EPS = 1e-8  # official l2norm / l1norm default eps (SGRAF model.py helpers)
CLAMP_EPS = 1e-12  # l2norm_clamped: smallest norm divided by (guards all-zero rows only)


def l2norm(x: Tensor, dim: int = -1, eps: float = NORM_EPS) -> Tensor:
    """``x / (sqrt(sum(x**2, dim)) + eps)``: eps added after the square root (official placement)."""
    return x / (torch.linalg.vector_norm(x, 2, dim=dim, keepdim=True) + eps)


def l2norm_(x: Tensor, dim: int = -1, eps: float = NORM_EPS) -> Tensor:
    """In-place :func:`l2norm` (inference fast path: no extra full-size temporary)."""
    return x.div_(torch.linalg.vector_norm(x, 2, dim=dim, keepdim=True).add_(eps))


def l2norm_clamped(x: Tensor, dim: int = -1, eps: float = CLAMP_EPS) -> Tensor:
    """``x / max(||x||, eps)``: VSRN's eps-free l2norm, except that an all-zero row stays zero instead of NaN."""
    return x / x.norm(dim=dim, keepdim=True).clamp(min=eps)


def l1norm(x: Tensor, dim: int = -1, eps: float = NORM_EPS) -> Tensor:
    """``x / (sum(|x|, dim) + eps)`` (official placement)."""
    return x / (x.abs().sum(dim, keepdim=True) + eps)


def lengths_to_mask(lengths: Tensor, width: int) -> Tensor:
    """(B,) lengths -> (B, width) bool, True on the first ``lengths[b]`` positions."""
    return torch.arange(width, device=lengths.device)[None, :] < lengths[:, None]


def masked_mean(x: Tensor, mask: Tensor | None) -> Tensor:
    """Mean of (B, T, D) over the valid positions of ``mask`` (B, T) bool; ``None`` = all valid (plain mean).

    Padding never counts, even when it holds NaN/inf; an empty set gives 0.
    """
    if mask is None:
        return x.mean(dim=1)
    weights = mask.to(x.dtype)
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
    x = x.masked_fill(~mask[..., None], 0.0)
    return torch.bmm(weights.unsqueeze(1), x).squeeze(1)
