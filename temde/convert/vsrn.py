"""Official VSRN checkpoints (``model_best.pth.tar``, ``model_{coco,fliker}_{1,2}.pth.tar``) -> :class:`VSRN`.

File layout (docs/vsrn.md, "Official checkpoint format"): ``{'epoch', 'model': [image_encoder_state, text_encoder_state], 'best_rsum',
'opt': argparse.Namespace, 'Eiters'}``, written by Python 2 / torch 0.4.1 (legacy serialization, CUDA tensors).
The caption branch is not saved, so the converted model has none (``caption_branch=False``).

Safety: the file is read with ``torch.load(weights_only=True)`` and exactly one extra allow-listed global,
``argparse.Namespace`` (the pickled ``opt``); nothing else can be unpickled.

Strictness: the official loader silently drops checkpoint keys its model lacks, so a Flickr30K checkpoint loaded
as COCO loses its ``bn`` and changes its forward pass without a word. Here every key must map to exactly one of
our parameters and the other way round; the Flickr30K/COCO path (``opt.data_name``) must agree with the keys; the
vocabulary size must agree with ``opt.vocab_size`` and with the ``vocab`` given. Any disagreement is an error.
"""

from __future__ import annotations

import argparse
import re
from pathlib import Path
from typing import Any

from torch import Tensor

from temde.checkpoint import read_torch_file
from temde.data.vocab import load_vocab
from temde.errors import InputError
from temde.models.vsrn import VSRN

TARGET = "temde.models.vsrn.VSRN"
# opt.data_name of the Flickr30K path (official code: `data_name == 'f30k_precomp'` selects it, docs/vsrn.md, "Two official paths").
F30K_DATA_NAME = "f30k_precomp"
_GCN_KEY = re.compile(r"^Rs_GCN_(\d+)\.(g|theta|phi|W\.0|W\.1)\.(.+)$")
_GCN_PARTS = {"g": "g", "theta": "theta", "phi": "phi", "W.0": "proj", "W.1": "bn"}
_CONV_PARTS = ("g", "theta", "phi", "W.0")  # Conv1d(k=1) weights (out, in, 1) -> Linear (out, in)


class ConversionError(InputError):
    """The checkpoint does not match the VSRN layout we convert; the message says what and where."""

    def __init__(self, message: str) -> None:
        super().__init__(None, message)  # messages start with the file name


def read_official_checkpoint(path: str | Path) -> dict[str, Any]:
    """torch.load with weights_only=True plus ``argparse.Namespace``; returns the raw checkpoint dict."""
    ckpt = read_torch_file(path, [argparse.Namespace], what="an official VSRN checkpoint (a torch.save-d dict "
                           "with 'model' and 'opt')", hint="the safe loader reads tensors, dicts and argparse.Namespace only")
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ConversionError(f"{path}: expected a dict with a 'model' entry (official VSRN save_checkpoint)")
    model = ckpt["model"]
    if not isinstance(model, (list, tuple)) or len(model) != 2 or not all(isinstance(s, dict) for s in model):
        raise ConversionError(
            f"{path}: 'model' must be a list of 2 state dicts [image encoder, text encoder] (official VSRN); "
            f"found {type(model).__name__} of length {len(model) if hasattr(model, '__len__') else '?'}"
        )
    return ckpt


def _opt_dict(opt: Any) -> dict[str, Any]:
    if opt is None:
        return {}
    items = vars(opt) if isinstance(opt, argparse.Namespace) else dict(opt)
    return {k: v.decode("utf-8") if isinstance(v, bytes) else v for k, v in items.items()}


def _vocab_len(vocab: Any) -> int | None:
    if vocab is None:
        return None
    if isinstance(vocab, (str, Path)):
        vocab = load_vocab(vocab)
    if isinstance(vocab, dict) and isinstance(vocab.get("word2idx"), dict):
        vocab = vocab["word2idx"]
    return len(vocab)


def _variant(opt: dict[str, Any], has_bn: bool, path: Path) -> str:
    data_name = opt.get("data_name")
    if data_name is None:
        return "f30k" if has_bn else "coco"
    variant = "f30k" if data_name == F30K_DATA_NAME else "coco"
    if variant == "f30k" and not has_bn:
        raise ConversionError(
            f"{path}: opt.data_name={data_name!r} selects the Flickr30K path, which needs the image encoder's "
            "bn.* keys, but the checkpoint has none (a COCO-path checkpoint?)"
        )
    if variant == "coco" and has_bn:
        raise ConversionError(
            f"{path}: opt.data_name={data_name!r} selects the COCO path, but the image encoder has bn.* keys "
            "(a Flickr30K-path checkpoint?); the official loader would silently drop them and change the model"
        )
    return variant


