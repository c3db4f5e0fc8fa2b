"""Optimizer and gradient clipping over a parameter *list* that may name a tensor more than once.

The official VSRN builds Adam and ``clip_grad_norm`` over a list that holds its caption branch twice
(docs/fidelity.md). Its torch 0.4.1 loops visit the list one entry at a time, so a listed-twice tensor counts
twice in the total norm, is scaled by the clip coefficient twice and gets two Adam updates per step. torch 2.x
only guarantees that with the single-tensor code paths (its foreach/fused kernels may see a duplicate once or
race on it, and on CUDA foreach is the default), so for such lists we use Adam's per-tensor path and our own
per-entry clipping loop.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor


def listed_tensors(params: Iterable[Tensor | dict[str, Any]]) -> list[Tensor]:
    """Every list entry in order; parameter groups (``{"params": [...], ...}``) contribute their tensors."""
    return [t for entry in params for t in (entry["params"] if isinstance(entry, dict) else [entry])]


def has_duplicates(params: Sequence[Tensor | dict[str, Any]]) -> bool:
    """True when a tensor appears more than once in ``params`` (by identity, not by value; groups flattened)."""
    tensors = listed_tensors(params)
    return len({id(p) for p in tensors}) < len(tensors)


def make_adam(params: Sequence[Tensor | dict[str, Any]], lr: float) -> torch.optim.Adam:
    """Adam with the official defaults; per-tensor (one update per list entry) when the list has duplicates."""
    return torch.optim.Adam(list(params), lr=lr, foreach=False if has_duplicates(params) else None)


@torch.no_grad()
def clip_grad_norm_per_entry(params: Iterable[Tensor], max_norm: float) -> Tensor:
    """torch 0.4.1 ``clip_grad_norm(params, max_norm)``, one list entry at a time; returns the total norm.

    The total L2 norm sums every entry's squared gradient norm (a listed-twice tensor counts twice); when
    ``max_norm / (norm + 1e-6) < 1`` every entry's gradient is multiplied by that coefficient in turn, so a
    listed-twice gradient ends up multiplied by its square.
    """
    entries = [p for p in params if p.grad is not None]
    if not entries:
        return torch.zeros(())
    total = torch.zeros((), dtype=entries[0].grad.dtype, device=entries[0].grad.device)
    for p in entries:
        total = total + p.grad.norm(2).to(total.device) ** 2
    total = total.sqrt()
    coef = max_norm / (total.item() + 1e-6)
    if coef < 1:
        for p in entries:
            p.grad.mul_(coef)
    return total
