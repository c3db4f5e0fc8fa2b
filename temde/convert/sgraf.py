"""Official SGRAF checkpoints (``model_best.pth.tar``, python3.6 branch) -> :class:`temde.models.sgraf.SGRAF`.

The official file is a ``torch.save``-d dict ``{'epoch', 'model': [img_enc_sd, txt_enc_sd, sim_enc_sd],
'best_rsum', 'opt': argparse.Namespace, 'Eiters'}`` (docs/sgraf.md, "Official checkpoint format"). It is read with
``torch.load(weights_only=True)`` and only ``argparse.Namespace`` (plus NumPy scalar types, which numeric
options may carry) allow-listed via ``torch.serialization.safe_globals``: nothing else is unpickled. Our
model uses the official submodule names under the prefixes ``img_enc.`` / ``txt_enc.`` / ``sim_enc.``, so the
mapping is a prefix per list entry, loaded strictly (the official ``EncoderImage`` silently drops unknown keys;
we report them).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from temde.checkpoint import read_torch_file
from temde.data.vocab import load_vocab
from temde.errors import InputError
from temde.models.sgraf import SGRAF

PREFIXES = ("img_enc", "txt_enc", "sim_enc")  # order of the official ``model`` list
# opts.py option -> SGRAF constructor argument (same names, listed for the clear error if one is missing)
OPTION_KEYS = ("vocab_size", "img_dim", "word_dim", "embed_size", "sim_dim", "num_layers", "bi_gru", "module_name",
               "sgr_step")
TARGET = "temde.models.sgraf.SGRAF"
OFFICIAL_WHAT = "an official SGRAF checkpoint readable without unpickling code (a torch.save-d dict with 'model' and 'opt')"
OFFICIAL_HINT = "only tensors, containers, argparse.Namespace and NumPy scalars are loaded"


def _safe_globals() -> list[Any]:
    allowed: list[Any] = [argparse.Namespace, np.dtype]
    try:  # NumPy 2 moved ``numpy.core`` to ``numpy._core``; scalars pickle through ``multiarray.scalar``
        from numpy._core.multiarray import scalar
    except ImportError:  # pragma: no cover - NumPy 1.x
        from numpy.core.multiarray import scalar  # type: ignore[no-redef]
    allowed.append(scalar)
    allowed.extend(type(np.dtype(t)) for t in ("float64", "float32", "int64", "int32", "bool"))
    return allowed


def read_official_checkpoint(path: str | Path) -> dict[str, Any]:
    """``torch.load`` an official SGRAF/VSRN-style checkpoint safely (allow-listed ``argparse.Namespace``)."""
    ckpt = read_torch_file(path, _safe_globals(), what=OFFICIAL_WHAT, hint=OFFICIAL_HINT)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "opt" not in ckpt:
        found = sorted(ckpt) if isinstance(ckpt, dict) else type(ckpt).__name__
        raise InputError(path, f"expected an official checkpoint dict with 'model' and 'opt', found {found}")
    return ckpt


def read_word2idx(vocab: Any) -> dict[str, int] | None:
    """Accept a vocab JSON path (official ``{"word2idx": ...}`` format or a flat dict), a dict, or an object
    with ``word2idx`` (``temde.data.vocab.Vocabulary``)."""
    if vocab is None:
        return None
    if isinstance(vocab, (str, Path)):
        if Path(vocab).suffix == ".pkl" or not Path(vocab).is_file():
            return dict(load_vocab(vocab).word2idx)  # VSRN pickle (restricted unpickler) / clear not-found line
        try:
            data = json.loads(Path(vocab).read_text(encoding="utf-8"))
            data = data.get("word2idx", data) if isinstance(data, dict) else data
            if not isinstance(data, dict):
                raise TypeError("no 'word2idx' mapping")
            return {str(k): int(v) for k, v in data.items()}
        except (json.JSONDecodeError, UnicodeDecodeError, TypeError, ValueError, AttributeError) as err:
            raise InputError(vocab, f"expected a vocabulary JSON with a 'word2idx' mapping ({err})") from err
    if isinstance(vocab, Mapping):
        return {str(k): int(v) for k, v in vocab.get("word2idx", vocab).items()}
    if hasattr(vocab, "word2idx"):
        return dict(vocab.word2idx)
    raise TypeError(f"vocab must be a JSON path, a word2idx dict or a Vocabulary, got {type(vocab).__name__}")


def model_config_from_opt(opt: argparse.Namespace, path: str | Path = "<checkpoint>") -> dict[str, Any]:
    """Our ``model_config`` (``_target_`` + kwargs) from the checkpoint's pickled options."""
    missing = [k for k in OPTION_KEYS if not hasattr(opt, k)]
    if missing:
        raise ValueError(f"{path}: the checkpoint's 'opt' lacks options {missing} needed to build SGRAF")
    if getattr(opt, "no_imgnorm", False) or getattr(opt, "no_txtnorm", False):
        raise ValueError(f"{path}: checkpoints trained with --no_imgnorm / --no_txtnorm are not supported")
    if opt.module_name not in ("SGR", "SAF"):
        raise ValueError(f"{path}: opt.module_name must be 'SGR' or 'SAF', found {opt.module_name!r}")
    config: dict[str, Any] = {"_target_": TARGET}
    for key in OPTION_KEYS:
        value = getattr(opt, key)
        config[key] = value.item() if isinstance(value, np.generic) else value
    config.update(global_pooling={"kind": "sa"})
    return config