def map_image_keys(state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Official ``EncoderImagePrecompAttn`` keys -> ours (under ``img_enc.``); unknown keys are an error."""
    out: dict[str, Tensor] = {}
    unknown = []
    for key, value in state.items():
        if key.startswith(("fc.", "img_rnn.", "bn.")):
            out[f"img_enc.{key}"] = value
            continue
        match = _GCN_KEY.match(key)
        if match is None:
            unknown.append(key)
            continue
        index, part, leaf = int(match.group(1)), match.group(2), match.group(3)
        if part in _CONV_PARTS and leaf == "weight":
            if value.dim() != 3 or value.shape[-1] != 1:
                raise ConversionError(f"{path}: {key} should be a Conv1d(k=1) weight (out, in, 1), "
                                      f"got {tuple(value.shape)}")
            value = value[..., 0]
        out[f"img_enc.reasoning.blocks.{index - 1}.{_GCN_PARTS[part]}.{leaf}"] = value
    if unknown:
        raise ConversionError(f"{path}: image encoder keys not in the VSRN layout: {sorted(unknown)}")
    return out


def map_text_keys(state: dict[str, Tensor], path: Path) -> dict[str, Tensor]:
    """Official ``EncoderText`` keys -> ours (under ``txt_enc.``)."""
    unknown = [k for k in state if not k.startswith(("embed.", "rnn."))]
    if unknown:
        raise ConversionError(f"{path}: text encoder keys not in the VSRN layout: {sorted(unknown)}")
    return {f"txt_enc.{k}": v for k, v in state.items()}


def model_config_from_checkpoint(ckpt: dict[str, Any], path: Path, vocab: Any = None) -> dict[str, Any]:
    """Our VSRN kwargs (+ ``_target_``) from the weights' shapes, cross-checked against ``opt``."""
    img_state, txt_state = ckpt["model"]
    opt = _opt_dict(ckpt.get("opt"))
    for key in ("fc.weight", "img_rnn.weight_hh_l0"):
        if key not in img_state:
            raise ConversionError(f"{path}: image encoder state lacks {key!r}; not a VSRN checkpoint")
    if "embed.weight" not in txt_state:
        raise ConversionError(f"{path}: text encoder state lacks 'embed.weight'; not a VSRN checkpoint")
    embed_size, img_dim = img_state["fc.weight"].shape
    vocab_size, word_dim = txt_state["embed.weight"].shape
    num_layers = len([k for k in txt_state if k.startswith("rnn.weight_ih_l")])
    blocks = sorted({int(m.group(1)) for k in img_state if (m := _GCN_KEY.match(k))})
    if blocks != list(range(1, len(blocks) + 1)):
        raise ConversionError(f"{path}: Rs_GCN blocks must be numbered 1..n, found {blocks}")

    checks = {"embed_size": embed_size, "img_dim": img_dim, "word_dim": word_dim, "vocab_size": vocab_size,
              "num_layers": num_layers}
    for name, value in checks.items():
        if name in opt and int(opt[name]) != int(value):
            raise ConversionError(f"{path}: opt.{name}={opt[name]} but the weights imply {value}")
    for name, expected in (("measure", "cosine"), ("use_abs", False), ("no_imgnorm", False)):
        if name in opt and opt[name] != expected:
            raise ConversionError(f"{path}: opt.{name}={opt[name]!r}; only {expected!r} (the released setting) "
                                  "is supported")
    n_vocab = _vocab_len(vocab)
    if n_vocab is not None and n_vocab != vocab_size:
        raise ConversionError(
            f"{path}: the vocabulary given has {n_vocab} words but the checkpoint's embedding has {vocab_size} "
            f"rows (opt.data_name={opt.get('data_name')!r}); use that dataset's VSRN vocabulary "
            "(vsrn_f30k_precomp_vocab.pkl: 8481 words, vsrn_coco_precomp_vocab.pkl: 10006 words)"
        )
    has_bn = any(k.startswith("bn.") for k in img_state)
    config: dict[str, Any] = {
        "_target_": TARGET,
        "vocab_size": int(vocab_size),
        "img_dim": int(img_dim),
        "embed_size": int(embed_size),
        "word_dim": int(word_dim),
        "num_layers": int(num_layers),
        "variant": _variant(opt, has_bn, path),
        "num_gcn_blocks": len(blocks),
        "sketch": "none",
        "caption_branch": False,  # not in released checkpoints
    }
    # Caption-branch options: recorded so a converted model can be fine-tuned with the branch switched on.
    for name, cast in (("max_len", int), ("dim_hidden", int), ("dim_word", int), ("input_dropout_p", float)):
        if name in opt:
            config[name] = cast(opt[name])
    return config


def convert_vsrn(path: str | Path, vocab: Any = None) -> tuple[VSRN, dict[str, Any]]:
    """Official VSRN checkpoint -> (our VSRN in eval mode, its ``model_config``).

    ``vocab`` (optional): a Vocabulary / anything with ``len``, or a vocabulary file path (.pkl or .json);
    its size must equal the checkpoint's embedding rows.
    """
    path = Path(path)
    ckpt = read_official_checkpoint(path)
    config = model_config_from_checkpoint(ckpt, path, vocab)
    img_state, txt_state = ckpt["model"]
    state = {**map_image_keys(img_state, path), **map_text_keys(txt_state, path)}

    model = VSRN(**{k: v for k, v in config.items() if k != "_target_"})
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    # BatchNorm.num_batches_tracked may be absent from older files; torch fills it in on load.
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith("num_batches_tracked"))
    wrong_shape = sorted(f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(expected[k].shape)}"
                         for k, v in state.items() if k in expected and v.shape != expected[k].shape)
    if unexpected or missing or wrong_shape:
        raise ConversionError(f"{path}: checkpoint does not match VSRN({config['variant']}): "
                              f"unexpected {unexpected}, missing {missing}, wrong shape {wrong_shape}")
    model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    model.eval()
    return model, config
