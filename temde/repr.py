"""Encoded representations: ``Repr = dict[str, Tensor]`` and the few operations every caller needs.

Every value is batch-first (dim 0 indexes images or captions). That makes a representation sliceable
(:func:`slice_repr`), concatenable across batches (:func:`concat_reprs`, which zero-pads ragged dim 1, e.g. word
features of captions batched with different max lengths) and cacheable without each model inventing its own
container. Masks are bool tensors, ``True`` = valid. Torch only: no project imports, so any layer may use it.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

Repr = dict[str, Tensor]


def repr_len(r: Repr) -> int:
    """Number of items (images or captions) in a representation."""
    return next(iter(r.values())).shape[0]


def slice_repr(r: Repr, start: int, stop: int) -> Repr:
    """Items ``start:stop`` of every tensor (a view, no copy)."""
    return {k: v[start:stop] for k, v in r.items()}


def index_repr(r: Repr, index: Tensor) -> Repr:
    """Gather items by an index tensor (e.g. the deduplicated image rows)."""
    return {k: v[index] for k, v in r.items()}


def to_device(r: Repr, device: torch.device | str, dtype: torch.dtype | None = None) -> Repr:
    """Move a representation; ``dtype`` casts floating tensors only (masks and ids stay as they are)."""
    out = {}
    for k, v in r.items():
        v = v.to(device)
        if dtype is not None and v.is_floating_point():
            v = v.to(dtype)
        out[k] = v
    return out


def concat_reprs(parts: Sequence[Repr]) -> Repr:
    """Concatenate along dim 0, zero-padding any ragged dim 1 (zeros are also ``False`` for bool masks)."""
    if not parts:
        raise ValueError("concat_reprs needs at least one representation")
    out: Repr = {}
    for key in parts[0]:
        tensors = [p[key] for p in parts]
        if tensors[0].dim() >= 2:
            width = max(t.shape[1] for t in tensors)
            tensors = [_pad_dim1(t, width) for t in tensors]
        out[key] = torch.cat(tensors, dim=0)
    return out


def _pad_dim1(t: Tensor, width: int) -> Tensor:
    if t.shape[1] == width:
        return t
    pad = t.new_zeros((t.shape[0], width - t.shape[1], *t.shape[2:]))
    return torch.cat([t, pad], dim=1)
