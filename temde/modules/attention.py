"""SCAN text-to-image cross attention (the "clipped_l2norm" variant SGRAF uses), for many pairs at once.

For one (image, caption) pair with regions ``v`` (R, D) and words ``q`` (L, D)::

    A   = LeakyReLU_0.1(v @ q^T)              # (R, L)
    A   = l2norm(A, over words)               # per region
    A   = softmax(lambda * A^T, over regions) # (L, R), lambda = 9
    ctx = l2norm(A @ v, over features)        # (L, D): the attended image context of every word

:func:`t2i_attention_all_pairs` computes it for every image of a block against every caption of a block with
one large GEMM for the region-word affinities; :func:`t2i_attention_pairs` computes it for aligned pairs (used to
re-rank shortlists). Padded words must be zero (then they add nothing to the per-region l2 norm, exactly as if
the caption were cut to its valid length); masked regions are excluded from the softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from temde.modules.norms import l2norm

ATTN_LAMBDA = 9.0  # official: SCAN inverse temperature, hard-coded ``smooth=9.0`` in SGRAF's EncoderSimilarity
ATTN_LEAKY_SLOPE = 0.1  # official: LeakyReLU(0.1) on the region-word affinities


def _normalize_and_softmax(attn: Tensor, word_dim: int, region_dim: int, regions_mask: Tensor | None,
                           lam: float) -> Tensor:
    attn = F.leaky_relu(attn, ATTN_LEAKY_SLOPE)
    attn = l2norm(attn, dim=word_dim)
    attn = attn * lam
    if regions_mask is not None:
        attn = attn.masked_fill(~regions_mask, float("-inf"))
    return torch.softmax(attn, dim=region_dim)


def t2i_attention_all_pairs(
    regions: Tensor,
    words: Tensor,
    regions_mask: Tensor | None = None,
    lam: float = ATTN_LAMBDA,
    normalize: bool = True,
) -> Tensor:
    """Every image against every caption.

    regions (Ni, R, D), words (Nt, L, D) with padded words zeroed, regions_mask (Ni, R) bool or None.
    Returns the word contexts (Ni, Nt, L, D); ``normalize=False`` skips their final l2norm (so a caller can fuse
    it with what follows).
    """
    ni, r, d = regions.shape
    nt, length, _ = words.shape
    # (Ni, R, Nt*L): one GEMM for all region-word affinities of the block.
    attn = torch.matmul(regions, words.reshape(nt * length, d).t()).view(ni, r, nt, length)
    mask = None if regions_mask is None else regions_mask.view(ni, r, 1, 1)
    attn = _normalize_and_softmax(attn, word_dim=3, region_dim=1, regions_mask=mask, lam=lam)
    # contexts: (Ni, Nt*L, R) @ (Ni, R, D) -> (Ni, Nt*L, D)
    ctx = torch.matmul(attn.view(ni, r, nt * length).transpose(1, 2), regions).view(ni, nt, length, d)
    return l2norm(ctx, dim=-1) if normalize else ctx


def t2i_attention_pairs(
    regions: Tensor,
    words: Tensor,
    regions_mask: Tensor | None = None,
    lam: float = ATTN_LAMBDA,
    normalize: bool = True,
) -> Tensor:
    """Aligned pairs: regions (P, R, D), words (P, L, D) (padded words zeroed) -> contexts (P, L, D)."""
    attn = torch.bmm(regions, words.transpose(1, 2))  # (P, R, L)
    mask = None if regions_mask is None else regions_mask.unsqueeze(-1)
    attn = _normalize_and_softmax(attn, word_dim=2, region_dim=1, regions_mask=mask, lam=lam)
    ctx = torch.bmm(attn.transpose(1, 2), regions)
    return l2norm(ctx, dim=-1) if normalize else ctx


def t2i_attention_weights(regions: Tensor, words: Tensor, regions_mask: Tensor | None = None,
                          lam: float = ATTN_LAMBDA) -> Tensor:
    """The attention weights themselves for one pair: regions (R, D), words (L, D) -> (L, R), rows sum to 1
    over the valid regions (what :func:`t2i_attention_pairs` averages the regions with; for pictures)."""
    attn = (regions @ words.t())[None]  # (1, R, L)
    mask = None if regions_mask is None else regions_mask.view(1, -1, 1)
    return _normalize_and_softmax(attn, word_dim=2, region_dim=1, regions_mask=mask, lam=lam)[0].t()
