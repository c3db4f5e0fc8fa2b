"""Our portable model checkpoint: config + weights + vocabulary, loadable without unpickling code.

Written by training (best/last export), by ``python -m temde.convert`` and read by ``python -m temde.evaluate``.
Format (a plain dict, safe for ``torch.load(weights_only=True)``)::

    {"format": "temde-model-v1",
     "model_config": {"_target_": "temde.models....", **kwargs},   # hydra.utils.instantiate-able
     "state_dict": {...},
     "word2idx": {word: id} | None,                                # the vocabulary the ids refer to
     "meta": {...}}                                                # provenance: source file, metrics, ...

Lightning ``.ckpt`` files written by :mod:`temde.lightning` are accepted too (``model_config`` in their
hyper-parameters, ``word2idx`` at the top level).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from temde.models.legacy import upgrade_model_config

FORMAT = "temde-model-v1"


def build_model(model_config: dict[str, Any]) -> nn.Module:
    """Instantiate a model from its config dict (``_target_`` + keyword arguments)."""
    from hydra.utils import instantiate

    return instantiate(dict(model_config), _convert_="all")


def save_model(
    path: str | Path,
    model: nn.Module,
    model_config: dict[str, Any],
    word2idx: dict[str, int] | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "model_config": dict(model_config),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "word2idx": dict(word2idx) if word2idx is not None else None,
        "meta": dict(meta or {}),
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)  # atomic: an interrupted save never leaves a truncated checkpoint behind
    return path


def load_model(path: str | Path, map_location: str | torch.device = "cpu") -> tuple[nn.Module, dict[str, Any]]:
    """Load a temde checkpoint or a Lightning ``.ckpt`` of ours; returns (model in eval mode, payload)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as err:  # noqa: BLE001 - re-raised with the file name and what to do
        raise ValueError(
            f"{path} is not a temde checkpoint readable without unpickling code ({err.__class__.__name__}). "
            "Official SGRAF/VSRN checkpoints must be converted first: python -m temde.convert {sgraf|vsrn} "
            f"{path} <out.ckpt>"
        ) from err
    if not isinstance(payload, dict):
        raise ValueError(f"{path}: expected a dict checkpoint, found {type(payload).__name__}")
    if payload.get("format") == FORMAT:
        config, state, word2idx = payload["model_config"], payload["state_dict"], payload.get("word2idx")
    elif "hyper_parameters" in payload and "model_config" in payload["hyper_parameters"]:
        hp = payload["hyper_parameters"]
        config, word2idx = hp["model_config"], payload.get("word2idx")
        state = {k[len("model.") :]: v for k, v in payload["state_dict"].items() if k.startswith("model.")}
        payload = {"format": "lightning", "model_config": config, "word2idx": word2idx,
                   "meta": {"epoch": payload.get("epoch"), "global_step": payload.get("global_step")}}
    else:
        raise ValueError(
            f"{path}: not a temde checkpoint (no 'format': '{FORMAT}' and no Lightning hyper_parameters). "
            "Official checkpoints are converted with: python -m temde.convert {sgraf|vsrn} <in> <out>"
        )
    model = build_model(upgrade_model_config(config))
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, payload
