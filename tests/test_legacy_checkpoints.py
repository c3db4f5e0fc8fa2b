"""Checkpoints written before issue 11's refactor (commit bf94e22) still load and score identically.

``tests/data/legacy_ckpt/*.pt`` were written by ``make_legacy.py`` (kept beside them for provenance; it needs the
old code to run) with the old ``model_config`` keys (``global_encoder: gcn|temde``, a ``temde`` dict stored even
when unused, ``temde_mode``, ``global_encoder_kwargs``). Expected similarities were computed by the old code.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from temde.checkpoint import load_model

LEGACY = Path(__file__).resolve().parent / "data" / "legacy_ckpt"
NAMES = ["sgr_temde", "saf_sa", "sgr_mean", "vsrn_gcn", "vsrn_temde_additive", "vsrn_temde_replace"]


@pytest.mark.parametrize("name", NAMES)
def test_legacy_checkpoint_loads_and_scores_the_same(name: str) -> None:
    inputs = torch.load(LEGACY / "inputs.pt", weights_only=True)
    expected = torch.load(LEGACY / f"{name}.expected.pt", weights_only=True)["similarity"]
    model, payload = load_model(LEGACY / f"{name}.pt")
    assert not model.training
    assert payload["word2idx"]["w3"] == 3
    with torch.no_grad():
        sims = model.similarity(model.encode_images(inputs["images"]),
                                model.encode_texts(inputs["tokens"], inputs["lengths"]))
    torch.testing.assert_close(sims, expected, rtol=1e-5, atol=1e-6)
