"""Recall@K retrieval metrics from a similarity matrix (SCAN / VSE++ / SGRAF / VSRN protocol).

The metrics are a pure function of the (n_images, 5 * n_images) similarity matrix, so any model, checkpoint or
ensemble is evaluated the same way and tests can check the numbers against a brute-force reference.

Layout (docs/evaluation.md, "Protocol"): caption ``5k + i`` (i = 0..4) describes image ``k``.

* image -> text ("sentence retrieval", i2t): the rank of image ``k`` is the best (smallest) rank of its five
  ground-truth captions among all captions.
* text -> image ("image retrieval", t2i): the rank of caption ``j`` is the rank of image ``j // 5``.
* ``R@K = 100 * mean(rank < K)``, ``medr = floor(median(rank)) + 1``, ``meanr = mean(rank) + 1`` (ranks 0-based).
* ``rsum`` is the sum of the six recalls.
* COCO 1K (``fold5=True``): the 5000 x 25000 ``testall`` matrix is cut into its 5 diagonal blocks of
  1000 images x 5000 captions; every metric is the mean over the folds and ``rsum`` is the sum of the mean
  recalls (= the mean of the fold rsums). The official COCO-1K summary line prints 6 x the mean i2t recall
  instead (docs/evaluation.md, "Protocol"); that bug is deliberately not reproduced.

**Tie convention (optimistic).** The rank of a ground truth is the number of candidates whose score is *strictly
greater* than the ground truth's score. The official code takes the position in ``argsort(...)[::-1]``, whose
order among equal scores is an implementation detail; the strict-greater count is deterministic, equals that
position whenever there are no ties, and otherwise credits the ground truth with the best position in its tie
group. For i2t, the best of the five ground-truth ranks is the rank of the highest-scoring ground truth, i.e. the
number of captions scoring strictly above ``max(ground-truth scores)``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from temde.data.layout import CAPTIONS_PER_IMAGE

RECALL_KS = (1, 5, 10)  # R@1, R@5, R@10 reported by every paper in the table
N_FOLDS = 5  # COCO 1K = mean over 5 folds of the 5K testall split (docs/evaluation.md, "Protocol")
_ROW_BLOCK = 512  # rows per comparison block: bounds the boolean temporaries to ~block x n_captions bytes

METRIC_KEYS = (
    "i2t_r1",
    "i2t_r5",
    "i2t_r10",
    "t2i_r1",
    "t2i_r5",
    "t2i_r10",
    "rsum",
    "i2t_medr",
    "t2i_medr",
    "i2t_meanr",
    "t2i_meanr",
)
RECALL_KEYS = METRIC_KEYS[:6]

ArrayLike = Any  # numpy array or torch tensor


def _to_numpy(sims: ArrayLike) -> np.ndarray:
    """Float numpy view/copy of a numpy array or torch tensor; comparisons stay exact in the input precision."""
    if isinstance(sims, torch.Tensor):
        t = sims.detach().cpu()
        if not t.is_floating_point():
            t = t.double()
        elif t.dtype not in (torch.float16, torch.float32, torch.float64):
            t = t.float()  # bfloat16 etc.: exact in float32, numpy has no bfloat16
        sims = t.numpy()
    arr = np.asarray(sims)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"similarity matrix must be numeric, got dtype {arr.dtype}")
    if arr.dtype.kind != "f":
        arr = arr.astype(np.float64)
    return arr


def _check_sims(sims: np.ndarray) -> int:
    if sims.ndim != 2:
        raise ValueError(f"similarity matrix must be 2-D (n_images, 5 * n_images), got shape {sims.shape}")
    n_img, n_cap = sims.shape
    if n_img == 0 or n_cap != CAPTIONS_PER_IMAGE * n_img:
        raise ValueError(
            f"similarity matrix has shape {sims.shape}: expected (n_images, {CAPTIONS_PER_IMAGE} * n_images) "
            f"= ({n_img}, {CAPTIONS_PER_IMAGE * n_img}) with captions {CAPTIONS_PER_IMAGE}k..{CAPTIONS_PER_IMAGE}k+"
            f"{CAPTIONS_PER_IMAGE - 1} belonging to image k"
        )
    if not np.isfinite(sims).all():
        raise ValueError("similarity matrix contains NaN or inf; ranks would be meaningless")
    return n_img


def i2t_ranks(sims: ArrayLike) -> np.ndarray:
    """0-based rank of the best ground-truth caption for every image, shape (n_images,), int64.

    rank_k = #{captions j : sims[k, j] > max_i sims[k, 5k + i]} (optimistic ties, see module docstring).
    """
    s = _to_numpy(sims)
    n_img = _check_sims(s)
    gt_best = s.reshape(n_img, n_img, CAPTIONS_PER_IMAGE)[np.arange(n_img), np.arange(n_img)].max(axis=1)
    ranks = np.empty(n_img, dtype=np.int64)
    for start in range(0, n_img, _ROW_BLOCK):  # blocks of rows, not a loop over queries
        stop = min(start + _ROW_BLOCK, n_img)
        ranks[start:stop] = (s[start:stop] > gt_best[start:stop, None]).sum(axis=1)
    return ranks


def t2i_ranks(sims: ArrayLike) -> np.ndarray:
    """0-based rank of the ground-truth image for every caption, shape (5 * n_images,), int64.

    rank_j = #{images i : sims[i, j] > sims[j // 5, j]} (optimistic ties, see module docstring).
    """
    s = _to_numpy(sims)
    n_img = _check_sims(s)
    n_cap = s.shape[1]
    cols = np.arange(n_cap)
    gt = s[cols // CAPTIONS_PER_IMAGE, cols]
    ranks = np.zeros(n_cap, dtype=np.int64)
    for start in range(0, n_img, _ROW_BLOCK):  # accumulate over blocks of image rows
        ranks += (s[start : start + _ROW_BLOCK] > gt[None, :]).sum(axis=0)
    return ranks


def rank_stats(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    """R@K for every K in :data:`RECALL_KS`, medr and meanr of 0-based ranks, keys ``<prefix>_r1`` ..."""
    out = {f"{prefix}_r{k}": float(100.0 * np.mean(ranks < k)) for k in RECALL_KS}
    out[f"{prefix}_medr"] = float(np.floor(np.median(ranks)) + 1)
    out[f"{prefix}_meanr"] = float(np.mean(ranks) + 1)
    return out


def _single(sims: np.ndarray) -> dict[str, float]:
    m = {**rank_stats(i2t_ranks(sims), "i2t"), **rank_stats(t2i_ranks(sims), "t2i")}
    m["rsum"] = float(sum(m[k] for k in RECALL_KEYS))
    return {k: m[k] for k in METRIC_KEYS}


def retrieval_metrics(sims: ArrayLike, fold5: bool = False) -> dict[str, float]:
    """R@1/5/10 both directions, rsum, medr, meanr from an (n_images, 5 * n_images) similarity matrix.

    ``fold5=False``: Flickr30K test (1000 images) and COCO 5K (``testall``, 5000 images).
    ``fold5=True``: COCO 1K; n_images must be a multiple of 5 (5000 for ``testall``), fold ``f`` is images
    ``[f * n/5, (f+1) * n/5)`` with their captions, i.e. the f-th diagonal block; every metric is averaged over
    the folds and ``rsum`` is the sum of the averaged recalls.
    Recalls are percentages; all values are python floats.
    """
    s = _to_numpy(sims)
    n_img = _check_sims(s)
    if not fold5:
        return _single(s)
    if n_img % N_FOLDS:
        raise ValueError(f"fold5=True needs n_images divisible by {N_FOLDS} (COCO testall: 5000), got {n_img}")
    size = n_img // N_FOLDS
    folds = [
        _single(s[f * size : (f + 1) * size, f * size * CAPTIONS_PER_IMAGE : (f + 1) * size * CAPTIONS_PER_IMAGE])
        for f in range(N_FOLDS)
    ]
    mean = {k: float(np.mean([m[k] for m in folds])) for k in METRIC_KEYS}
    mean["rsum"] = float(sum(mean[k] for k in RECALL_KEYS))
    return mean


def ensemble_similarities(matrices: Sequence[ArrayLike]) -> ArrayLike:
    """Equal-weight mean of similarity matrices (SGRAF = mean of SGR and SAF; VSRN* = mean of two runs).

    Returns a torch float32 tensor if every input is a tensor, else a numpy float64 array (what RCAR's
    ``eval_ensemble`` averages in). Accumulates in float64 so the result does not depend on input order.
    """
    if len(matrices) == 0:
        raise ValueError("ensemble_similarities needs at least one similarity matrix")
    arrays = [_to_numpy(m) for m in matrices]
    shape = arrays[0].shape
    for i, a in enumerate(arrays):
        if a.ndim != 2 or a.shape != shape:
            raise ValueError(f"similarity matrix {i} has shape {a.shape}, expected {shape} like matrix 0")
    acc = np.zeros(shape, dtype=np.float64)
    for a in arrays:
        acc += a
    acc /= len(arrays)
    if all(isinstance(m, torch.Tensor) for m in matrices):
        return torch.from_numpy(acc).float()
    return acc


def _fmt(value: float | None, digits: int = 1) -> str:
    return "--" if value is None else f"{value:.{digits}f}"


def format_metrics_table(metrics_by_split: Mapping[str, Mapping[str, float | None]]) -> str:
    """Plain-text recall table, one row per split/model; missing or ``None`` entries print as ``--``."""
    header = [
        "",
        "i2t R@1",
        "R@5",
        "R@10",
        "medr",
        "t2i R@1",
        "R@5",
        "R@10",
        "medr",
        "rsum",
    ]
    keys = ["i2t_r1", "i2t_r5", "i2t_r10", "i2t_medr", "t2i_r1", "t2i_r5", "t2i_r10", "t2i_medr", "rsum"]
    rows = [header]
    for name, m in metrics_by_split.items():
        rows.append([str(name)] + [_fmt(m.get(k)) for k in keys])
    widths = [max(len(r[c]) for r in rows) for c in range(len(header))]
    lines = []
    for i, r in enumerate(rows):
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append(" | ".join(cells))
        if i == 0:
            lines.append("-+-".join("-" * w for w in widths))
    return "\n".join(lines)
