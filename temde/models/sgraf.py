"""SGRAF (Diao et al., AAAI 2021) as a :class:`~temde.models.base.RetrievalModel`, optionally with T-EMDE.

Layer by layer it follows the official implementation (docs/sgraf.md, "Architecture"):
regions -> ``Linear`` -> l2norm; words -> embedding -> dropout -> bi-GRU (directions averaged) -> l2norm; a
global vector per modality; per (image, caption) pair SCAN text-to-image attention (lambda 9), local similarity
vectors ``l2norm(W_loc (ctx - word)^2)`` and a global one ``l2norm(W_glo (g_img - g_txt)^2)``; SGR (3 graph
steps, node 0 read out) or SAF (BN-sigmoid-l1 attention filtration); score ``sigmoid(W_eval sim_vec)``.

Submodule names equal the official ones under three prefixes (``img_enc.``, ``txt_enc.``, ``sim_enc.``), so an
official checkpoint's three state dicts load by prefixing their keys (``temde.convert.sgraf``).

**Global pooling** (``global_pooling``, the ``configs/global`` group, built by
:func:`temde.modules.pooling.build_global_pooling`): ``{"kind": "sa"}`` (default) is SGRAF's VisualSA/TextSA;
``"temde"`` replaces both by T-EMDE sketches of the regions and of the words (flattened ``depth * 2**hyperplanes``),
and ``sim_tranglo_w`` then maps ``N*W -> sim_dim`` (docs/temde.md "Integration"); ``"mhsa"`` / ``"mean"`` are the
pooling baselines (their outputs are l2-normalised like SA's). Global vectors depend on one modality only, so they
can be precomputed and indexed (:mod:`temde.two_stage`).

**Text encoder** (``text_encoder``): ``"bigru"`` is the official one; ``"transformer"`` (beyond the paper) is a
pretrained Hugging Face model (``model_name_or_path``, local files only) + projection, its token states used as
the words (:mod:`temde.modules.hf_text`); its pretrained weights train at ``pretrained_lr_scale`` x lr.

**Vectorized scoring.** The official evaluation loops over captions, each against a shard of 100 images.
:meth:`SGRAF.similarity` scores every pair of an (images x captions) block at once: padded words are masked in
the attention (zero rows), in SGR (masked neighbours) and in SAF (masked weights), so each score equals the
official per-caption computation. In eval mode the block is cut into chunks of captions of similar length
(sorted, each chunk trimmed to its own longest caption) so that ``images x captions x words`` stays below
``chunk_size``: memory is bounded whatever the block sizes. In training the whole block is one chunk in the
given caption order (that is what the SAF per-caption BatchNorm emulation needs).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar, Literal

import torch
from torch import Tensor, nn

from temde.losses import ContrastiveLoss
from temde.modules.attention import ATTN_LAMBDA, t2i_attention_all_pairs, t2i_attention_pairs
from temde.modules.filtration import AttentionFiltration
from temde.modules.graph import SimilarityGraph
from temde.modules.hf_text import (
    PRETRAINED_LR_SCALE,
    TransformerTextEncoder,
    check_text_encoder,
    param_groups,
)
from temde.modules.init import xavier_linears_
from temde.modules.norms import NORM_EPS, l2norm, l2norm_, lengths_to_mask
from temde.modules.pooling import GlobalPooling, build_global_pooling
from temde.modules.self_attention import NUM_REGIONS, SA_DROPOUT, VisualSA
from temde.modules.text import GRUTextEncoder
from temde.repr import Repr, index_repr, slice_repr

MODULES = ("SGR", "SAF")
MAX_CHUNK = 2**15  # images x captions x words per eval chunk: ~128 MiB per float32 (.., D=1024) tensor
GPU_CHUNK = 2**16  # on a GPU large chunks keep the kernels busy; bounded for memory (~256 MiB per D=1024 tensor)
MIN_CHUNK = 512
_FALLBACK_CACHE = 32 * 2**20


def auto_chunk_size(device: torch.device, dtype: torch.dtype, embed_size: int) -> int:
    """Eval chunk (image x caption x word slots) for ``chunk_size=None``: a rule from measurements.

    On a CPU the elementwise passes (normalise/subtract/square, softmax, l2norm) are memory-bound, so the
    (slots, D) context tensor and its projection should stay in the last-level cache: slots = LLC / (2 D
    itemsize), a power of two (32 MiB L3, D 1024, fp32 -> 4096, the fastest of 1024 .. 32768 slots in interleaved
    runs of ``scripts/bench_eval.py --chunk-size``). On a GPU larger chunks amortise kernel launches:
    :data:`GPU_CHUNK`.
    """
    if device.type == "cuda":
        return GPU_CHUNK
    itemsize = torch.finfo(dtype).bits // 8 if dtype.is_floating_point else 4
    slots = _last_level_cache_bytes() // (2 * embed_size * itemsize)
    return int(min(MAX_CHUNK, max(MIN_CHUNK, 1 << max(int(slots).bit_length() - 1, 0))))


@functools.cache
def _last_level_cache_bytes() -> int:
    """Largest CPU cache (Linux sysfs), else 32 MiB."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = path.read_text().strip().upper()
        unit = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:], 1)
        digits = text.rstrip("KMG")
        if digits.isdigit():
            sizes.append(int(digits) * unit)
    return max(sizes, default=_FALLBACK_CACHE)


