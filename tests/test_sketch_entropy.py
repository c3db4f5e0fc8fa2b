"""scripts/sketch_entropy.py: the entropy figure reported for trained T-EMDE sketches."""

from __future__ import annotations

import math

import pytest
import torch

from temde.bench import sketch_entropy
from temde.checkpoint import build_model
from temde.data.precomp import PrecompDataset
from temde.data.vocab import load_json_vocab
from tests.conftest import TINY_SPEC


def test_entropy_of_uniform_and_one_hot_rows():
    uniform = torch.full((2, 3, 8), 1 / 8)
    one_hot = torch.nn.functional.one_hot(torch.tensor([[1, 2, 3]]), 8).float()
    assert sketch_entropy.entropy(uniform) == pytest.approx(math.log(8))
    assert sketch_entropy.entropy(one_hot) == pytest.approx(0.0, abs=1e-9)


def test_sketch_entropies_of_an_sgr_temde_model(tiny_data_root):
    vocab = load_json_vocab(tiny_data_root / "vocab" / "synthetic_precomp_vocab.json")
    model = build_model({
        "_target_": "temde.models.sgraf.SGRAF", "vocab_size": len(vocab), "img_dim": TINY_SPEC.feature_dim,
        "embed_size": 32, "word_dim": 16, "sim_dim": 8, "num_region": TINY_SPEC.n_regions,
        "global_pooling": {"kind": "temde", "depth": 2, "hyperplanes": 3},
    }).eval()
    dataset = PrecompDataset(tiny_data_root, "synthetic_precomp", "test", vocab)
    out = sketch_entropy.sketch_entropies(model, dataset)
    assert out["log_W"] == pytest.approx(math.log(8))
    for key in ("image_mean_per_depth_entropy", "text_mean_per_depth_entropy"):
        assert 0.0 <= out[key] <= math.log(8) + 1e-6
