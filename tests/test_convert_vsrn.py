"""Official VSRN checkpoints and vocabulary pickles: safe loading, strict key mapping, numerical equivalence.

The reference forward pass below is written from the specification (docs/vsrn.md, "Two official paths"
and "Official checkpoint format"), on the *official* state-dict layout (Conv1d weights, channel-first GCN, l2norm along dim 1, GRU gate
equations spelled out), independently of temde.models.vsrn.
"""

from __future__ import annotations

import argparse
import os
import pickle
from collections import OrderedDict
from pathlib import Path

import pytest
import torch

from temde.convert import load_official
from temde.convert.vsrn import ConversionError, convert_vsrn, map_image_keys, map_text_keys
from temde.data.vocab import load_vsrn_vocab
from temde.data.vsrn_vocab import UnsafePickleError
from temde.errors import InputError
from temde.models.vsrn import VSRN
from temde.retrieval import split_similarity

pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest.single_thread



# Small dims for the numerical checks (the official values are 2048 / 2048 / 300 / 8481|10006).
D, F_IMG, W_DIM, V = 16, 12, 8, 30
N_REGIONS = 36  # official region count


# ---------------------------------------------------------------------------------------------------------------
# Official-format checkpoints built from random weights
# ---------------------------------------------------------------------------------------------------------------
def official_image_shapes(d: int, f: int, f30k: bool, blocks: int = 4) -> OrderedDict[str, tuple]:
    """Key -> shape of the official EncoderImagePrecompAttn state dict, in registration order (docs/vsrn.md, "Official checkpoint format")."""
    shapes: OrderedDict[str, tuple] = OrderedDict()
    shapes["fc.weight"], shapes["fc.bias"] = (d, f), (d,)
    for name in ("weight_ih_l0", "weight_hh_l0"):
        shapes[f"img_rnn.{name}"] = (3 * d, d)
    for name in ("bias_ih_l0", "bias_hh_l0"):
        shapes[f"img_rnn.{name}"] = (3 * d,)
    for k in range(1, blocks + 1):
        p = f"Rs_GCN_{k}"
        shapes[f"{p}.g.weight"], shapes[f"{p}.g.bias"] = (d, d, 1), (d,)
        shapes[f"{p}.W.0.weight"], shapes[f"{p}.W.0.bias"] = (d, d, 1), (d,)
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"{p}.W.1.{name}"] = (d,)
        shapes[f"{p}.W.1.num_batches_tracked"] = ()
        shapes[f"{p}.theta.weight"], shapes[f"{p}.theta.bias"] = (d, d, 1), (d,)
        shapes[f"{p}.phi.weight"], shapes[f"{p}.phi.bias"] = (d, d, 1), (d,)
    if f30k:
        for name in ("weight", "bias", "running_mean", "running_var"):
            shapes[f"bn.{name}"] = (d,)
        shapes["bn.num_batches_tracked"] = ()
    return shapes


def official_text_shapes(d: int, w: int, v: int) -> OrderedDict[str, tuple]:
    return OrderedDict([("embed.weight", (v, w)), ("rnn.weight_ih_l0", (3 * d, w)), ("rnn.weight_hh_l0", (3 * d, d)),
                        ("rnn.bias_ih_l0", (3 * d,)), ("rnn.bias_hh_l0", (3 * d,))])


def random_state(shapes: OrderedDict[str, tuple], gen: torch.Generator) -> OrderedDict[str, torch.Tensor]:
    state = OrderedDict()
    for key, shape in shapes.items():
        if key.endswith("num_batches_tracked"):
            state[key] = torch.tensor(7, dtype=torch.long)
        elif key.endswith("running_var"):
            state[key] = torch.rand(shape, generator=gen) + 0.5
        elif len(shape) >= 2 and not key.startswith("embed"):
            # ~unit-variance outputs: the GCN is cubic in its input, so larger weights overflow float32
            state[key] = torch.randn(shape, generator=gen) / shape[1] ** 0.5
        else:
            # biases, embeddings and non-zero BN weights in the GCN blocks (so the blocks are not the identity)
            state[key] = torch.randn(shape, generator=gen) * 0.4
    return state


def official_opt(data_name: str, **overrides) -> argparse.Namespace:
    """Every train.py option (docs/vsrn.md, "Official options") with small dims, plus vocab_size."""
    opt = dict(data_path="/data", data_name=data_name, vocab_path="./vocab/", margin=0.2, num_epochs=30,
               batch_size=128, word_dim=W_DIM, embed_size=D, grad_clip=2.0, crop_size=224, num_layers=1,
               learning_rate=0.0002, lr_update=15, workers=10, log_step=10, val_step=500, logger_name="runs/runX",
               resume="", max_violation=True, img_dim=F_IMG, finetune=False, cnn_type="vgg19", use_restval=False,
               measure="cosine", use_abs=False, no_imgnorm=False, reset_train=False, dim_vid=D, dim_hidden=512,
               bidirectional=0, input_dropout_p=0.2, rnn_type="gru", rnn_dropout_p=0.5, dim_word=300, max_len=60,
               vocab_size=V)
    opt.update(overrides)
    return argparse.Namespace(**opt)


