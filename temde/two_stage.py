"""Two-stage retrieval (beyond the paper): shortlist with global vectors, re-rank with the full model.

Cross-attention models (SGRAF) must score every (image, caption) pair: ``n_img x n_cap`` evaluations of ~32
MFLOP each at official size. Their *global* vectors (SGRAF's SA vectors or T-EMDE sketches, in the ``"global"``
entry of each representation) depend on one modality only, so they can be indexed. Stage 1 takes the top-``k``
candidates of every query by inner product of global vectors (a FAISS index; exact ``IndexFlatIP`` by default,
both kinds of vectors are l2-normalised so this is cosine similarity). Stage 2 re-scores only the shortlisted
pairs with the full model (``model.pair_similarity`` on aligned pairs, each distinct pair once even when it is
shortlisted from both directions) and re-ranks them.

Ranks follow :mod:`temde.evaluation` (0-based, optimistic ties, best of the 5 ground-truth captions for
image-to-text); a ground truth missing from the shortlist is never retrieved (a miss for every R@K).
With ``k`` = gallery size the result equals full evaluation.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import faiss
import numpy as np
import torch
from torch import Tensor
from tqdm.auto import tqdm

from temde.evaluation import CAPTIONS_PER_IMAGE, RECALL_KEYS, rank_stats, retrieval_metrics
from temde.repr import Repr, index_repr, repr_len, to_device

MISS_RANK = 2**62  # rank given to a ground truth that is not in the shortlist


def build_index(vectors: Tensor, kind: str = "flat", nlist: int = 100) -> faiss.Index:
    """Inner-product FAISS index over (n, d) vectors: ``flat`` (exact, default) or ``ivf`` (approximate)."""
    x = np.ascontiguousarray(vectors.detach().float().cpu().numpy())
    d = x.shape[1]
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind == "ivf":
        quantizer = faiss.IndexFlatIP(d)
        index = faiss.IndexIVFFlat(quantizer, d, min(nlist, x.shape[0]), faiss.METRIC_INNER_PRODUCT)
        index.train(x)
    else:
        raise ValueError(f"index kind must be 'flat' or 'ivf', got {kind!r}")
    index.add(x)
    return index


def shortlist(index: faiss.Index, queries: Tensor, k: int) -> Tensor:
    """Top-``k`` gallery ids per query, (n_queries, k) long, best first."""
    q = np.ascontiguousarray(queries.detach().float().cpu().numpy())
    _, ids = index.search(q, min(k, index.ntotal))
    return torch.from_numpy(ids).long()


@torch.no_grad()
def score_pairs(
    model: torch.nn.Module,
    img: Repr,
    txt: Repr,
    img_ids: Tensor,
    txt_ids: Tensor,
    pair_batch: int = 1024,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> Tensor:
    """Full-model scores of the aligned pairs (img_ids[p], txt_ids[p]), (P,) float32.

    Pairs are processed in caption-length order so each batch is trimmed to little padding. Models with a
    vectorized ``pair_similarity`` use it; otherwise each pair is scored as a 1 x 1 block of ``similarity``.
    """
    n = img_ids.numel()
    out = torch.empty(n, dtype=torch.float32)
    mask_key = next((key for key in ("words_mask", "mask") if key in txt), None)
    order = torch.argsort(txt[mask_key].sum(1)[txt_ids], descending=True) if mask_key else torch.arange(n)
    pair_fn = getattr(model, "pair_similarity", None)
    for start in tqdm(range(0, n, pair_batch), desc="re-rank pairs", disable=not progress, leave=False):
        sel = order[start : start + pair_batch]
        img_b = to_device(index_repr(img, img_ids[sel]), device)
        txt_b = to_device(index_repr(txt, txt_ids[sel]), device)
        if pair_fn is not None:
            scores = pair_fn(img_b, txt_b)
        else:
            scores = torch.stack([
                model.similarity(index_repr(img_b, torch.tensor([p])), index_repr(txt_b, torch.tensor([p])))[0, 0]
                for p in range(len(sel))
            ])
        out[sel] = scores.float().cpu()
    return out


@dataclass
class TwoStageResult:
    k: int
    pairs_scored: int  # distinct (image, caption) pairs re-scored by the full model
    pairs_full: int  # n_img * n_cap (what full evaluation scores)
    shortlist_recall_i2t: float  # % of images with a ground-truth caption in their shortlist
    shortlist_recall_t2i: float  # % of captions with their image in the shortlist
    metrics: dict[str, float]  # i2t_r1 ... t2i_r10, rsum after re-ranking

    def as_dict(self) -> dict:
        return asdict(self)


def _ranks(scores: Tensor, is_gt: Tensor, miss_rank: int) -> Tensor:
    """0-based rank of the best ground truth inside each re-ranked shortlist; ``miss_rank`` when none is in it.

    scores/is_gt: (Q, k). Optimistic ties: rank = #candidates scoring strictly higher."""
    gt_score = torch.where(is_gt, scores, torch.full_like(scores, float("-inf"))).max(dim=1).values
    ranks = (scores > gt_score[:, None]).sum(dim=1)
    return torch.where(is_gt.any(dim=1), ranks, torch.full_like(ranks, miss_rank))


