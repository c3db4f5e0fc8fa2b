"""Upgrade ``model_config`` dicts of checkpoints written before the ``global`` config group.

Until then the global pooling was chosen by ``global_encoder`` (SGRAF: ``sa|temde|mhsa|mean``; VSRN:
``gcn|temde`` with ``temde_mode: additive|replace``) and configured by a ``temde`` dict (stored by every
checkpoint, used or not) and ``global_encoder_kwargs``. Now one ``global_pooling`` spec ``{"kind": ..., **options}``
is stored only by the models that use it, and VSRN's switch is ``sketch: none|additive|replace``. Weights are
unchanged (the module names are the same), so only the config needs mapping. Pure dict work: no code from the
file is ever run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

SGRAF_TARGET = "temde.models.sgraf.SGRAF"
VSRN_TARGET = "temde.models.vsrn.VSRN"
_OLD_KEYS = ("global_encoder", "temde", "global_encoder_kwargs", "temde_mode")


def upgrade_model_config(config: Any) -> Any:
    """New-style copy of a (possibly old) ``model_config``; configs without old keys (or that are not dicts, which
    the checkpoint reader rejects) come back unchanged."""
    if not isinstance(config, Mapping):
        return config
    config = dict(config)
    if not any(key in config for key in _OLD_KEYS):
        return config
    target = config.get("_target_")
    kind = config.pop("global_encoder", None)
    temde = dict(config.pop("temde", None) or {})
    kwargs = dict(config.pop("global_encoder_kwargs", None) or {})
    mode = config.pop("temde_mode", "additive")
    if target == SGRAF_TARGET:
        kind = kind or "sa"
        options = temde if kind == "temde" else kwargs if kind in ("mhsa", "mean") else {}
        config["global_pooling"] = {"kind": kind, **options}
    elif target == VSRN_TARGET:
        if kind == "temde":
            config["sketch"] = mode
            config["global_pooling"] = {"kind": "temde", **temde}
        else:  # official GCN model: the sketch options were stored but dead
            config["sketch"] = "none"
            config.pop("temde_weight", None)
            config.pop("learn_temde_weight", None)
    return config