def write_checkpoint(path: Path, img_state, txt_state, opt) -> Path:
    # Legacy (non-zip) serialization, as torch 0.4.1 wrote it.
    torch.save({"epoch": 12, "model": [img_state, txt_state], "best_rsum": 345.6, "opt": opt, "Eiters": 9000},
               path, _use_new_zipfile_serialization=False)
    return path


def make_official(tmp_path: Path, f30k: bool, seed: int = 0, **opt_overrides):
    gen = torch.Generator().manual_seed(seed)
    img_state = random_state(official_image_shapes(D, F_IMG, f30k), gen)
    txt_state = random_state(official_text_shapes(D, W_DIM, V), gen)
    data_name = "f30k_precomp" if f30k else "coco_precomp"
    path = write_checkpoint(tmp_path / f"{data_name}_model_best.pth.tar", img_state, txt_state,
                            official_opt(data_name, **opt_overrides))
    return path, img_state, txt_state


# ---------------------------------------------------------------------------------------------------------------
# Independent reference computation (float64) from the specification
# ---------------------------------------------------------------------------------------------------------------
def ref_l2norm(x, dim):
    return x / x.pow(2).sum(dim, keepdim=True).sqrt()  # official: no epsilon


def ref_conv1x1(x, weight, bias):
    """Conv1d(k=1) on channel-first x (B, C_in, N)."""
    return torch.einsum("oi,bin->bon", weight[:, :, 0], x) + bias[None, :, None]


def ref_bn_eval(x, state, prefix, channel_dim):
    shape = [1] * x.dim()
    shape[channel_dim] = -1
    g = {k: state[f"{prefix}.{k}"].double().view(shape) for k in ("weight", "bias", "running_mean", "running_var")}
    return (x - g["running_mean"]) / torch.sqrt(g["running_var"] + 1e-5) * g["weight"] + g["bias"]


def ref_gru_states(x, state, prefix):
    """PyTorch GRU equations, gate blocks [r | z | n], h0 = 0; returns all states (B, T, H)."""
    w_ih, w_hh = state[f"{prefix}.weight_ih_l0"].double(), state[f"{prefix}.weight_hh_l0"].double()
    b_ih, b_hh = state[f"{prefix}.bias_ih_l0"].double(), state[f"{prefix}.bias_hh_l0"].double()
    hidden = w_hh.shape[1]
    h = x.new_zeros(x.shape[0], hidden)
    out = []
    for t in range(x.shape[1]):
        gi, gh = x[:, t] @ w_ih.t() + b_ih, h @ w_hh.t() + b_hh
        r = torch.sigmoid(gi[:, :hidden] + gh[:, :hidden])
        z = torch.sigmoid(gi[:, hidden:2 * hidden] + gh[:, hidden:2 * hidden])
        n = torch.tanh(gi[:, 2 * hidden:] + r * gh[:, 2 * hidden:])
        h = (1 - z) * n + z * h
        out.append(h)
    return torch.stack(out, 1)


def ref_image_embedding(state, images, f30k: bool):
    s = {k: v.double() for k, v in state.items()}
    fc = images.double() @ s["fc.weight"].t() + s["fc.bias"]  # (B, N, D)
    if not f30k:
        fc = ref_l2norm(fc, 1)  # COCO path: along dim 1 = the region axis
    v = fc.permute(0, 2, 1)  # (B, D, N)
    for k in range(1, 5):
        p = f"Rs_GCN_{k}"
        g = ref_conv1x1(v, s[f"{p}.g.weight"], s[f"{p}.g.bias"]).permute(0, 2, 1)
        th = ref_conv1x1(v, s[f"{p}.theta.weight"], s[f"{p}.theta.bias"]).permute(0, 2, 1)
        ph = ref_conv1x1(v, s[f"{p}.phi.weight"], s[f"{p}.phi.bias"])
        r = th @ ph
        r = r / r.shape[-1]
        y = (r @ g).permute(0, 2, 1)
        wy = ref_bn_eval(ref_conv1x1(y, s[f"{p}.W.0.weight"], s[f"{p}.W.0.bias"]), s, f"{p}.W.1", 1)
        v = wy + v
    gcn = ref_l2norm(v.permute(0, 2, 1), 1)
    features = ref_gru_states(gcn, s, "img_rnn")[:, -1]
    if f30k:
        features = ref_bn_eval(features, s, "bn", 1)
    return ref_l2norm(features, 1)


