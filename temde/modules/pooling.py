"""Global pooling: the one factory that turns the ``global`` config group into a model's two global encoders.

:func:`build_global_pooling` reads a spec ``{"kind": ..., **options}`` (one file of ``configs/global/``, stored in
a checkpoint's ``model_config`` as ``global_pooling`` only by the models that use it) and returns the image and
text encoders with the size of their flat output. Kinds (:data:`GLOBAL_POOLINGS`):

* ``sa``: SGRAF's VisualSA / TextSA (the official global vectors); ``num_region`` and ``dropout`` are the model's.
* ``temde``: T-EMDE sketchers (:class:`temde.modules.temde.TEMDE` kwargs plus ``shared``: one instance for both
  modalities, i.e. histograms over the same buckets, or one per modality); output ``depth * 2**hyperplanes``.
* ``mhsa`` / ``mean``: the pooling baselines below, l2-normalised like SA's output.

Single-modality encoders (:func:`build_global_encoder`, :data:`GLOBAL_ENCODERS`), all
``(x (B, T, D), mask (B, T) bool) -> (B, D)``, for benchmarks that time one side:

* ``sa_visual`` / ``sa_text``: SGRAF's self-attention pooling (``temde.modules.self_attention``), the module
  T-EMDE replaces in SGRAF. Cost ~``T * D^2`` (a D x D Linear on every token; the attention is against one
  global query, so it is *linear* in T).
* ``mhsa``: a standard multi-head self-attention encoder layer (token-token attention, quadratic in T:
  ``~T^2 * D`` on top of ``~T * D^2`` projections), then masked mean pooling. Not in SGRAF or T-EMDE: this
  project's "vanilla self-attention" reference for the latency comparison.
* ``mean``: masked mean pooling, the parameter-free floor.

Every encoder returns l2-normalized vectors, like SGRAF's global vectors. T-EMDE itself returns a sketch
(B, depth, W), not a D-vector, so it is built by :func:`build_global_pooling` only.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from temde.errors import InputError
from temde.modules.norms import l2norm, masked_mean
from temde.modules.self_attention import NUM_REGIONS, SA_DROPOUT, TextSA, VisualSA
from temde.modules.temde import TEMDE

__all__ = ["GLOBAL_ENCODERS", "GLOBAL_POOLINGS", "SKETCH_POOLINGS", "GlobalPooling", "L2Pooling", "MeanPool",
           "MultiHeadSelfAttentionPool", "build_global_encoder", "build_global_pooling"]

GLOBAL_POOLINGS = ("sa", "temde", "mhsa", "mean")  # `kind` of a configs/global spec
SKETCH_POOLINGS = ("temde",)  # kinds whose output is a sketch (B, depth, W) rather than a D-vector
GLOBAL_ENCODERS = ("sa_visual", "sa_text", "mhsa", "mean")  # single-modality encoders of build_global_encoder


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


def build_global_encoder(kind: str, dim: int, **kw: Any) -> nn.Module:
    """One modality's global encoder ``(x (B, T, D), mask (B, T) bool) -> (B, D)`` by name (benchmarks).

    ``kind``: ``sa_visual`` (SGRAF VisualSA; kw ``num_region``, ``dropout``), ``sa_text`` (SGRAF TextSA; kw
    ``dropout``), ``mhsa`` (:class:`MultiHeadSelfAttentionPool`), ``mean`` (:class:`MeanPool`; ``dim`` unused).
    """
    if kind == "sa_visual":
        return VisualSA(dim, **kw)
    if kind == "sa_text":
        return TextSA(dim, **kw)
    if kind == "mhsa":
        return MultiHeadSelfAttentionPool(dim, **kw)
    if kind == "mean":
        return MeanPool(**kw)
    hint = " (T-EMDE returns a sketch pair: use build_global_pooling)" if kind == "temde" else ""
    raise ValueError(f"build_global_encoder (temde/modules/pooling.py): unknown kind {kind!r}, expected one of "
                     f"{GLOBAL_ENCODERS}{hint}")


class L2Pooling(nn.Module):
    """Wraps a ``(x, mask) -> (B, D)`` pooling baseline and l2-normalises its output (as SA's output is)."""

    def __init__(self, pool: nn.Module) -> None:
        super().__init__()
        self.pool = pool  # attribute name = checkpoint key prefix (``...v_global_w.pool.*``)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        return l2norm(self.pool(x, mask), dim=-1)


@dataclass(frozen=True)
class GlobalPooling:
    """The two global encoders a spec builds. ``image is text`` for a shared T-EMDE sketcher.

    ``dim``: size of the flat output (``depth * 2**hyperplanes`` for sketches, which the models flatten).
    """

    kind: str
    image: nn.Module
    text: nn.Module
    dim: int

    @property
    def is_sketch(self) -> bool:
        return self.kind in SKETCH_POOLINGS


def build_global_pooling(spec: Mapping[str, Any] | None, dim: int, *, num_region: int = NUM_REGIONS,
                         dropout: float = SA_DROPOUT) -> GlobalPooling:
    """Image and text global encoders over ``dim``-sized tokens from a ``configs/global`` spec (see module doc).

    ``spec`` is ``{"kind": one of GLOBAL_POOLINGS, **options}``; ``None`` means ``{"kind": "sa"}`` (official
    SGRAF). ``num_region`` / ``dropout`` are the model's own settings that ``sa`` needs. The caller's mapping is
    not modified. A bad spec is an :class:`~temde.errors.InputError` naming ``model.global_pooling``.
    """
    options = dict(spec or {"kind": "sa"})
    kind = options.pop("kind", None)
    where = "model.global_pooling"
    if kind not in GLOBAL_POOLINGS:
        raise InputError(f"{where}.kind", f"global pooling kind must be one of {GLOBAL_POOLINGS}, got {kind!r}")
    if kind == "sa" and options:
        raise InputError(where, f"sa takes no options (num_region, dropout are the model's), got {sorted(options)}")
    try:
        if kind == "sa":
            return GlobalPooling(kind, VisualSA(dim, num_region, dropout), TextSA(dim, dropout), dim)
        if kind == "temde":
            shared = bool(options.pop("shared", True))
            image = TEMDE(dim, **options)
            text = image if shared else TEMDE(dim, **options)
            return GlobalPooling(kind, image, text, image.sketch_dim)
        image = L2Pooling(build_global_encoder(kind, dim, **options))
        return GlobalPooling(kind, image, L2Pooling(build_global_encoder(kind, dim, **options)), dim)
    except (TypeError, ValueError) as err:  # unknown option names or values the module refuses
        raise InputError(where, f"bad {kind} options {options}: {err}") from err
