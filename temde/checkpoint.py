"""Our portable model checkpoint: config + weights + vocabulary, loadable without running code from the file.

Written by training (best/last export), by ``python -m temde.convert`` and read by ``python -m temde.evaluate``.
Format (a plain dict, safe for ``torch.load(weights_only=True)``)::

    {"format": "temde-model-v1",
     "model_config": {"_target_": "temde.models....", **kwargs},   # one of MODEL_CLASSES + plain-typed kwargs
     "state_dict": {...},
     "word2idx": {word: id} | None,                                # the vocabulary the ids refer to
     "meta": {...}}                                                # provenance: source file, metrics, ...

Lightning ``.ckpt`` files written by :mod:`temde.lightning` are accepted too (``model_config`` in their
hyper-parameters, ``word2idx`` at the top level).

Safety: checkpoints are shared between researchers, so a file only ever supplies *data*. It is read with
``torch.load(weights_only=True)`` (tensors and plain containers; any pickled global is refused), its
``_target_`` is looked up in :data:`MODEL_CLASSES` (never imported or instantiated by name), and every
constructor argument must be a parameter of that class and a plain value (no nested ``_target_``).
"""

from __future__ import annotations

import inspect
import os
import re
import tempfile
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from temde.errors import InputError
from temde.models.baseline import MeanPoolBaseline
from temde.models.legacy import upgrade_model_config
from temde.models.sgraf import SGRAF
from temde.models.vsrn import VSRN

FORMAT = "temde-model-v1"
# The only classes a checkpoint may ask for, by the ``_target_`` string our configs use.
MODEL_CLASSES: dict[str, type[nn.Module]] = {
    "temde.models.sgraf.SGRAF": SGRAF,
    "temde.models.vsrn.VSRN": VSRN,
    "temde.models.baseline.MeanPoolBaseline": MeanPoolBaseline,
}
CONVERT_HINT = "official SGRAF/VSRN checkpoints are converted first: python -m temde.convert {sgraf|vsrn} <in> <out>"
_PLAIN = (str, int, float, bool, type(None))


def _check_plain(value: Any, where: str, key: str) -> None:
    """Constructor values are data: scalars, lists and str-keyed dicts of them, never a ``_target_``."""
    if isinstance(value, _PLAIN):
        return
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, where, f"{key}[{i}]")
        return
    if isinstance(value, Mapping):
        for k, item in value.items():
            if not isinstance(k, str):
                raise InputError(where, f"model_config.{key} has a non-string key {k!r}; expected plain options")
            if k in ("_target_", "_partial_", "_args_"):
                raise InputError(where, f"model_config.{key} contains {k!r}; nested objects are not allowed in a "
                                        "checkpoint, only plain option values")
            _check_plain(item, where, f"{key}.{k}")
        return
    raise InputError(where, f"model_config.{key} is a {type(value).__name__}; expected a plain value "
                            "(str, number, bool, None, list or dict of those)")


def model_class(model_config: Mapping[str, Any], where: str | Path = "model_config") -> type[nn.Module]:
    """The allow-listed class named by ``_target_``, after validating every argument against its signature."""
    if not isinstance(model_config, Mapping):
        raise InputError(where, f"model_config is a {type(model_config).__name__}; expected a dict")
    target = model_config.get("_target_")
    if target not in MODEL_CLASSES:
        raise InputError(where, f"model_config._target_ is {target!r}; expected one of the project's model "
                                f"classes {sorted(MODEL_CLASSES)}")
    cls = MODEL_CLASSES[target]
    params = inspect.signature(cls.__init__).parameters
    kwargs = {k: v for k, v in model_config.items() if k != "_target_"}
    for key, value in kwargs.items():
        if not isinstance(key, str) or key not in params or key == "self":
            raise InputError(where, f"model_config has {key!r}, which is not an argument of {target} "
                                    f"(expected some of {sorted(p for p in params if p != 'self')})")
        _check_plain(value, str(where), key)
    missing = [n for n, p in params.items() if n != "self" and p.default is inspect.Parameter.empty
               and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and n not in kwargs]
    if missing:
        raise InputError(where, f"model_config lacks required arguments {missing} of {target}")
    return cls


def build_model(model_config: Mapping[str, Any], where: str | Path = "model_config") -> nn.Module:
    """Build a model from its config dict (``_target_`` + keyword arguments) through the allow-list only."""
    cls = model_class(model_config, where)
    return cls(**{k: v for k, v in model_config.items() if k != "_target_"})


def read_torch_file(path: str | Path, safe_globals: Iterable[Any] = (), what: str = "a temde checkpoint",
                    hint: str = CONVERT_HINT) -> Any:
    """``torch.load(weights_only=True)`` (+ the given allow-listed globals) with one clear error per failure.

    A pickle naming any other Python object is refused before it runs (the message names the object); a file
    that is not a complete PyTorch archive is reported as truncated or corrupt, not as a format mismatch.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, f"file not found (expected {what})")
    try:
        with torch.serialization.safe_globals(list(safe_globals)):
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - every failure becomes one line naming the file
        text = str(err)
        if "Weights only load failed" in text or "Unsupported global" in text:
            found = re.search(r"(?:GLOBAL|global:?)\s+([\w.]+)", text)
            obj = f" ({found.group(1)})" if found else ""
            raise InputError(path, f"refusing to load: the file names a Python object{obj} outside the allowed "
                                   f"tensors and plain containers; expected {what}; {hint}") from err
        size = path.stat().st_size
        raise InputError(path, f"truncated or corrupt ({size} bytes; {err.__class__.__name__}: "
                               f"{text.splitlines()[0][:120] if text else 'no detail'}); expected {what} — "
                               "re-copy or re-create the file") from err


def save_model(
    path: str | Path,
    model: nn.Module,
    model_config: dict[str, Any],
    word2idx: dict[str, int] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write our checkpoint atomically (unique temporary name in the same folder, then rename)."""
    path = Path(path)
    model_class(model_config, "model_config")  # never write a checkpoint that load_model would refuse
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "model_config": dict(model_config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "word2idx": dict(word2idx) if word2idx is not None else None,
        "meta": dict(meta or {}),
    }
    atomic_torch_save(payload, path)
    return path