def ref_text_embedding(state, tokens, lengths):
    emb = state["embed.weight"].double()[tokens]
    states = ref_gru_states(emb, state, "rnn")
    last = states[torch.arange(tokens.shape[0]), lengths - 1]
    return ref_l2norm(last, 1)


def example_inputs(seed: int = 1):
    gen = torch.Generator().manual_seed(seed)
    images = torch.randn(4, N_REGIONS, F_IMG, generator=gen).abs()
    lengths = torch.tensor([7, 9, 3, 5, 9, 4])
    tokens = torch.randint(4, V, (6, 9), generator=gen)
    tokens[:, 0] = 1
    for i, n in enumerate(lengths.tolist()):
        tokens[i, n - 1] = 2
        tokens[i, n:] = 0
    return images, tokens, lengths


# ---------------------------------------------------------------------------------------------------------------
# Tests
# ---------------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("f30k", [True, False], ids=["f30k", "coco"])
def test_converted_matches_reference(tmp_path, f30k):
    path, img_state, txt_state = make_official(tmp_path, f30k)
    model = load_official("vsrn", path)
    assert not model.training
    assert model.variant == ("f30k" if f30k else "coco")
    images, tokens, lengths = example_inputs()
    ours = split_similarity(model, images, tokens, lengths)
    ref = ref_image_embedding(img_state, images, f30k) @ ref_text_embedding(txt_state, tokens, lengths).t()
    assert ours.shape == (4, 6)
    assert (ours.double() - ref).abs().max().item() <= 1e-5
    # The two paths really differ (a COCO-path model must not reproduce an F30K checkpoint).
    other = ref_image_embedding(img_state, images, not f30k) if f30k else None
    if other is not None:
        assert (other @ ref_text_embedding(txt_state, tokens, lengths).t() - ref).abs().max() > 1e-3


def test_convert_returns_config_that_rebuilds_the_model(tmp_path):
    from temde.checkpoint import build_model

    path, _, _ = make_official(tmp_path, True)
    model, config = convert_vsrn(path)
    assert config["_target_"] == "temde.models.vsrn.VSRN"
    assert config["vocab_size"] == V and config["embed_size"] == D and config["img_dim"] == F_IMG
    assert config["variant"] == "f30k" and config["caption_branch"] is False
    rebuilt = build_model(config)
    rebuilt.load_state_dict(model.state_dict(), strict=True)


def test_exact_official_key_list_and_shapes():
    """Full-size official layout (docs/vsrn.md, "Official checkpoint format") maps one-to-one onto our model, for both paths."""
    for f30k, vocab, img_params, txt_params in ((True, 8481, 96_536_576, 16_982_700),
                                                (False, 10006, 96_532_480, 17_440_200)):
        img = {k: torch.empty(s, device="meta") for k, s in official_image_shapes(2048, 2048, f30k).items()}
        txt = {k: torch.empty(s, device="meta") for k, s in official_text_shapes(2048, 300, vocab).items()}
        assert sum(v.numel() for k, v in img.items()
                   if k.split(".")[-1] not in ("running_mean", "running_var", "num_batches_tracked")) == img_params
        assert sum(v.numel() for v in txt.values()) == txt_params
        mapped = {**map_image_keys(img, Path("x")), **map_text_keys(txt, Path("x"))}
        with torch.device("meta"):
            model = VSRN(vocab_size=vocab, variant="f30k" if f30k else "coco", caption_branch=False)
        ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
        assert ours == {k: tuple(v.shape) for k, v in mapped.items()}
        assert sum(p.numel() for p in model.img_enc.parameters()) == img_params
        assert sum(p.numel() for p in model.txt_enc.parameters()) == txt_params


def test_vocab_mismatch_is_an_error(tmp_path, reference_vocab_dir):
    VOCAB_DIR = reference_vocab_dir
    path, _, _ = make_official(tmp_path, True)
    with pytest.raises(ConversionError, match="has 8481 words but the checkpoint's embedding has 30"):
        convert_vsrn(path, vocab=VOCAB_DIR / "vsrn_f30k_precomp_vocab.pkl")
    with pytest.raises(ConversionError, match="10006 words"):
        load_official("vsrn", path, vocab=load_vsrn_vocab(VOCAB_DIR / "vsrn_coco_precomp_vocab.pkl"))
    convert_vsrn(path, vocab=list(range(V)))  # the right size is accepted
    bad_opt, _, _ = make_official(tmp_path, True, vocab_size=V + 1)
    with pytest.raises(ConversionError, match="opt.vocab_size"):
        convert_vsrn(bad_opt)