def _metrics(i2t: Tensor, t2i: Tensor) -> dict[str, float]:
    """R@K both directions and rsum (:func:`temde.evaluation.rank_stats`; medr/meanr are meaningless with
    misses, so they are left out)."""
    stats = {**rank_stats(i2t.numpy(), "i2t"), **rank_stats(t2i.numpy(), "t2i")}
    out = {key: stats[key] for key in RECALL_KEYS}
    out["rsum"] = float(sum(out.values()))
    return out


@torch.no_grad()
def two_stage_evaluate(
    model: torch.nn.Module,
    img: Repr,
    txt: Repr,
    k: int,
    global_key: str = "global",
    index_kind: str = "flat",
    pair_batch: int = 1024,
    device: str | torch.device = "cpu",
    progress: bool = False,
) -> TwoStageResult:
    """Shortlist ``k`` per query in both directions from global vectors, re-rank with the full model.

    ``img``/``txt`` are encoded galleries (``temde.retrieval.encode_images/encode_texts``), caption ``j``
    describing image ``j // 5``."""
    if global_key not in img or global_key not in txt:
        raise KeyError(f"two-stage retrieval needs per-modality global vectors under {global_key!r} in both "
                       f"representations (found {sorted(img)} / {sorted(txt)})")
    n_img, n_cap = repr_len(img), repr_len(txt)
    if n_cap != CAPTIONS_PER_IMAGE * n_img:
        raise ValueError(f"expected {CAPTIONS_PER_IMAGE} captions per image, got {n_img} images / {n_cap} captions")
    k_i2t, k_t2i = min(k, n_cap), min(k, n_img)
    cap_for_img = shortlist(build_index(txt[global_key], index_kind), img[global_key], k_i2t)  # (N, k)
    img_for_cap = shortlist(build_index(img[global_key], index_kind), txt[global_key], k_t2i)  # (M, k)
    # distinct pairs from both directions, scored once
    flat_i2t = torch.arange(n_img)[:, None] * n_cap + cap_for_img
    flat_t2i = img_for_cap * n_cap + torch.arange(n_cap)[:, None]
    unique, inverse = torch.unique(torch.cat([flat_i2t.flatten(), flat_t2i.flatten()]), return_inverse=True)
    scores = score_pairs(model, img, txt, unique // n_cap, unique % n_cap, pair_batch, device, progress)
    scores = scores[inverse]
    s_i2t = scores[: flat_i2t.numel()].view(n_img, k_i2t)
    s_t2i = scores[flat_i2t.numel() :].view(n_cap, k_t2i)
    gt_i2t = (cap_for_img // CAPTIONS_PER_IMAGE) == torch.arange(n_img)[:, None]
    gt_t2i = img_for_cap == (torch.arange(n_cap) // CAPTIONS_PER_IMAGE)[:, None]
    # a ground truth outside the shortlist is never retrieved: a miss for every R@K
    r_i2t, r_t2i = _ranks(s_i2t, gt_i2t, MISS_RANK), _ranks(s_t2i, gt_t2i, MISS_RANK)
    return TwoStageResult(
        k=k,
        pairs_scored=int(unique.numel()),
        pairs_full=n_img * n_cap,
        shortlist_recall_i2t=float(100.0 * gt_i2t.any(1).float().mean()),
        shortlist_recall_t2i=float(100.0 * gt_t2i.any(1).float().mean()),
        metrics=_metrics(r_i2t, r_t2i),
    )


def global_only_metrics(img: Repr, txt: Repr, global_key: str = "global") -> dict[str, float]:
    """Recall of the stage-1 ranking alone (inner product of global vectors, all pairs)."""
    sims = img[global_key].float() @ txt[global_key].float().t()
    return retrieval_metrics(sims.numpy())