def map_state_dicts(state_dicts: Any, path: str | Path = "<checkpoint>") -> dict[str, torch.Tensor]:
    """The official list of 3 state dicts -> one flat state dict with our prefixes."""
    if not isinstance(state_dicts, (list, tuple)) or len(state_dicts) != len(PREFIXES):
        raise ValueError(f"{path}: 'model' must be a list of 3 state dicts (img_enc, txt_enc, sim_enc), found "
                         f"{type(state_dicts).__name__} of length {len(state_dicts) if hasattr(state_dicts, '__len__') else '?'}")
    return {f"{prefix}.{key}": value for prefix, sd in zip(PREFIXES, state_dicts) for key, value in sd.items()}


def load_strict(model: torch.nn.Module, state: dict[str, torch.Tensor], path: str | Path) -> None:
    """Strict load with one readable error listing missing / unexpected / mis-shaped keys."""
    ours = model.state_dict()
    missing = sorted(set(ours) - set(state))
    unexpected = sorted(set(state) - set(ours))
    shapes = [f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(ours[k].shape)}"
              for k in sorted(set(ours) & set(state)) if tuple(state[k].shape) != tuple(ours[k].shape)]
    if missing or unexpected or shapes:
        raise ValueError(f"{path}: state dict does not match SGRAF({model.module_name}): missing keys {missing}, "
                         f"unexpected keys {unexpected}, shape mismatches {shapes}")
    model.load_state_dict(state, strict=True)


def convert_sgraf(path: str | Path, vocab: Any = None) -> tuple[SGRAF, dict[str, Any]]:
    """Build our SGRAF from an official checkpoint; returns (model in eval mode, model_config).

    ``vocab`` (optional: vocab JSON path, word2idx dict or Vocabulary) is checked against the checkpoint: its size
    must equal ``opt.vocab_size`` and the rows of ``embed.weight``.
    """
    ckpt = read_official_checkpoint(path)
    config = model_config_from_opt(ckpt["opt"], path)
    state = map_state_dicts(ckpt["model"], path)
    embed = state.get("txt_enc.embed.weight")
    if embed is not None and embed.shape[0] != config["vocab_size"]:
        raise ValueError(f"{path}: embed.weight has {embed.shape[0]} rows but opt.vocab_size = "
                         f"{config['vocab_size']}")
    word2idx = read_word2idx(vocab)
    if word2idx is not None:
        if len(word2idx) != config["vocab_size"] or max(word2idx.values()) != config["vocab_size"] - 1:
            raise ValueError(
                f"vocabulary size mismatch: the given vocab has {len(word2idx)} words (max id "
                f"{max(word2idx.values())}) but {path} was trained with vocab_size = {config['vocab_size']} "
                "(f30k: 8481, coco: 11353 with the shipped SCAN vocab JSONs)"
            )
    model = SGRAF(**{k: v for k, v in config.items() if k != "_target_"})
    load_strict(model, state, path)
    model.eval()
    return model, config


def official_meta(path: str | Path) -> dict[str, Any]:
    """Provenance fields worth keeping in our checkpoint's ``meta`` (epoch, best dev rsum, data name)."""
    ckpt = read_official_checkpoint(path)
    opt = ckpt["opt"]
    meta = {"source": str(path), "epoch": ckpt.get("epoch"), "best_rsum": ckpt.get("best_rsum"),
            "data_name": getattr(opt, "data_name", None)}
    return {k: (v.item() if isinstance(v, np.generic) else v) for k, v in meta.items()}