def test_dataset_path_mismatch_is_an_error(tmp_path):
    gen = torch.Generator().manual_seed(0)
    txt = random_state(official_text_shapes(D, W_DIM, V), gen)
    f30k_img = random_state(official_image_shapes(D, F_IMG, True), gen)
    coco_img = random_state(official_image_shapes(D, F_IMG, False), gen)
    # F30K weights (with bn.*) labelled COCO: the official loader would silently drop bn.*; we refuse.
    p = write_checkpoint(tmp_path / "a.pth.tar", f30k_img, txt, official_opt("coco_precomp"))
    with pytest.raises(ConversionError, match="COCO path.*bn"):
        convert_vsrn(p)
    p = write_checkpoint(tmp_path / "b.pth.tar", coco_img, txt, official_opt("f30k_precomp"))
    with pytest.raises(ConversionError, match="Flickr30K path"):
        convert_vsrn(p)


def test_strict_keys(tmp_path):
    gen = torch.Generator().manual_seed(0)
    txt = random_state(official_text_shapes(D, W_DIM, V), gen)
    img = random_state(official_image_shapes(D, F_IMG, True), gen)
    extra = OrderedDict(img, **{"Rs_GCN_1.extra.weight": torch.zeros(D)})
    with pytest.raises(ConversionError, match="not in the VSRN layout"):
        convert_vsrn(write_checkpoint(tmp_path / "x.pth.tar", extra, txt, official_opt("f30k_precomp")))
    missing = OrderedDict((k, v) for k, v in img.items() if k != "Rs_GCN_3.phi.bias")
    with pytest.raises(ConversionError, match="missing"):
        convert_vsrn(write_checkpoint(tmp_path / "y.pth.tar", missing, txt, official_opt("f30k_precomp")))
    with pytest.raises(ConversionError, match="list of 2 state dicts"):
        torch.save({"model": [img], "opt": official_opt("f30k_precomp")}, tmp_path / "z.pth.tar")
        convert_vsrn(tmp_path / "z.pth.tar")
    # num_batches_tracked absent (older torch): still loads.
    no_counter = OrderedDict((k, v) for k, v in img.items() if not k.endswith("num_batches_tracked"))
    convert_vsrn(write_checkpoint(tmp_path / "w.pth.tar", no_counter, txt, official_opt("f30k_precomp")))


class _Exploit:
    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_checkpoint_with_arbitrary_globals_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    gen = torch.Generator().manual_seed(0)
    img = random_state(official_image_shapes(D, F_IMG, True), gen)
    txt = random_state(official_text_shapes(D, W_DIM, V), gen)
    path = tmp_path / "evil.pth.tar"
    torch.save({"model": [img, txt], "opt": official_opt("f30k_precomp"), "payload": _Exploit(marker)}, path,
               _use_new_zipfile_serialization=False)
    with pytest.raises(InputError, match="safe loader"):
        convert_vsrn(path)
    assert not marker.exists()


# --- vocabulary pickles ------------------------------------------------------------------------------------------
@pytest.mark.parametrize(("name", "size", "checks"), [
    ("f30k", 8481, {"the": 2488, "a": 3256, "man": 4845, "dog": 4430, "woman": 7471, ".": 348, ",": 4313}),
    ("coco", 10006, {"the": 3228, "a": 8427, "man": 6374, "dog": 6260, "woman": 4727, ".": 97, ",": 8749}),
])
def test_official_vocab_pickles_load(name, size, checks, reference_vocab_dir):
    path = reference_vocab_dir / f"vsrn_{name}_precomp_vocab.pkl"
    vocab = load_vsrn_vocab(path)
    assert len(vocab) == size
    assert [vocab.word2idx[t] for t in ("<pad>", "<start>", "<end>", "<unk>")] == [0, 1, 2, 3]
    assert {w: vocab(w) for w in checks} == checks
    assert vocab("qwertyuiop") == 3


def test_malicious_vocab_pickle_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil_vocab.pkl"
    path.write_bytes(pickle.dumps(_Exploit(marker), protocol=2))
    with pytest.raises(UnsafePickleError, match=r"refusing to unpickle global (posix|os|nt)\.system"):
        load_vsrn_vocab(path)
    assert not marker.exists()
    # builtins other than plain containers are refused too
    evil = b"\x80\x02c__builtin__\neval\nq\x00X\x0b\x00\x00\x00__import__()q\x01\x85q\x02Rq\x03."
    path.write_bytes(evil)
    with pytest.raises(UnsafePickleError, match="__builtin__.eval"):
        load_vsrn_vocab(path)
    # a Vocabulary-named class from another module is refused
    path.write_bytes(b"\x80\x02cos\nVocabulary\nq\x00)\x81q\x01.")
    with pytest.raises(UnsafePickleError, match="os.Vocabulary"):
        load_vsrn_vocab(path)
