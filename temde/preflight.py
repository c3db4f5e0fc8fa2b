"""Checks of the composed config's options before any long work (the data files: :mod:`temde.data.validate`).

Why: a typo in an option must fail in seconds, as one line naming the option, not as a bare assertion inside
Lightning or after hours of training.
"""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from temde.errors import InputError
from temde.retrieval import PRECISIONS


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_int(cfg: DictConfig, key: str, minimum: int | None = None, allow_none: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if value is None and allow_none:
        return
    if not _is_int(value) or (minimum is not None and value < minimum):
        bound = f" >= {minimum}" if minimum is not None else ""
        raise InputError(key, f"an integer{bound} (got {value!r})")


def check_number(cfg: DictConfig, key: str, positive: bool = False) -> None:
    value = OmegaConf.select(cfg, key)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (positive and value <= 0):
        raise InputError(key, f"a {'positive ' if positive else ''}number (got {value!r})")


def check_train_options(cfg: DictConfig) -> None:
    """The options Lightning and the optimiser would otherwise reject late or with a bare assertion."""
    check_int(cfg, "seed")
    check_int(cfg, "trainer.max_epochs", minimum=-1, allow_none=True)
    check_int(cfg, "data.batch_size", minimum=1)
    check_number(cfg, "optim.lr", positive=True)
    check_int(cfg, "optim.lr_update", minimum=1)
    if cfg.model_selection not in ("rsum", "r1r5"):
        raise InputError("model_selection", f"rsum or r1r5 (got {cfg.model_selection!r})")
    if not isinstance(OmegaConf.select(cfg, "trainer.enable_progress_bar"), bool):
        raise InputError("trainer.enable_progress_bar", "true or false")
    check_eval_options(cfg)


def check_eval_options(cfg: DictConfig) -> None:
    for key in ("eval.img_block", "eval.txt_block", "data.eval_batch_size"):
        if OmegaConf.select(cfg, key) is not None:  # optional keys (null = the model's default block size)
            check_int(cfg, key, minimum=1)
    precision = OmegaConf.select(cfg, "eval.precision")
    if precision is not None and precision not in PRECISIONS:
        raise InputError("eval.precision", f"one of {'|'.join(PRECISIONS)} (got {precision!r})")
