"""Two-stage retrieval: FAISS shortlist by global vectors + full-model re-ranking."""

from __future__ import annotations

import pytest
import torch

from temde.evaluation import retrieval_metrics
from temde.models.sgraf import SGRAF
from temde.retrieval import blocked_similarity, encode_images, encode_texts
from temde.two_stage import build_index, score_pairs, shortlist, two_stage_evaluate

DIMS = dict(vocab_size=30, img_dim=16, word_dim=8, embed_size=12, sim_dim=6)


@pytest.fixture(scope="module")
def galleries():
    torch.manual_seed(0)
    model = SGRAF(**DIMS).eval()
    g = torch.Generator().manual_seed(1)
    n_img = 8
    images = torch.randn(n_img, 36, DIMS["img_dim"], generator=g)
    lengths = torch.randint(3, 10, (5 * n_img,), generator=g)
    tokens = torch.randint(4, DIMS["vocab_size"], (5 * n_img, 10), generator=g)
    tokens[torch.arange(10)[None] >= lengths[:, None]] = 0
    img, txt = encode_images(model, images), encode_texts(model, tokens, lengths)
    sims = blocked_similarity(model, img, txt, progress=False)
    return model, img, txt, sims


def test_shortlist_is_exact_inner_product_topk() -> None:
    g = torch.Generator().manual_seed(0)
    gallery, queries = torch.randn(50, 7, generator=g), torch.randn(6, 7, generator=g)
    ids = shortlist(build_index(gallery), queries, 5)
    assert torch.equal(ids, (queries @ gallery.t()).topk(5, dim=1).indices)
    ivf = shortlist(build_index(gallery, "ivf", nlist=4), queries, 5)
    assert ivf.shape == (6, 5)
    with pytest.raises(ValueError):
        build_index(gallery, "hnsw-typo")


def test_full_shortlist_equals_full_evaluation(galleries) -> None:
    model, img, txt, sims = galleries
    result = two_stage_evaluate(model, img, txt, k=10_000)
    full = retrieval_metrics(sims.numpy())
    for key, value in result.metrics.items():
        assert value == pytest.approx(full[key]), key
    assert result.pairs_scored == result.pairs_full == 8 * 40
    assert result.shortlist_recall_i2t == result.shortlist_recall_t2i == 100.0


def test_small_k_scores_fewer_pairs_and_reranks_with_the_model(galleries) -> None:
    model, img, txt, sims = galleries
    result = two_stage_evaluate(model, img, txt, k=3, pair_batch=7)
    assert result.pairs_scored <= (8 + 40) * 3 < result.pairs_full
    # t2i R@1 after re-ranking: the full-model best among the 3 shortlisted images
    cand = shortlist(build_index(img["global"]), txt["global"], 3)
    best = cand.gather(1, sims.t().gather(1, cand).argmax(1, keepdim=True)).squeeze(1)
    expected_r1 = 100.0 * (best == torch.arange(40) // 5).float().mean().item()
    assert result.metrics["t2i_r1"] == pytest.approx(expected_r1)


def test_score_pairs_matches_matrix_and_fallback(galleries) -> None:
    model, img, txt, sims = galleries
    ii = torch.tensor([0, 3, 7, 7, 2])
    jj = torch.tensor([39, 0, 5, 6, 2])
    fast = score_pairs(model, img, txt, ii, jj, pair_batch=2)
    assert (fast - sims[ii, jj]).abs().max() <= 1e-6

    class NoPairs(torch.nn.Module):  # a model exposing only the all-pairs protocol
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def similarity(self, a, b):
            return self.inner.similarity(a, b)

    slow = score_pairs(NoPairs(model), img, txt, ii, jj)
    assert (slow - fast).abs().max() <= 1e-6


def test_needs_global_vectors(galleries) -> None:
    model, img, txt, _ = galleries
    with pytest.raises(KeyError, match="global"):
        two_stage_evaluate(model, {k: v for k, v in img.items() if k != "global"}, txt, k=3)


def test_missing_ground_truth_is_a_miss_for_every_k(galleries) -> None:
    model, img, txt, _ = galleries
    result = two_stage_evaluate(model, img, txt, k=1)
    # with a 1-item shortlist, R@5 and R@10 cannot exceed the shortlist recall
    assert result.metrics["t2i_r10"] == result.metrics["t2i_r1"] <= result.shortlist_recall_t2i
    assert result.metrics["i2t_r10"] == result.metrics["i2t_r5"] <= result.shortlist_recall_i2t
