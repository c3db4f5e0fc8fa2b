"""Attention pictures for tiny trained SGR, T-EMDE SGR and VSRN checkpoints on the synthetic data."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from temde.checkpoint import load_model
from temde.data.precomp import PrecompDataset
from temde.data.vocab import Vocabulary
from temde.training import train
from temde.viz.attention import caption_words, dataset_similarity, explain, shared_buckets
from tests.helpers import compose_config, tiny_train_overrides

REPO = Path(__file__).resolve().parents[1]
MODELS = {"sgr": ["model=sgr", "model.sim_dim=8"],
          "sgr_temde": ["model=sgr", "model.sim_dim=8", "global=temde"],
          "vsrn": ["model=vsrn", "model.dim_hidden=16", "model.dim_word=8"]}


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory, tiny_data_root):
    out = {}
    for name, extra in MODELS.items():
        run = tmp_path_factory.mktemp(name)
        cfg = compose_config("train", [*tiny_train_overrides(tiny_data_root, epochs=1), *extra, "eval.test=false",
                                       "logger=none"])
        train(cfg, run)
        out[name] = run / "model_best.ckpt"
    return out


def _script():
    spec = importlib.util.spec_from_file_location("visualize_attention", REPO / "scripts" / "visualize_attention.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _reference_attention(regions: np.ndarray, words: np.ndarray, lam: float) -> np.ndarray:
    """SCAN clipped_l2norm attention written out in numpy: (L, R)."""
    a = regions @ words.T  # (R, L)
    a = np.where(a > 0, a, 0.1 * a)
    a = a / (np.linalg.norm(a, axis=1, keepdims=True) + 1e-8)
    logits = lam * a.T
    e = np.exp(logits - logits.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


@pytest.mark.parametrize("name", list(MODELS))
def test_explanation_content(name, checkpoints, tiny_data_root):
    model, payload = load_model(checkpoints[name])
    vocab = Vocabulary(payload["word2idx"])
    ds = PrecompDataset(tiny_data_root, "synthetic_precomp", "test", vocab)
    ids = vocab.encode(ds.captions[7])
    words = caption_words(vocab, ids)
    assert words[0] == "<start>" and words[-1] == "<end>"
    sims = dataset_similarity(model, ds)
    expl = explain(model, ds, 7, 1, words, k=4, sims=sims)
    assert expl.attention.shape == (len(ids), 12)
    np.testing.assert_allclose(expl.attention.sum(1), 1.0, rtol=1e-5)
    if name.startswith("sgr"):  # the model's own attention equals the formula written out independently
        with torch.no_grad():
            regions = model.encode_images(torch.from_numpy(np.array(ds.features[1], np.float32))[None])["regions"][0]
            wstates = model.encode_texts(torch.tensor([ids]), torch.tensor([len(ids)]))["words"][0]
        np.testing.assert_allclose(expl.attention, _reference_attention(regions.numpy(), wstates.numpy(), 9.0),
                                   rtol=1e-4, atol=1e-6)
    assert [i for i, _ in expl.top_images] == np.argsort(-sims[:, 7].numpy(), kind="stable")[:4].tolist()
    assert [s for _, s in expl.top_images] == pytest.approx(sims[np.array([i for i, _ in expl.top_images]), 7].tolist())
    assert len(expl.top_captions) == 4 and expl.top_captions[0][1] == pytest.approx(float(sims[1].max()))
    if name == "sgr_temde":
        sketcher_i, sketcher_t = model.sim_enc.v_global_w, model.sim_enc.t_global_w
        assert expl.sketch_shape == (sketcher_i.depth, sketcher_i.width)
        with torch.no_grad():  # brute force: every (depth, bucket) pair holding a region and a word
            ci = sketcher_i.hard_codes(regions[None])[0]
            ct = sketcher_t.hard_codes(wstates[None])[0]
        expected = {(d, int(b)) for d in range(ci.shape[1]) for b in ci[:, d] if bool((ct[:, d] == b).any())}
        assert {(b["depth"], b["bucket"]) for b in expl.shared_buckets} == expected
        for b in expl.shared_buckets:
            assert b["words"] == [words[w] for w in range(len(ids)) if ct[w, b["depth"]] == b["bucket"]]
    else:
        assert expl.shared_buckets == [] and expl.sketch_shape is None


def test_shared_buckets_by_hand():
    image_codes = torch.tensor([[0, 3], [1, 3], [0, 2]])  # 3 regions x 2 depths
    word_codes = torch.tensor([[0, 2], [5, 3]])  # 2 words
    got = shared_buckets(image_codes, word_codes, ["a", "dog"])
    assert got == [{"depth": 0, "bucket": 0, "regions": [0, 2], "words": ["a"]},
                   {"depth": 1, "bucket": 2, "regions": [2], "words": ["a"]},
                   {"depth": 1, "bucket": 3, "regions": [0, 1], "words": ["dog"]}]


@pytest.mark.parametrize("name", list(MODELS))
def test_script_writes_png(name, checkpoints, tiny_data_root, tmp_path, capsys):
    out = tmp_path / f"{name}.png"
    argv = ["--ckpt", str(checkpoints[name]), "--root", str(tiny_data_root), "--split", "test", "--caption", "3",
            "--out", str(out)]
    assert _script().main(argv) == 0
    with Image.open(out) as im:
        assert im.format == "PNG" and im.size[0] > 400 and im.size[1] > 400
        pixels = np.asarray(im.convert("L"))
    assert pixels.std() > 5  # not a blank canvas
    assert str(out) in capsys.readouterr().out


def test_script_draws_boxes_on_the_image(checkpoints, tiny_data_root, tmp_path):
    picture = tmp_path / "img.png"
    Image.fromarray(np.full((60, 80, 3), 200, np.uint8)).save(picture)
    n = np.load(tiny_data_root / "synthetic_precomp" / "test_ims.npy", mmap_mode="r").shape[0]
    boxes = np.tile(np.array([[5, 5, 30, 40]], np.float32), (n, 12, 1))
    boxes[:, 6:] = -1  # padded regions are not drawn
    np.save(tmp_path / "test_boxes.npy", boxes)
    heat, boxed = tmp_path / "heat.png", tmp_path / "boxed.png"
    base = ["--ckpt", str(checkpoints["sgr"]), "--root", str(tiny_data_root), "--caption", "0"]
    assert _script().main([*base, "--out", str(heat)]) == 0
    assert _script().main([*base, "--out", str(boxed), "--image-file", str(picture), "--boxes",
                           str(tmp_path / "test_boxes.npy")]) == 0
    with Image.open(heat) as a, Image.open(boxed) as b:
        assert b.size[1] > a.size[1]  # the extra row of per-word box pictures
    np.save(tmp_path / "bad_boxes.npy", boxes[:, :3])
    assert _script().main([*base, "--out", str(tmp_path / "x.png"), "--image-file", str(picture), "--boxes",
                           str(tmp_path / "bad_boxes.npy")]) == 2


def test_visualize_retrieval_scores_a_split_from_a_checkpoint(checkpoints, tiny_data_root, capsys):
    spec = importlib.util.spec_from_file_location("visualize_retrieval", REPO / "scripts" / "visualize_retrieval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    argv = ["--ckpt", str(checkpoints["sgr"]), "--root", str(tiny_data_root), "--split", "test", "--k", "3",
            "--text-queries", "4", "--image-queries", "2"]
    assert mod.main(argv) == 0  # no save_sims run and no ids file needed (the synthetic data has none)
    out = capsys.readouterr().out
    model, payload = load_model(checkpoints["sgr"])
    sims = dataset_similarity(model, PrecompDataset(tiny_data_root, "synthetic_precomp", "test",
                                                  Vocabulary(payload["word2idx"])))
    best = np.argsort(-sims[:, 4].numpy(), kind="stable")[:3]
    lines = out.splitlines()
    start = next(i for i, ln in enumerate(lines) if ln.startswith("text query 4"))
    for rank, i in enumerate(best, 1):
        assert f"image {i}" in lines[start + rank] and f"score {float(sims[i, 4]):.4f}" in lines[start + rank]
    assert any(ln.startswith("image query image 2") for ln in lines) and "(id " not in out