def atomic_torch_save(payload: Any, path: Path) -> None:
    """An interrupted save never leaves a truncated file at ``path`` (nor clobbers an existing one)."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(payload, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Validated payload of our format or a Lightning ``.ckpt`` of ours, without building the model.

    Returns ``{"format", "model_config", "state_dict", "word2idx", "meta"}``; ``model_config`` is checked
    against the allow-list, ``word2idx`` against the model's embedding rows.
    """
    path = Path(path)
    payload = read_torch_file(path)
    if not isinstance(payload, dict):
        raise InputError(path, f"found a {type(payload).__name__}; expected {FORMAT} or Lightning checkpoint dict")
    if payload.get("format") == FORMAT:
        config, state, word2idx = payload.get("model_config"), payload.get("state_dict"), payload.get("word2idx")
        meta = payload.get("meta") or {}
    elif isinstance(payload.get("hyper_parameters"), dict) and "model_config" in payload["hyper_parameters"]:
        config, word2idx = payload["hyper_parameters"]["model_config"], payload.get("word2idx")
        raw = payload.get("state_dict")
        state = ({k[len("model."):]: v for k, v in raw.items() if isinstance(k, str) and k.startswith("model.")}
                 if isinstance(raw, dict) else raw)
        meta = {"epoch": payload.get("epoch"), "global_step": payload.get("global_step")}
        payload = {"format": "lightning"}
    else:
        raise InputError(path, f"not a temde checkpoint (expected 'format': '{FORMAT}' or Lightning "
                               f"hyper_parameters with a model_config); {CONVERT_HINT}")
    config = upgrade_model_config(config)  # checkpoints written before the `global` config group
    model_class(config, path)
    if not isinstance(state, dict) or not all(isinstance(k, str) and isinstance(v, torch.Tensor)
                                              for k, v in state.items()):
        raise InputError(path, "state_dict must map parameter names to tensors")
    word2idx = _check_word2idx(word2idx, config, path)
    return {"format": payload["format"], "model_config": dict(config), "state_dict": state,
            "word2idx": word2idx, "meta": meta if isinstance(meta, dict) else {}}


def read_resume_checkpoint(path: str | Path) -> dict[str, Any]:
    """Check a ``ckpt_path`` before Lightning resumes from it: a Lightning checkpoint of ours, safe to read."""
    payload = read_checkpoint(path)
    if payload["format"] != "lightning":
        raise InputError(path, f"is a {payload['format']} model export; expected a Lightning training checkpoint "
                               "(<run>/checkpoints/last.ckpt) to resume from")
    return payload


def _check_word2idx(word2idx: Any, config: Mapping[str, Any], path: Path) -> dict[str, int] | None:
    if word2idx is None:
        return None
    if not isinstance(word2idx, dict) or not all(isinstance(w, str) and type(i) is int for w, i in word2idx.items()):
        raise InputError(path, "word2idx must map words (str) to ids (int)")
    rows = config.get("vocab_size")
    if isinstance(rows, int) and word2idx and max(word2idx.values()) >= rows:
        raise InputError(path, f"the stored vocabulary has ids up to {max(word2idx.values())} but the model has "
                               f"{rows} embedding rows (vocab_size); expected every id < {rows}")
    return dict(word2idx)


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a temde checkpoint or a Lightning ``.ckpt`` of ours; returns (model in eval mode, payload)."""
    payload = read_checkpoint(path)
    model = build_model(payload["model_config"], path)
    try:
        model.load_state_dict(payload["state_dict"], strict=True)
    except RuntimeError as err:
        raise InputError(path, f"weights do not match {payload['model_config']['_target_']} built from its own "
                               f"model_config: {' '.join(str(err).split())[:300]}") from err
    model.to(map_location).eval()
    return model, payload


def checkpoint_vocabulary(path: str | Path, payload: Mapping[str, Any],
                          vocab: Mapping[str, int] | None = None,
                          vocab_path: str | Path | None = None) -> dict[str, int]:
    """The word2idx to encode captions with for this checkpoint.

    The checkpoint's own vocabulary wins; a vocabulary given explicitly (``vocab``, read from ``vocab_path``)
    must equal it. A checkpoint without one (converted without ``--vocab``) needs the explicit one: the data's
    vocabulary would silently give the embedding rows other meanings.
    """
    stored = payload.get("word2idx")
    if stored is None:
        if vocab is None:
            raise InputError(path, "carries no vocabulary (converted without --vocab); expected one: re-convert "
                                   "with --vocab <vocab.json|.pkl>, or pass vocab=<file> to evaluate")
        _check_word2idx(dict(vocab), payload["model_config"], Path(path))
        return dict(vocab)
    if vocab is not None and dict(vocab) != dict(stored):
        differ = sorted(w for w in set(stored) | set(vocab) if stored.get(w) != vocab.get(w))
        raise InputError(path, f"its stored vocabulary ({len(stored)} words) differs from {vocab_path or 'vocab'} "
                               f"({len(vocab)} words; e.g. {differ[:3]}); expected the vocabulary the model "
                               "was trained with")
    return dict(stored)