class ImageEncoder(nn.Module):
    """Region features (B, R, img_dim) -> (B, R, embed_size), l2-normalised (official ``EncoderImage``)."""

    def __init__(self, img_dim: int = 2048, embed_size: int = 1024) -> None:
        super().__init__()
        self.fc = nn.Linear(img_dim, embed_size)
        xavier_linears_(self)

    def forward(self, images: Tensor) -> Tensor:
        return l2norm(self.fc(images), dim=-1)


class SimilarityEncoder(nn.Module):
    """Everything after the two feature encoders (official ``EncoderSimilarity``): global encoders, the
    local/global similarity projections, SGR or SAF, and the score head."""

    def __init__(
        self,
        embed_size: int,
        sim_dim: int,
        module_name: str,
        sgr_step: int,
        global_pooling: GlobalPooling,
        saf_bn_stats: str,
    ) -> None:
        super().__init__()
        self.v_global_w = global_pooling.image  # official names (VisualSA / TextSA) = checkpoint keys
        self.t_global_w = global_pooling.text
        self.global_kind = global_pooling.kind
        global_dim = global_pooling.dim
        self.sim_tranloc_w = nn.Linear(embed_size, sim_dim)
        self.sim_tranglo_w = nn.Linear(global_dim, sim_dim)  # T-EMDE: W_glo maps N*W -> sim_dim
        self.sim_eval_w = nn.Linear(sim_dim, 1)
        self.sigmoid = nn.Sigmoid()
        xavier_linears_(self.sim_tranloc_w)
        xavier_linears_(self.sim_tranglo_w)
        xavier_linears_(self.sim_eval_w)
        self.module_name = module_name
        if module_name == "SGR":
            self.SGR_module = SimilarityGraph(sim_dim, sgr_step)
        else:
            self.SAF_module = AttentionFiltration(sim_dim, bn_stats=saf_bn_stats)

    # ---- global vectors (one modality each) and scoring: the layers above, applied by their owner ----------
    def global_image(self, regions: Tensor, mask: Tensor) -> Tensor:
        """(B, R, D) regions -> (B, global_dim) image vector (SA, a flattened sketch or a pooling baseline)."""
        if self.global_kind == "sa" and isinstance(self.v_global_w, VisualSA) and bool(mask.all()):
            return self.v_global_w(regions, None)  # the official computation, without masking arithmetic
        return self.v_global_w(regions, mask).flatten(1)  # sketches (B, depth, W) -> (B, depth*W)

    def global_text(self, words: Tensor, mask: Tensor) -> Tensor:
        """(B, L, D) words -> (B, global_dim) caption vector."""
        return self.t_global_w(words, mask).flatten(1)

    def local_alignments(self, raw_ctx: Tensor, words: Tensor) -> Tensor:
        """``l2norm(W_loc (l2norm(ctx) - word)^2)`` from the unnormalised attended contexts (..., L, D)."""
        norm = torch.linalg.vector_norm(raw_ctx, 2, dim=-1, keepdim=True) + NORM_EPS
        if torch.is_grad_enabled():
            diff = (raw_ctx / norm - words).pow(2)
        else:  # inference: normalise, subtract and square in the context buffer (2 passes instead of 6)
            diff = torch.addcdiv(-words, raw_ctx, norm, out=raw_ctx).square_()
        local = self.sim_tranloc_w(diff)
        return l2norm(local, dim=-1) if torch.is_grad_enabled() else l2norm_(local, dim=-1)

    def global_alignment(self, g_img: Tensor, g_txt: Tensor, pairwise: bool) -> Tensor:
        """``l2norm(W_glo (g_img - g_txt)^2)``: all (Ni, Nt) pairs with ``pairwise``, else aligned pairs."""
        diff = (g_img[:, None, :] - g_txt[None, :, :]) if pairwise else (g_img - g_txt)
        return l2norm(self.sim_tranglo_w(diff.pow(2)), dim=-1)

    def score(self, glob: Tensor, local: Tensor, words_mask: Tensor) -> Tensor:
        """Global node (..., m) + word nodes (..., L, m) with the captions' word mask -> scores (...) in (0, 1)."""
        nodes = torch.cat([glob.unsqueeze(-2), local], dim=-2)  # node 0 = global alignment
        node_mask = torch.cat([words_mask.new_ones(words_mask.shape[0], 1), words_mask], dim=1)
        return self.reason(nodes, node_mask)

    def reason(self, nodes: Tensor, mask: Tensor) -> Tensor:
        """Alignment nodes (..., n, sim_dim) + node mask -> scores (...) in (0, 1)."""
        if self.module_name == "SGR":
            sim_vec = self.SGR_module(nodes, mask)
        else:
            sim_vec = self.SAF_module(nodes, mask)
        # The score head always runs in fp32: bf16 scores (8-bit mantissa) would tie, and ties inflate Recall.
        with torch.autocast(sim_vec.device.type, enabled=False):
            return self.sigmoid(self.sim_eval_w(sim_vec.float())).squeeze(-1)


