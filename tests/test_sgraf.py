"""SGRAF: vectorized, masked scoring == the official per-caption computation (independent reference in
``sgraf_official_format.py``), official key names, SAF BatchNorm semantics, T-EMDE integration, training."""

from __future__ import annotations

import copy

import pytest
import torch
from sgraf_official_format import official_state_dicts, reference_similarities
from torch import nn

from temde.losses import ContrastiveLoss
from temde.models.base import RetrievalModel
from temde.models.sgraf import SGRAF
from temde.modules.filtration import AttentionFiltration
from temde.modules.self_attention import TextSA, VisualSA
from temde.retrieval import split_similarity

DIMS = dict(vocab_size=40, img_dim=24, word_dim=12, embed_size=16, sim_dim=8)
PREFIXES = ("img_enc", "txt_enc", "sim_enc")


def _flat(sds: list[dict]) -> dict:
    return {f"{p}.{k}": v for p, sd in zip(PREFIXES, sds) for k, v in sd.items()}


def _inputs(n_img: int = 5, n_cap: int = 9, max_len: int = 11, seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(n_img, 36, DIMS["img_dim"], generator=g)
    lengths = torch.randint(2, max_len + 1, (n_cap,), generator=g)
    lengths[0] = max_len
    tokens = torch.randint(4, DIMS["vocab_size"], (n_cap, max_len + 3), generator=g)  # extra padded columns
    tokens[torch.arange(max_len + 3)[None] >= lengths[:, None]] = 0
    return images, tokens, lengths


@pytest.mark.parametrize("module_name", ["SGR", "SAF"])
def test_matches_per_caption_reference(module_name: str) -> None:
    sds = official_state_dicts(module_name=module_name, **DIMS)
    model = SGRAF(module_name=module_name, chunk_size=40, **DIMS)
    model.load_state_dict(_flat(sds), strict=True)  # official names, strict
    model.eval()
    images, tokens, lengths = _inputs()
    ours = split_similarity(model, images, tokens, lengths, img_block=3, txt_block=4, batch_size=4)
    ref = reference_similarities(sds, images, tokens, lengths, module_name).float()
    assert ours.shape == (5, 9)
    assert (ours - ref).abs().max() <= 1e-5
    assert ref.std() > 1e-3  # the comparison is not between near-constant matrices


@pytest.mark.parametrize("module_name", ["SGR", "SAF"])
def test_blocking_and_chunking_do_not_change_scores(module_name: str) -> None:
    torch.manual_seed(0)
    model = SGRAF(module_name=module_name, **DIMS).eval()
    images, tokens, lengths = _inputs(n_img=7, n_cap=13)
    full = split_similarity(model, images, tokens, lengths, img_block=64, txt_block=64)
    model.chunk_size = 7  # forces image sub-chunks and single-caption chunks
    tiny = split_similarity(model, images, tokens, lengths, img_block=2, txt_block=5, batch_size=3)
    assert (full - tiny).abs().max() <= 1e-6


def test_pair_similarity_equals_all_pairs() -> None:
    torch.manual_seed(0)
    model = SGRAF(module_name="SGR", **DIMS).eval()
    images, tokens, lengths = _inputs()
    with torch.no_grad():
        img, txt = model.encode_images(images), model.encode_texts(tokens, lengths)
        full = model.similarity(img, txt)
        ii = torch.tensor([0, 4, 2, 2, 1])
        jj = torch.tensor([8, 0, 3, 5, 5])
        pairs = model.pair_similarity({k: v[ii] for k, v in img.items()}, {k: v[jj] for k, v in txt.items()})
    assert (pairs - full[ii, jj]).abs().max() <= 1e-6


def test_protocol_and_repr_shapes() -> None:
    model = SGRAF(**DIMS).eval()
    assert isinstance(model, RetrievalModel)
    images, tokens, lengths = _inputs()
    with torch.no_grad():
        img, txt = model.encode_images(images), model.encode_texts(tokens, lengths)
    assert img["regions"].shape == (5, 36, 16) and img["global"].shape == (5, 16)
    assert txt["words"].shape == (9, tokens.shape[1], 16) and txt["words_mask"].sum(1).tolist() == lengths.tolist()
    assert (txt["words"][~txt["words_mask"]] == 0).all()


def test_text_sa_masked_equals_per_caption() -> None:
    torch.manual_seed(0)
    sa = TextSA(16).eval()
    x = torch.randn(4, 7, 16)
    lens = torch.tensor([7, 3, 5, 1])
    mask = torch.arange(7)[None] < lens[:, None]
    with torch.no_grad():
        ours = sa(x, mask)
        ref = torch.cat([sa(x[i : i + 1, : lens[i]]) for i in range(4)])
    assert (ours - ref).abs().max() <= 1e-6


def test_visual_sa_official_keys_and_region_check() -> None:
    keys = set(VisualSA(16).state_dict())
    assert "embedding_local.1.running_mean" in keys and "embedding_common.0.weight" in keys
    assert VisualSA(16).state_dict()["embedding_local.1.running_mean"].shape == (36,)
    with pytest.raises(ValueError, match="36 regions"):
        VisualSA(16)(torch.randn(2, 10, 16))


def _saf_reference_train(saf: AttentionFiltration, nodes: torch.Tensor, lengths: torch.Tensor):
    """Official: one BatchNorm1d(1) call per caption on its (N_img, 1, L_i + 1) attention logits."""
    bn = copy.deepcopy(saf.bn).train()
    outs = []
    for j in range(nodes.shape[1]):
        s = nodes[:, j, : int(lengths[j]) + 1]  # (N, n_j, d)
        a = saf.attn_sim_w(s).transpose(1, 2)  # (N, 1, n_j)
        a = torch.sigmoid(bn(a))
        a = a / (a.abs().sum(-1, keepdim=True) + 1e-8)
        v = (a @ s).squeeze(1)
        outs.append(v / (v.norm(dim=-1, keepdim=True) + 1e-8))
    return torch.stack(outs, dim=1), bn


def test_saf_bn_per_caption_training_semantics() -> None:
    torch.manual_seed(0)
    saf = AttentionFiltration(8).train()
    saf.bn.running_mean.fill_(0.3)
    saf.bn.running_var.fill_(1.7)
    nodes = torch.randn(6, 5, 9, 8)
    lengths = torch.tensor([8, 3, 5, 1, 7])  # nodes = lengths + 1 (global node first)
    mask = torch.arange(9)[None] < (lengths + 1)[:, None]
    ref, ref_bn = _saf_reference_train(saf, nodes, lengths)
    ours = saf(nodes, mask)
    assert (ours - ref).abs().max() <= 1e-5
    assert torch.allclose(saf.bn.running_mean, ref_bn.running_mean, atol=1e-6)
    assert torch.allclose(saf.bn.running_var, ref_bn.running_var, atol=1e-6)
    assert int(saf.bn.num_batches_tracked) == 5 == int(ref_bn.num_batches_tracked)


def test_saf_bn_batched_statistics() -> None:
    torch.manual_seed(0)
    saf = AttentionFiltration(8, bn_stats="batched").train()
    nodes = torch.randn(4, 3, 6, 8)
    mask = torch.ones(3, 6, dtype=torch.bool)
    bn = copy.deepcopy(saf.bn).train()
    ours = saf(nodes, mask)
    logits = saf.attn_sim_w(nodes).reshape(-1, 1)
    bn(logits)  # a conventional BN over every node of every pair: one update
    assert torch.allclose(saf.bn.running_mean, bn.running_mean, atol=1e-6)
    assert torch.allclose(saf.bn.running_var, bn.running_var, atol=1e-6)
    assert int(saf.bn.num_batches_tracked) == 1
    assert ours.shape == (4, 3, 8)
    with pytest.raises(ValueError):
        AttentionFiltration(8, bn_stats="nope")


def test_sgraf_temde_integration() -> None:
    torch.manual_seed(0)
    spec = {"kind": "temde", "depth": 4, "hyperplanes": 3, "shared": True}
    model = SGRAF(global_pooling=spec, **DIMS)
    assert model.sim_enc.sim_tranglo_w.in_features == 4 * 2**3  # W_glo: N*W -> sim_dim
    assert not hasattr(model.sim_enc, "SAF_module")
    images, tokens, lengths = _inputs(n_img=6, n_cap=6)
    model.train()
    img, txt = model.encode_images(images), model.encode_texts(tokens, lengths)
    assert img["global"].shape == (6, 32) and txt["global"].shape == (6, 32)
    loss = ContrastiveLoss()(model.similarity(img, txt))
    loss.backward()
    sketcher = model.sim_enc.v_global_w
    assert sketcher is model.sim_enc.t_global_w  # shared partitioning
    grads = [p.grad for p in sketcher.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    # padding invariance: extra padded columns change nothing
    padded = torch.cat([tokens, torch.zeros(6, 5, dtype=torch.long)], dim=1)
    a = split_similarity(model, images, tokens, lengths)
    b = split_similarity(model, images, padded, lengths)
    assert (a - b).abs().max() <= 1e-6


@pytest.mark.parametrize("module_name", ["SGR", "SAF"])
def test_training_step_reduces_loss(module_name: str) -> None:
    torch.manual_seed(0)
    model = SGRAF(module_name=module_name, **DIMS).train()
    images, tokens, lengths = _inputs(n_img=8, n_cap=8)
    opt = torch.optim.Adam(model.parameters(), lr=2e-3)
    losses = []
    for _ in range(15):
        scores = model.similarity(model.encode_images(images), model.encode_texts(tokens, lengths))
        assert scores.shape == (8, 8)
        loss = ContrastiveLoss()(scores)
        opt.zero_grad()
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 2.0)
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0]
    if module_name == "SAF":
        assert int(model.sim_enc.SAF_module.bn.num_batches_tracked) == 15 * 8  # once per caption


