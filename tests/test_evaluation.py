"""retrieval_metrics against a brute-force re-implementation of the official i2t/t2i loops, plus hand cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from temde.evaluation import (
    METRIC_KEYS,
    ensemble_similarities,
    format_metrics_table,
    i2t_ranks,
    retrieval_metrics,
    t2i_ranks,
)


# ---------------------------------------------------------------- brute-force reference (spec: docs/evaluation.md, "Protocol")
def _brute_i2t(sims: np.ndarray) -> np.ndarray:
    n = sims.shape[0]
    ranks = np.zeros(n, dtype=np.int64)
    for k in range(n):
        inds = np.argsort(sims[k])[::-1]
        ranks[k] = min(int(np.where(inds == j)[0][0]) for j in range(5 * k, 5 * k + 5))
    return ranks


def _brute_t2i(sims: np.ndarray) -> np.ndarray:
    n_cap = sims.shape[1]
    ranks = np.zeros(n_cap, dtype=np.int64)
    for j in range(n_cap):
        inds = np.argsort(sims[:, j])[::-1]
        ranks[j] = int(np.where(inds == j // 5)[0][0])
    return ranks


def _brute_strict_i2t(sims: np.ndarray) -> np.ndarray:
    """Tie-aware reference of the documented convention: count of strictly better candidates, per query."""
    n = sims.shape[0]
    return np.array(
        [min(int(np.sum(sims[k] > sims[k, j])) for j in range(5 * k, 5 * k + 5)) for k in range(n)]
    )


def _brute_strict_t2i(sims: np.ndarray) -> np.ndarray:
    return np.array([int(np.sum(sims[:, j] > sims[j // 5, j])) for j in range(sims.shape[1])])


def _stats(r_i2t: np.ndarray, r_t2i: np.ndarray) -> dict[str, float]:
    out = {}
    for name, r in (("i2t", r_i2t), ("t2i", r_t2i)):
        for k in (1, 5, 10):
            out[f"{name}_r{k}"] = 100.0 * len(np.where(r < k)[0]) / len(r)
        out[f"{name}_medr"] = math.floor(np.median(r)) + 1
        out[f"{name}_meanr"] = r.mean() + 1
    out["rsum"] = sum(out[f"{d}_r{k}"] for d in ("i2t", "t2i") for k in (1, 5, 10))
    return out


def _brute_metrics(sims: np.ndarray, fold5: bool, strict: bool = False) -> dict[str, float]:
    fi, ft = (_brute_strict_i2t, _brute_strict_t2i) if strict else (_brute_i2t, _brute_t2i)
    if not fold5:
        return _stats(fi(sims), ft(sims))
    n = sims.shape[0] // 5
    folds = [_stats(fi(b), ft(b)) for b in (sims[f * n : (f + 1) * n, 5 * f * n : 5 * (f + 1) * n] for f in range(5))]
    mean = {k: float(np.mean([m[k] for m in folds])) for k in folds[0]}
    mean["rsum"] = float(np.mean([m["rsum"] for m in folds]))  # mean of fold rsums (no print bug)
    return mean


def _informative(n: int, seed: int) -> np.ndarray:
    """Random scores with a boost on the ground-truth pairs so recalls are neither 0 nor 100."""
    rng = np.random.default_rng(seed)
    sims = rng.standard_normal((n, 5 * n))
    sims[np.arange(5 * n) // 5, np.arange(5 * n)] += 2.0
    return sims


# ---------------------------------------------------------------- agreement with brute force
@pytest.mark.parametrize("fold5", [False, True])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_matches_bruteforce_random(fold5: bool, seed: int) -> None:
    sims = _informative(100, seed)
    got = retrieval_metrics(sims, fold5=fold5)
    ref = _brute_metrics(sims, fold5)
    assert list(got) == list(METRIC_KEYS)
    for k in METRIC_KEYS:
        assert isinstance(got[k], float)
        assert got[k] == pytest.approx(ref[k], abs=1e-9), k
    assert 0 < got["i2t_r1"] < 100 and 0 < got["t2i_r1"] < 100 and got["t2i_meanr"] > 1


@pytest.mark.parametrize("fold5", [False, True])
def test_ties_match_strict_reference(fold5: bool) -> None:
    rng = np.random.default_rng(3)
    sims = rng.integers(0, 4, size=(30, 150)).astype(np.float32)  # many ties
    got = retrieval_metrics(sims, fold5=fold5)
    ref = _brute_metrics(sims.astype(np.float64), fold5, strict=True)
    for k in METRIC_KEYS:
        assert got[k] == pytest.approx(ref[k], abs=1e-9), k


def test_ranks_match_bruteforce() -> None:
    sims = _informative(25, 4)
    np.testing.assert_array_equal(i2t_ranks(sims), _brute_i2t(sims))
    np.testing.assert_array_equal(t2i_ranks(sims), _brute_t2i(sims))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_torch_dtypes(dtype: torch.dtype) -> None:
    sims_t = torch.from_numpy(_informative(20, 5)).to(dtype)
    ref = _brute_metrics(sims_t.double().numpy(), False, strict=True)
    got = retrieval_metrics(sims_t)
    for k in METRIC_KEYS:
        assert got[k] == pytest.approx(ref[k], abs=1e-9), k


# ---------------------------------------------------------------- hand-worked cases
def test_perfect_retrieval() -> None:
    n = 4
    sims = np.zeros((n, 5 * n))
    sims[np.arange(5 * n) // 5, np.arange(5 * n)] = 1.0
    m = retrieval_metrics(sims)
    assert m["rsum"] == 600.0 and m["i2t_medr"] == 1.0 and m["t2i_meanr"] == 1.0


def test_hand_worked_two_images_with_ties() -> None:
    # image 0: captions 0..4 are its ground truth, image 1: captions 5..9.
    sims = np.array(
        [
            [0.1, 0.9, 0.2, 0.2, 0.2, 0.9, 0.5, 0.5, 0.5, 0.5],
            [0.3, 0.3, 0.3, 0.3, 0.3, 0.0, 0.1, 0.3, 0.2, 0.2],
        ]
    )
    # i2t image 0: best GT score 0.9 (caption 1); caption 5 ties at 0.9, nothing strictly above -> rank 0.
    # i2t image 1: best GT score 0.3 (caption 7); captions 0..4 tie at 0.3 -> nothing strictly above -> rank 0.
    np.testing.assert_array_equal(i2t_ranks(sims), [0, 0])
    # t2i: caption j vs its image j//5 in column j.
    # col0: gt 0.1 < 0.3 -> 1; col1: 0.9 > 0.3 -> 0; col2..4: 0.2 < 0.3 -> 1;
    # col5: gt 0.0 < 0.9 -> 1; col6: 0.1 < 0.5 -> 1; col7: 0.3 < 0.5 -> 1; col8, col9: 0.2 < 0.5 -> 1.
    np.testing.assert_array_equal(t2i_ranks(sims), [1, 0, 1, 1, 1, 1, 1, 1, 1, 1])
    m = retrieval_metrics(sims)
    assert m["i2t_r1"] == 100.0 and m["t2i_r1"] == 10.0 and m["t2i_r5"] == 100.0
    assert m["t2i_medr"] == 2.0 and m["t2i_meanr"] == pytest.approx(1.9)
    assert m["rsum"] == pytest.approx(100 + 100 + 100 + 10 + 100 + 100)


def test_tie_with_ground_truth_is_optimistic() -> None:
    sims = np.ones((1, 5))  # single image: all captions are its own, every score tied
    m = retrieval_metrics(sims)
    assert m["rsum"] == 600.0


def test_medr_floor_of_even_median() -> None:
    # 2 images; i2t ranks 0 and 3 -> median 1.5 -> floor + 1 = 2; meanr = 1.5 + 1.
    sims = np.zeros((2, 10))
    sims[0, :5] = 1.0  # image 0 GT on top -> rank 0
    sims[1, 5:] = -1.0
    sims[1, [0, 1, 2]] = 0.5  # three captions strictly above the GT (0 > -1 for the other two as well)
    assert i2t_ranks(sims)[1] == 5
    sims[1, [3, 4]] = -2.0
    assert list(i2t_ranks(sims)) == [0, 3]
    m = retrieval_metrics(sims)
    assert m["i2t_medr"] == 2.0 and m["i2t_meanr"] == 2.5


def test_fold5_uses_diagonal_blocks_and_rsum_is_mean_of_fold_rsums() -> None:
    n = 10  # 5 folds of 2 images
    sims = np.random.default_rng(6).standard_normal((n, 5 * n))
    sims_off = sims.copy()
    # Off-diagonal blocks must not matter for fold5: make them huge.
    for f in range(5):
        mask = np.ones(n, bool)
        mask[2 * f : 2 * f + 2] = False
        sims_off[mask, 10 * f : 10 * f + 10] = 1e6
    a, b = retrieval_metrics(sims, fold5=True), retrieval_metrics(sims_off, fold5=True)
    assert a == b
    folds = [retrieval_metrics(sims[2 * f : 2 * f + 2, 10 * f : 10 * f + 10]) for f in range(5)]
    assert a["rsum"] == pytest.approx(np.mean([m["rsum"] for m in folds]))
    assert a["i2t_r1"] == pytest.approx(np.mean([m["i2t_r1"] for m in folds]))
    assert retrieval_metrics(sims_off)["i2t_r10"] < 100  # 5K view does see the off-diagonal blocks


# ---------------------------------------------------------------- errors, ensembles, table
def test_bad_shape_message() -> None:
    with pytest.raises(ValueError, match=r"expected \(n_images, 5 \* n_images\) = \(3, 15\)"):
        retrieval_metrics(np.zeros((3, 14)))
    with pytest.raises(ValueError, match="2-D"):
        retrieval_metrics(np.zeros(15))
    with pytest.raises(ValueError, match="divisible by 5"):
        retrieval_metrics(np.zeros((3, 15)), fold5=True)
    bad = np.zeros((2, 10))
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        retrieval_metrics(bad)


def test_ensemble_similarities() -> None:
    a, b = _informative(6, 7), _informative(6, 8)
    avg = ensemble_similarities([a, b])
    np.testing.assert_allclose(avg, (a + b) / 2)
    t = ensemble_similarities([torch.from_numpy(a).float(), torch.from_numpy(b).float()])
    assert isinstance(t, torch.Tensor) and t.dtype == torch.float32
    np.testing.assert_allclose(t.numpy(), (a + b) / 2, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="shape"):
        ensemble_similarities([a, a[:, :-5]])
    with pytest.raises(ValueError, match="at least one"):
        ensemble_similarities([])


def test_format_metrics_table() -> None:
    m = retrieval_metrics(_informative(10, 9))
    text = format_metrics_table({"ours": m, "paper": {"i2t_r1": 56.7, "i2t_r5": None}})
    lines = text.splitlines()
    assert len(lines) == 4 and "i2t R@1" in lines[0] and "rsum" in lines[0]
    assert f"{m['rsum']:.1f}" in lines[2]
    assert "56.7" in lines[3] and "--" in lines[3]
