"""Loading other people's weights: official SGRAF / VSRN checkpoints -> our models.

``load_official(kind, path, vocab=None)`` dispatches to the per-backbone converter, each in its own module
(``temde.convert.sgraf``, ``temde.convert.vsrn``). Every converter reads the file without arbitrary
unpickling (allow-listed globals only), maps keys strictly and returns the model in eval mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from temde.convert.sgraf import convert_sgraf
from temde.convert.vsrn import convert_vsrn
from temde.errors import InputError

KINDS = ("sgraf", "vsrn")


def load_official(kind: str, path: str | Path, vocab: Any = None) -> nn.Module:
    """Build our model from an official ``model_best.pth.tar`` of ``kind`` ('sgraf' or 'vsrn')."""
    return convert_official(kind, path, vocab)[0]


def convert_official(kind: str, path: str | Path, vocab: Any = None) -> tuple[nn.Module, dict[str, Any]]:
    """Like :func:`load_official` but also returns the ``model_config`` needed to save our checkpoint."""
    kind = kind.lower()
    if kind == "sgraf":
        return convert_sgraf(path, vocab)
    if kind == "vsrn":
        return convert_vsrn(path, vocab)
    raise InputError("kind", f"unknown checkpoint kind {kind!r}; expected one of {KINDS}")