class SGRAF(nn.Module):
    """SGR or SAF (``module_name``) with a selectable global encoder; see the module docstring.

    Args mirror the official options (``opts.py``) where they exist; ``num_region``, ``dropout`` and
    ``attn_lambda`` are hard-coded there (36, 0.4, 9.0). ``saf_bn_stats``: ``"per_caption"`` reproduces the
    official SAF BatchNorm updates, ``"batched"`` uses one set of statistics per block. ``chunk_size`` bounds
    the eval working set (images x captions x words per chunk); ``None`` = :func:`auto_chunk_size` (per device,
    dtype and embedding size). ``global_loss_weight`` > 0 adds (not in the
    paper, off by default) a VSE++ hinge loss on the inner products of the global vectors, which makes them
    usable as a shortlist index (:mod:`temde.two_stage`): SGRAF's own global node compares them through
    ``W (a - b)^2``, which does not align them under the inner product.
    """

    # Cross-attention scoring is cheap per caption once regions are resident: wide caption blocks.
    similarity_defaults: ClassVar[dict[str, Any]] = {"txt_block": 512}

    def __init__(
        self,
        vocab_size: int,
        img_dim: int = 2048,
        word_dim: int = 300,
        embed_size: int = 1024,
        sim_dim: int = 256,
        num_layers: int = 1,
        bi_gru: bool = True,
        module_name: Literal["SGR", "SAF"] = "SGR",
        sgr_step: int = 3,
        num_region: int = NUM_REGIONS,
        dropout: float = SA_DROPOUT,
        attn_lambda: float = ATTN_LAMBDA,
        global_pooling: Mapping[str, Any] | None = None,
        saf_bn_stats: Literal["per_caption", "batched"] = "per_caption",
        chunk_size: int | None = None,
        global_loss_weight: float = 0.0,
        global_loss_max_violation: bool = False,
        text_encoder: Literal["bigru", "transformer"] = "bigru",
        model_name_or_path: str | None = None,
        pretrained_lr_scale: float = PRETRAINED_LR_SCALE,
    ) -> None:
        super().__init__()
        if module_name not in MODULES:
            raise ValueError(f"SGRAF: module_name must be one of {MODULES}, got {module_name!r}")
        if chunk_size is not None and chunk_size < 1:
            raise ValueError(f"SGRAF: chunk_size must be >= 1, got {chunk_size}")
        self.vocab_size = vocab_size
        self.embed_size = embed_size
        self.module_name = module_name
        self.attn_lambda = attn_lambda
        self.chunk_size = chunk_size
        self.global_loss_weight = global_loss_weight
        self.global_loss_max_violation = global_loss_max_violation
        self.img_enc = ImageEncoder(img_dim, embed_size)
        self.text_encoder = check_text_encoder(text_encoder, model_name_or_path)
        self.pretrained_lr_scale = pretrained_lr_scale
        if text_encoder == "transformer":  # beyond the paper: pretrained HF encoder + projection (hf_text.py)
            self.txt_enc: nn.Module = TransformerTextEncoder(str(model_name_or_path), embed_size)
        else:
            self.txt_enc = GRUTextEncoder(vocab_size, word_dim, embed_size, num_layers, bi_gru, dropout)
        pooling = build_global_pooling(global_pooling, embed_size, num_region=num_region, dropout=dropout)
        self.global_kind = pooling.kind
        self.sim_enc = SimilarityEncoder(embed_size, sim_dim, module_name, sgr_step, pooling, saf_bn_stats)

    # ---- encoders (one modality each) -------------------------------------------------------------------------
    def encode_images(self, images: Tensor, regions_mask: Tensor | None = None) -> Repr:
        if images.dim() != 3:
            raise ValueError(f"SGRAF.encode_images: images must be (N, R, F), got {tuple(images.shape)}")
        regions = self.img_enc(images)
        if regions_mask is None:
            regions_mask = torch.ones(regions.shape[:2], dtype=torch.bool, device=regions.device)
        else:
            regions = regions * regions_mask.unsqueeze(-1).to(regions.dtype)
        return {"regions": regions, "regions_mask": regions_mask,
                "global": self.sim_enc.global_image(regions, regions_mask)}

    def encode_texts(self, tokens: Tensor, lengths: Tensor) -> Repr:
        lengths = torch.as_tensor(lengths, dtype=torch.long, device=tokens.device)
        words = self.txt_enc(tokens, lengths)
        words_mask = lengths_to_mask(lengths, words.shape[1])
        return {"words": words, "words_mask": words_mask, "global": self.sim_enc.global_text(words, words_mask)}

    def auxiliary_losses(self, batch: dict[str, Tensor], img: Repr, txt: Repr) -> dict[str, Tensor]:
        """Optional global-vector contrastive loss (``global_loss_weight``); nothing by default (official)."""
        if self.global_loss_weight <= 0:
            return {}
        scores = img["global"] @ txt["global"].t()
        loss = ContrastiveLoss(max_violation=self.global_loss_max_violation)(scores)
        return {"global_contrastive": self.global_loss_weight * loss}

    def optimizer_parameters(self) -> list[Tensor] | list[dict[str, Any]]:
        """Every parameter; with a transformer text encoder, its pretrained weights as a group at
        ``pretrained_lr_scale`` x lr (:func:`temde.modules.hf_text.param_groups`)."""
        if isinstance(self.txt_enc, TransformerTextEncoder):
            return param_groups(self, self.txt_enc.pretrained_parameters(), self.pretrained_lr_scale)
        return [p for p in self.parameters() if p.requires_grad]

    # ---- scoring --------------------------------------------------------------------------------------------
    def similarity(self, img: Repr, txt: Repr) -> Tensor:
        """All pairs of a block: (n_img, n_txt) scores in (0, 1). Vectorized; chunked in eval mode."""
        if self.training:
            return self._score_all_pairs(img, txt)
        return self._score_chunked(img, txt)

    def pair_similarity(self, img: Repr, txt: Repr) -> Tensor:
        """Aligned pairs (image i with caption i): (P,) scores. Used to re-rank shortlists (eval)."""
        words, words_mask = _trim_words(txt)
        regions, regions_mask = img["regions"], _optional_mask(img["regions_mask"])
        ctx = t2i_attention_pairs(regions, words, regions_mask, self.attn_lambda, normalize=False)
        local = self.sim_enc.local_alignments(ctx, words)  # (P, L, m)
        glob = self.sim_enc.global_alignment(img["global"], txt["global"], pairwise=False)  # (P, m)
        return self.sim_enc.score(glob, local, words_mask)

    # ---- internals ------------------------------------------------------------------------------------------
    def _score_chunked(self, img: Repr, txt: Repr) -> Tensor:
        regions = img["regions"]
        n_img, n_txt = regions.shape[0], txt["words"].shape[0]
        scores = regions.new_empty(n_img, n_txt)
        chunk = self.chunk_size or auto_chunk_size(regions.device, regions.dtype, regions.shape[-1])
        lengths = txt["words_mask"].sum(1)
        order = torch.argsort(lengths, descending=True, stable=True)
        sorted_lengths = lengths[order].tolist()
        start = 0
        while start < n_txt:
            length = max(int(sorted_lengths[start]), 1)
            per_caption = n_img * length  # (image, word) slots one more caption adds to the chunk
            n_cap = max(1, chunk // per_caption)
            idx = order[start : start + n_cap]
            sub_txt = index_repr(txt, idx)
            img_step = n_img if per_caption <= chunk else max(1, chunk // length)
            for i in range(0, n_img, img_step):
                sub_img = slice_repr(img, i, i + img_step)
                scores[i : i + img_step, idx] = self._score_all_pairs(sub_img, sub_txt).to(scores.dtype)
            start += n_cap
        return scores

    def _score_all_pairs(self, img: Repr, txt: Repr) -> Tensor:
        words, words_mask = _trim_words(txt)
        regions, regions_mask = img["regions"], _optional_mask(img["regions_mask"])
        ctx = t2i_attention_all_pairs(regions, words, regions_mask, self.attn_lambda, normalize=False)
        local = self.sim_enc.local_alignments(ctx, words)  # (Ni, Nt, L, m)
        glob = self.sim_enc.global_alignment(img["global"], txt["global"], pairwise=True)  # (Ni, Nt, m)
        return self.sim_enc.score(glob, local, words_mask)


def _trim_words(txt: Repr) -> tuple[Tensor, Tensor]:
    """Words cut to the block's longest caption, padded positions set to exactly zero."""
    mask = txt["words_mask"]
    length = max(int(mask.sum(1).max()), 1) if mask.numel() else 1
    words, mask = txt["words"][:, :length], mask[:, :length]
    return words * mask.unsqueeze(-1).to(words.dtype), mask


def _optional_mask(mask: Tensor) -> Tensor | None:
    """None when every region is valid (the official case): skips the masking arithmetic."""
    return None if bool(mask.all()) else mask
