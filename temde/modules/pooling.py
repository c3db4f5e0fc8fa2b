"""Global encoders that T-EMDE can be swapped with: ``(x (B, T, D), mask (B, T) bool) -> (B, D)``.

* ``sa_visual`` / ``sa_text``: SGRAF's self-attention pooling (``temde.modules.self_attention``), the module
  T-EMDE replaces in SGRAF. Cost ~``T * D^2`` (a D x D Linear on every token; the attention is against one
  global query, so it is *linear* in T).
* ``mhsa``: a standard multi-head self-attention encoder layer (token-token attention, quadratic in T:
  ``~T^2 * D`` on top of ``~T * D^2`` projections), then masked mean pooling. Not in SGRAF or T-EMDE: this
  project's "vanilla self-attention" reference for the latency comparison.
* ``mean``: masked mean pooling, the parameter-free floor.

Every encoder returns l2-normalized vectors, like SGRAF's global vectors. T-EMDE itself returns a sketch
(B, depth, W), not a D-vector, so models build it with :func:`temde.modules.temde.build_sketchers`.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

__all__ = ["MeanPool", "MultiHeadSelfAttentionPool", "build_global_encoder", "masked_mean", "GLOBAL_ENCODERS"]

GLOBAL_ENCODERS = ("sa_visual", "sa_text", "mhsa", "mean")


def _check(x: Tensor, mask: Tensor | None, where: str) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() != 3 or not x.is_floating_point():
        raise ValueError(f"{where} (temde/modules/pooling.py): x must be a float tensor (B, T, D), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    if mask is None:
        return torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)
    if mask.dtype != torch.bool or mask.shape != x.shape[:2]:
        raise ValueError(f"{where} (temde/modules/pooling.py): mask must be bool of shape {tuple(x.shape[:2])}, "
                         f"got {mask.dtype} {tuple(mask.shape)}")
    return mask


def masked_mean(x: Tensor, mask: Tensor) -> Tensor:
    """Mean of (B, T, D) over valid positions; padding (even NaN/inf) never counts; empty sets give 0."""
    weights = mask.to(x.dtype)
    weights = weights / weights.sum(1, keepdim=True).clamp_min(1.0)
    x = x.masked_fill(~mask[..., None], 0.0)
    return torch.bmm(weights.unsqueeze(1), x).squeeze(1)


class MeanPool(nn.Module):
    """Masked mean of the tokens, then l2norm (``normalize=True``): the parameter-free baseline."""

    def __init__(self, normalize: bool = True) -> None:
        super().__init__()
        self.normalize = normalize

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = _check(x, mask, "MeanPool")
        out = masked_mean(x, mask)
        return F.normalize(out, dim=-1, eps=1e-8) if self.normalize else out


class MultiHeadSelfAttentionPool(nn.Module):
    """One standard Transformer encoder layer (post-LN: MHSA + residual + LayerNorm, then a GELU feed-forward
    + residual + LayerNorm) over the valid tokens, then masked mean pooling and l2norm.

    Padded tokens are masked out as keys; their (meaningless) outputs are excluded from the mean, so results
    do not depend on padding. ``ffn_mult=0`` drops the feed-forward block (attention only).
    """

    def __init__(self, dim: int, heads: int = 8, ffn_mult: int = 4, dropout: float = 0.1,
                 normalize: bool = True) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"MultiHeadSelfAttentionPool: dim={dim} must be divisible by heads={heads}")
        self.heads, self.normalize, self.dropout = heads, normalize, dropout
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.norm1 = nn.LayerNorm(dim)
        self.ffn = (nn.Sequential(nn.Linear(dim, ffn_mult * dim), nn.GELU(), nn.Dropout(dropout),
                                  nn.Linear(ffn_mult * dim, dim)) if ffn_mult > 0 else None)
        self.norm2 = nn.LayerNorm(dim) if ffn_mult > 0 else None
        self.drop = nn.Dropout(dropout)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        mask = _check(x, mask, "MultiHeadSelfAttentionPool")
        b, t, d = x.shape
        x = x.masked_fill(~mask[..., None], 0.0)
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        # Keys of padded tokens are masked; an empty set attends to everything (finite) and pools to 0 below.
        key_mask = (mask | ~mask.any(1, keepdim=True))[:, None, None, :]
        att = F.scaled_dot_product_attention(q, k, v, attn_mask=key_mask,
                                             dropout_p=self.dropout if self.training else 0.0)
        h = self.norm1(x + self.drop(self.out(att.transpose(1, 2).reshape(b, t, d))))
        if self.ffn is not None:
            h = self.norm2(h + self.drop(self.ffn(h)))
        out = masked_mean(h, mask)
        return F.normalize(out, dim=-1, eps=1e-8) if self.normalize else out


def build_global_encoder(kind: str, dim: int, **kw) -> nn.Module:
    """A global encoder ``(x (B, T, D), mask (B, T) bool) -> (B, D)`` by name.

    ``kind``: ``sa_visual`` (SGRAF VisualSA; kw ``num_region``, ``dropout``), ``sa_text`` (SGRAF TextSA; kw
    ``dropout``), ``mhsa`` (:class:`MultiHeadSelfAttentionPool`), ``mean`` (:class:`MeanPool`; ``dim`` unused).
    """
    if kind == "sa_visual":
        from temde.modules.self_attention import VisualSA

        return VisualSA(dim, **kw)
    if kind == "sa_text":
        from temde.modules.self_attention import TextSA

        return TextSA(dim, **kw)
    if kind == "mhsa":
        return MultiHeadSelfAttentionPool(dim, **kw)
    if kind == "mean":
        return MeanPool(**kw)
    hint = " (T-EMDE returns a sketch: use temde.modules.temde.build_sketchers)" if kind == "temde" else ""
    raise ValueError(f"build_global_encoder (temde/modules/pooling.py): unknown kind {kind!r}, expected one of "
                     f"{GLOBAL_ENCODERS}{hint}")
