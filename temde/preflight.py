"""Checks that run before any long work: options of the composed config and the splits a run will read.

Why: a typo in an option or a broken test split must fail in seconds, as one line naming the option or file,
not as a bare assertion inside Lightning or after hours of training.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from temde.data.precomp import PrecompDataset
from temde.data.vocab import Vocabulary
from temde.errors import InputError

CHUNK_ROWS = 1024  # rows of a memory-mapped feature file checked at a time (bounded memory on COCO)


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
    for key in ("eval.img_block", "eval.txt_block", "eval.batch_size"):
        check_int(cfg, key, minimum=1)


def check_feature_width(model_config: dict[str, Any], split: PrecompDataset) -> None:
    """The model's input size must match the region features on disk."""
    expected = model_config.get("img_dim")
    if expected is not None and expected != split.feature_dim:
        raise InputError(split.images_path, f"{expected}-d region features (model.img_dim={expected}); the file "
                         f"holds {split.feature_dim}-d ones: set model.img_dim={split.feature_dim}")


def check_finite(split: PrecompDataset) -> None:
    """No NaN/Inf in a split's features, read chunk by chunk (bounded memory for memory-mapped files)."""
    feats = split.features
    for start in range(0, len(feats), CHUNK_ROWS):
        block = np.asarray(feats[start : start + CHUNK_ROWS])
        if not np.isfinite(block).all():
            row = start + int(np.argwhere(~np.isfinite(block))[0][0])
            raise InputError(split.images_path, f"finite region features (row {row} holds NaN or Inf)")


def check_test_splits(root: Any, name: str, test_splits: dict[str, dict[str, Any]], vocab: Vocabulary,
                      model_config: dict[str, Any] | None = None) -> None:
    """Open every test split a run will evaluate, before training: files, layout, feature width, finiteness.

    SEAM: ``temde.data.validate`` (issue 10) replaces the body with its full per-split validation.
    """
    for split_name in sorted({spec["split"] for spec in test_splits.values()}):
        split = PrecompDataset(root, name, split_name, vocab)
        if model_config is not None:
            check_feature_width(model_config, split)
        check_finite(split)
