"""VSRN model: masking, caption branch (targets, decoder, loss), optimizer quirk, T-EMDE variants, configs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from temde.bench.cases import vsrn_latency_cases
from temde.models.base import RetrievalModel
from temde.models.vsrn import VSRN
from temde.modules.decoder import CaptionGenerator, caption_loss, caption_targets
from temde.modules.gcn import RsGCN
from temde.modules.vsrn_text import VSRNTextEncoder
from temde.repr import concat_reprs
from temde.retrieval import blocked_similarity, split_similarity

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest.single_thread


CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SMALL = {"vocab_size": 40, "img_dim": 12, "embed_size": 16, "word_dim": 8, "dim_hidden": 10, "dim_word": 6}
TEMDE_SMALL = {"kind": "temde", "depth": 2, "hyperplanes": 3}


def make_batch(batch: int = 6, regions: int = 5, img_dim: int = 12, vocab: int = 40, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(batch, regions, img_dim, generator=gen).abs()
    lengths = torch.randint(3, 10, (batch,), generator=gen)
    tokens = torch.randint(4, vocab, (batch, int(lengths.max())), generator=gen)
    tokens[:, 0] = 1
    for i, n in enumerate(lengths.tolist()):
        tokens[i, n - 1] = 2
        tokens[i, n:] = 0
    return {"images": images, "regions_mask": torch.ones(batch, regions, dtype=torch.bool), "tokens": tokens,
            "lengths": lengths}


def test_protocol_and_official_parameter_count():
    model = VSRN(**SMALL)
    assert isinstance(model, RetrievalModel)
    # Official Adam list: 85 entries, 69 unique tensors (docs/vsrn.md, "Optimizer quirk") on the F30K path.
    assert len(list(model.parameters())) == 69
    assert len(VSRN(**SMALL, duplicate_caption_parameters=True).optimizer_parameters()) == 85


def test_rsgcn_block_starts_as_identity():
    block = RsGCN(8).train()
    v = torch.randn(3, 5, 8)
    assert torch.allclose(block(v), v)


@pytest.mark.parametrize("variant", ["f30k", "coco"])
def test_padded_regions_do_not_matter(variant):
    torch.manual_seed(0)
    model = VSRN(**SMALL, variant=variant, sketch="additive", global_pooling=TEMDE_SMALL)
    batch = make_batch(regions=5)
    padded = torch.cat([batch["images"], 50 * torch.randn(6, 3, 12)], dim=1)
    mask = torch.cat([torch.ones(6, 5, dtype=torch.bool), torch.zeros(6, 3, dtype=torch.bool)], dim=1)
    # padded slots anywhere, not only at the end: the valid ones keep their order
    perm = torch.tensor([0, 5, 1, 2, 6, 3, 4, 7])
    model.train()
    ref = model.encode_images(batch["images"])
    out = model.encode_images(padded[:, perm], mask[:, perm])
    for key in ("embedding", "sketch"):
        assert torch.allclose(out[key], ref[key], atol=1e-5)
    assert torch.allclose(out["regions"][out["regions_mask"]], ref["regions"].reshape(-1, 16), atol=1e-5)
    model.eval()
    assert torch.allclose(model.encode_images(padded, mask)["embedding"], model.encode_images(batch["images"])[
        "embedding"], atol=1e-5)


def test_text_encoder_last_valid_state_any_order():
    torch.manual_seed(0)
    enc = VSRNTextEncoder(30, 6, 10)
    batch = make_batch(vocab=30)
    emb, states, mask = enc(batch["tokens"], batch["lengths"])
    for i, n in enumerate(batch["lengths"].tolist()):
        alone, _, _ = enc(batch["tokens"][i : i + 1, :n], torch.tensor([n]))
        assert torch.allclose(emb[i], alone[0], atol=1e-6)
        assert mask[i].sum() == n and states[i, n:].abs().sum() == 0
    assert torch.allclose(emb.norm(dim=1), torch.ones(6))


def test_caption_targets_worked_example():
    # docs/vsrn.md "Caption targets" worked example (F30K ids of "a man is riding a bike ."), batched with a longer caption.
    short = [1, 3256, 4845, 4546, 1891, 3256, 2120, 348, 2]
    long = [1, *range(10, 20), 2]
    tokens = torch.zeros(2, 12, dtype=torch.long)
    tokens[0, :9], tokens[1, :12] = torch.tensor(short), torch.tensor(long)
    inputs, targets, mask = caption_targets(tokens, torch.tensor([9, 12]))
    assert targets[0, :10].tolist() == [3256, 4845, 4546, 1891, 3256, 2120, 348, 2, 0, 0]
    assert mask[0, :10].tolist() == [True] * 9 + [False]
    assert inputs[0, :9].tolist() == short
    assert mask.sum(1).tolist() == [9, 12] and inputs.shape[1] == 12


def test_caption_targets_truncation_at_max_len():
    tokens = torch.arange(100, 175)[None].clone()
    tokens[0, 0], tokens[0, -1] = 1, 2
    inputs, targets, mask = caption_targets(tokens, torch.tensor([75]), max_len=60)
    # official: cap = cap[:60], cap[59] = <end>; 59 decoding steps, all masked in, the last target is <end>
    assert inputs.shape == (1, 59) and bool(mask.all())
    assert targets[0, -1].item() == 2 and targets[0, :-1].tolist() == tokens[0, 1:59].tolist()


def test_decoder_matches_spec_reference():
    """Teacher forcing per docs/vsrn.md "Caption branch", written out step by step (eval mode: dropout off)."""
    torch.manual_seed(0)
    gen = CaptionGenerator(vocab_size=20, dim_vid=12, dim_hidden=8, dim_word=5).eval()
    regions = torch.randn(3, 7, 12)
    tokens = torch.randint(3, 20, (3, 6))
    tokens[:, 0] = 1
    lengths = torch.tensor([6, 4, 5])
    for i, n in enumerate(lengths.tolist()):
        tokens[i, n - 1], tokens[i, n:] = 2, 0
    inputs, targets, mask = caption_targets(tokens, lengths)
    ours = gen(regions, inputs)

    enc, dec = gen.encoder, gen.decoder
    enc_out, hidden = enc.rnn(enc.vid2hid(regions.reshape(-1, 12)).view(3, 7, 8))
    steps = []
    for t in range(inputs.shape[1]):
        h = hidden[0]
        cat = torch.cat([enc_out, h[:, None].expand(-1, 7, -1)], dim=2)  # encoder output first, then hidden
        e = dec.attention.linear2(torch.tanh(dec.attention.linear1(cat))).squeeze(2)
        ctx = (e.softmax(dim=1)[..., None] * enc_out).sum(1)
        x = torch.cat([dec.embedding(inputs[:, t]), ctx], dim=1)  # word first, then context
        out, hidden = dec.rnn(x[:, None], hidden)
        steps.append(F.log_softmax(dec.out(out[:, 0]), dim=1))
    ref = torch.stack(steps, 1)
    assert torch.allclose(ours, ref, atol=1e-5)

    nll = 0.0
    for b in range(3):
        for t in range(inputs.shape[1]):
            if mask[b, t]:
                nll -= ref[b, t, targets[b, t]].item()
    assert caption_loss(ours, targets, mask).item() == pytest.approx(nll / 3, rel=1e-5)
    assert gen.loss(regions, tokens, lengths).item() == pytest.approx(nll / 3, rel=1e-5)


def _one_step(model: VSRN, batch, foreach: bool = False):
    params = model.optimizer_parameters()
    opt = torch.optim.Adam(params, lr=1e-2, foreach=foreach)
    model.train()
    torch.manual_seed(1)  # same dropout masks in both models
    img, txt = model.encode_images(batch["images"]), model.encode_texts(batch["tokens"], batch["lengths"])
    loss = model.similarity(img, txt).sum() + model.auxiliary_losses(batch, img, txt)["caption"]
    opt.zero_grad()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(params, 2.0)
    opt.step()
    return norm


def test_official_duplicate_parameter_quirk_changes_the_update():
    batch = make_batch()
    torch.manual_seed(0)
    plain = VSRN(**SMALL)
    quirk = VSRN(**SMALL, duplicate_caption_parameters=True)
    quirk.load_state_dict(plain.state_dict())
    before = {k: v.detach().clone() for k, v in plain.named_parameters()}
    caption_sq = None
    with pytest.warns(UserWarning, match="duplicate"):
        norm_quirk = _one_step(quirk, batch)
    norm_plain = _one_step(plain, batch)
    # clipping norm: caption-branch gradients counted twice
    caption_sq = norm_quirk**2 - norm_plain**2
    assert caption_sq > 0
    moved_plain = {k: (p.detach() - before[k]).abs() for k, p in plain.named_parameters()}
    moved_quirk = {k: (p.detach() - before[k]).abs() for k, p in quirk.named_parameters()}
    key = "caption.decoder.out.weight"
    # first Adam step moves each coordinate by ~lr; the duplicate gets a second step with the same gradient
    nonzero = moved_plain[key] > 1e-4
    assert torch.allclose(moved_quirk[key][nonzero], 2 * moved_plain[key][nonzero], rtol=0.05)
    assert torch.allclose(moved_quirk["txt_enc.embed.weight"], moved_plain["txt_enc.embed.weight"], atol=1e-6)


def test_temde_additive_similarity_and_indexable_sketches():
    torch.manual_seed(0)
    model = VSRN(**SMALL, sketch="additive", global_pooling=TEMDE_SMALL,
                 learn_temde_weight=True, temde_weight=0.5)
    batch = make_batch(batch=8)
    model.train()
    model.encode_images(batch["images"])  # first batch initialises the T-EMDE biases
    model.eval()
    img = model.encode_images(batch["images"])
    txt = model.encode_texts(batch["tokens"], batch["lengths"])
    assert img["sketch"].shape == (8, 2 * 8) and torch.allclose(img["sketch"].norm(dim=1), torch.ones(8))
    expected = img["embedding"] @ txt["embedding"].t() + 0.5 * img["sketch"] @ txt["sketch"].t()
    assert torch.allclose(model.similarity(img, txt), expected, atol=1e-6)
    # each item's representation depends on that item only: encode in pieces, concatenate, same scores
    parts_img = concat_reprs([model.encode_images(batch["images"][i : i + 3]) for i in range(0, 8, 3)])
    parts_txt = concat_reprs([model.encode_texts(batch["tokens"][i : i + 3], batch["lengths"][i : i + 3])
                              for i in range(0, 8, 3)])
    blocked = blocked_similarity(model, parts_img, parts_txt, img_block=3, txt_block=5, progress=False)
    assert torch.allclose(blocked, expected, atol=1e-5)
    # learnable lambda receives a gradient
    model.train()
    img, txt = model.encode_images(batch["images"]), model.encode_texts(batch["tokens"], batch["lengths"])
    model.similarity(img, txt).sum().backward()
    assert model.temde_weight.grad is not None and model.image_sketcher.hyperplanes.grad is not None


def test_temde_replace_has_no_gcn_and_trains():
    torch.manual_seed(0)
    model = VSRN(**SMALL, sketch="replace", global_pooling=TEMDE_SMALL)
    names = [k for k, _ in model.named_parameters()]
    assert not any("blocks" in k for k in names) and any("reasoning.sketcher" in k for k in names)
    batch = make_batch()
    model.train()
    emb0 = model.encode_images(batch["images"])["embedding"]
    with torch.no_grad():
        model.img_enc.reasoning.bn.weight.fill_(1.0)
    img, txt = model.encode_images(batch["images"]), model.encode_texts(batch["tokens"], batch["lengths"])
    assert not torch.allclose(img["embedding"], emb0)
    loss = model.similarity(img, txt).sum() + model.auxiliary_losses(batch, img, txt)["caption"]
    loss.backward()
    assert model.img_enc.reasoning.sketcher.hyperplanes.grad.abs().sum() > 0
    assert "sketch" not in img


def test_short_training_reduces_both_losses():
    from temde.losses import ContrastiveLoss

    torch.manual_seed(0)
    model = VSRN(**SMALL)
    batch = make_batch(batch=16, seed=3)
    opt = torch.optim.Adam(model.optimizer_parameters(), lr=3e-3)
    criterion = ContrastiveLoss()
    history = []
    for _ in range(25):
        model.train()
        img, txt = model.encode_images(batch["images"]), model.encode_texts(batch["tokens"], batch["lengths"])
        contrastive = criterion(model.similarity(img, txt))
        caption = model.auxiliary_losses(batch, img, txt)["caption"]
        opt.zero_grad()
        (contrastive + caption).backward()
        torch.nn.utils.clip_grad_norm_(model.optimizer_parameters(), 2.0)
        opt.step()
        history.append((contrastive.item(), caption.item()))
    assert history[-1][0] < 0.6 * history[0][0] and history[-1][1] < 0.9 * history[0][1]
    model.eval()
    img = model.encode_images(batch["images"])
    assert set(img) == {"embedding"} and model.auxiliary_losses(batch, img, {}) == {}


def test_similarity_matrix_and_latency_cases():
    torch.manual_seed(0)
    model = VSRN(**SMALL).eval()
    batch = make_batch()
    sims = split_similarity(model, batch["images"], batch["tokens"], batch["lengths"], batch_size=4)
    img, txt = model.encode_images(batch["images"]), model.encode_texts(batch["tokens"], batch["lengths"])
    assert torch.allclose(sims, img["embedding"] @ txt["embedding"].t(), atol=1e-6)
    cases = vsrn_latency_cases(batch=2, regions=4, img_dim=12, embed_size=16, temde=TEMDE_SMALL)
    assert set(cases) == {"vsrn_gcn", "vsrn_temde_replace", "vsrn_temde_additive"}
    with torch.no_grad():
        for module, inputs in cases.values():
            assert not module.training
            assert module(*inputs)["embedding"].shape == (2, 16)


def test_bad_options_are_rejected():
    with pytest.raises(ValueError, match="variant"):
        VSRN(**SMALL, variant="flickr")
    with pytest.raises(ValueError, match="sketch"):
        VSRN(**SMALL, sketch="sa")
    with pytest.raises(ValueError, match="T-EMDE spec"):  # sketcher options without a sketch switch, and back
        VSRN(**SMALL, global_pooling=TEMDE_SMALL)
    with pytest.raises(ValueError, match="T-EMDE spec"):
        VSRN(**SMALL, sketch="additive")
    with pytest.raises(ValueError, match="sketch needs a T-EMDE kind"):
        VSRN(**SMALL, sketch="additive", global_pooling={"kind": "mean"})


@pytest.mark.parametrize("experiment", ["f30k_vsrn", "f30k_vsrn_temde", "coco_vsrn", "coco_vsrn_temde",
                                        "synthetic_vsrn", "synthetic_vsrn_temde"])
def test_experiment_configs_compose(experiment):
    hydra = pytest.importorskip("hydra")
    if not (CONFIGS / "train.yaml").is_file():
        pytest.skip("configs/train.yaml not present")
    from hydra import compose, initialize_config_dir

    from temde.checkpoint import build_model
    from temde.training import model_config_for

    with initialize_config_dir(config_dir=str(CONFIGS), version_base="1.3"):
        cfg = compose("train", overrides=[f"experiment={experiment}"], return_hydra_config=False)
    assert hydra is not None and cfg.model._target_ == "temde.models.vsrn.VSRN"
    assert cfg.model_selection == "r1r5" and cfg.data.batch_size == 128
    assert cfg.model.sketch == ("additive" if experiment.endswith("temde") else "none")
    assert ("global_pooling" in cfg.model) == experiment.endswith("temde")  # stored only when used
    if not experiment.startswith("synthetic"):
        coco = experiment.startswith("coco")
        assert cfg.model.variant == ("coco" if coco else "f30k")
        assert cfg.optim.lr_update == (15 if coco else 10) and cfg.trainer.max_epochs == 30
        assert cfg.optim.lr == 2e-4 and cfg.optim.grad_clip == 2.0
    config = model_config_for(cfg, 50)
    with torch.device("meta"):
        model = build_model(config)
    assert model.additive == experiment.endswith("temde")
