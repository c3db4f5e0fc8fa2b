"""Vector normalizations with the official SGRAF/SCAN eps placement.

The official helpers add eps *after* the root (``x / (||x|| + eps)``), unlike ``F.normalize`` which clamps the
norm. The difference is below 1e-8 for unit-scale vectors but it is what makes all-zero (padded) rows stay
exactly zero, which the masked, vectorized scoring relies on. The norm is ``torch.linalg.vector_norm`` (same
value as ``sqrt(sum(x**2))`` without the squared temporary, and a zero rather than NaN gradient at zero rows).
"""

from __future__ import annotations

import torch
from torch import Tensor

NORM_EPS = 1e-8  # official l2norm / l1norm default eps (SGRAF model.py helpers)


def l2norm(x: Tensor, dim: int = -1, eps: float = NORM_EPS) -> Tensor:
    """``x / (sqrt(sum(x**2, dim)) + eps)``: eps added after the square root (official placement)."""
    return x / (torch.linalg.vector_norm(x, 2, dim=dim, keepdim=True) + eps)


def l2norm_(x: Tensor, dim: int = -1, eps: float = NORM_EPS) -> Tensor:
    """In-place :func:`l2norm` (inference fast path: no extra full-size temporary)."""
    return x.div_(torch.linalg.vector_norm(x, 2, dim=dim, keepdim=True).add_(eps))


def l1norm(x: Tensor, dim: int = -1, eps: float = NORM_EPS) -> Tensor:
    """``x / (sum(|x|, dim) + eps)`` (official placement)."""
    return x / (x.abs().sum(dim, keepdim=True) + eps)