def test_bad_options_raise() -> None:
    with pytest.raises(ValueError, match="module_name"):
        SGRAF(module_name="AVE", **DIMS)
    with pytest.raises(ValueError, match="global pooling kind"):
        SGRAF(global_pooling={"kind": "gcn"}, **DIMS)


@pytest.mark.parametrize("kind", ["mean", "mhsa"])
def test_pooling_global_encoders(kind: str) -> None:
    torch.manual_seed(0)
    model = SGRAF(global_pooling={"kind": kind}, **DIMS).eval()
    images, tokens, lengths = _inputs(n_img=3, n_cap=4)
    sims = split_similarity(model, images, tokens, lengths)
    assert sims.shape == (3, 4) and torch.isfinite(sims).all()
    with torch.no_grad():
        g = model.encode_texts(tokens, lengths)["global"]
    assert torch.allclose(g.norm(dim=-1), torch.ones(4), atol=1e-5)


def test_optional_global_loss() -> None:
    torch.manual_seed(0)
    images, tokens, lengths = _inputs(n_img=4, n_cap=4)
    model = SGRAF(**DIMS).train()
    img, txt = model.encode_images(images), model.encode_texts(tokens, lengths)
    assert model.auxiliary_losses({}, img, txt) == {}  # official default: no extra loss
    model.global_loss_weight = 0.5
    losses = model.auxiliary_losses({}, img, txt)
    assert set(losses) == {"global_contrastive"} and losses["global_contrastive"].requires_grad
