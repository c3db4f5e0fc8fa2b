"""Up-front checks of every input a run will touch, so bad data fails in seconds, not after hours of training.

Each check raises :class:`temde.errors.InputError` naming the file and what was expected. What is checked per
split: the feature file opens as a float (N, R, F) array; every value is finite (read in ~64 MB chunks from the
memory map, so a 31 GB COCO file needs 64 MB of memory); captions are UTF-8 (line number on failure); the
caption count fits one of the two layouts, and a one-row-per-caption file really repeats each image's row 5
times. Across splits and the model: one feature width, the model's ``img_dim`` and ``num_region``, and every id
of the vocabulary below the model's embedding rows. :func:`validate_run_inputs` is what train/evaluate call.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from temde.data.precomp import (
    CAPTIONS_PER_IMAGE,
    captions_per_row,
    DataError,
    check_dir,
    check_repeated_rows,
    load_captions,
    load_features,
)
from temde.errors import InputError

CHUNK_BYTES = 64 << 20  # memory bound of the value scan
VALIDATE_MODES = ("full", "shapes")  # full: also every value finite and every per-caption row repeated


@dataclass
class SplitInfo:
    """What one split holds (the data check prints these)."""

    split: str
    images_path: Path
    captions_path: Path
    n_rows: int
    n_regions: int
    feature_dim: int
    dtype: str
    n_captions: int
    layout: str  # "per-image" (5 captions per row) or "per-caption" (rows repeated 5 times)
    values_checked: bool
    seconds: float

    @property
    def n_images(self) -> int:
        return self.n_captions // CAPTIONS_PER_IMAGE

    @property
    def gigabytes(self) -> float:
        return self.n_rows * self.n_regions * self.feature_dim * np.dtype(self.dtype).itemsize / 1e9


def check_finite(features: np.ndarray, path: Path, chunk_bytes: int = CHUNK_BYTES) -> None:
    """Every value finite, scanned in chunks of the memory map (bounded memory at any file size)."""
    rows = max(1, chunk_bytes // max(1, features[0].nbytes)) if len(features) else 1
    for start in range(0, len(features), rows):
        chunk = features[start:start + rows]
        if not np.isfinite(chunk).all():
            bad = np.argwhere(~np.isfinite(chunk))[0]
            row = start + int(bad[0])
            value = chunk[tuple(bad)]
            raise DataError(path, f"row {row} (region {int(bad[1])}, dim {int(bad[2])}) holds {value}; expected "
                                  "finite region features (no NaN or Inf)")


def check_split(root: str | Path, name: str, split: str, values: bool = True) -> SplitInfo:
    """Open and check one split (features + captions + layout); see the module docstring."""
    started = time.perf_counter()
    directory = Path(root) / name
    check_dir(directory)
    images_path, captions_path = directory / f"{split}_ims.npy", directory / f"{split}_caps.txt"
    features = load_features(images_path)
    captions = load_captions(captions_path)
    n_rows, n_caps = len(features), len(captions)
    if n_rows == 0 or 0 in features.shape[1:]:
        raise DataError(images_path, f"has shape {features.shape}; expected at least one row, region and dim")
    if n_caps % CAPTIONS_PER_IMAGE:
        raise DataError(captions_path, f"{n_caps} captions is not a multiple of {CAPTIONS_PER_IMAGE}; expected "
                                       f"{CAPTIONS_PER_IMAGE} consecutive captions per image")
    per_caption = captions_per_row(n_rows, n_caps, images_path, captions_path) == 1
    layout = "per-caption" if per_caption else "per-image"
    if per_caption and values:
        check_repeated_rows(features, images_path)
    if values:
        check_finite(features, images_path)
    return SplitInfo(split, images_path, captions_path, n_rows, int(features.shape[1]), int(features.shape[2]),
                     str(features.dtype), n_caps, layout, values, time.perf_counter() - started)


def check_vocab_ids(word2idx: Mapping[str, int], vocab_size: int | None, where: str | Path) -> None:
    """Every id the vocabulary can produce must be an embedding row of the model (else IndexError mid-run)."""
    ids = sorted(set(word2idx.values()))
    if ids and ids[0] < 0:
        raise InputError(where, f"vocabulary has a negative id {ids[0]}; expected ids 0..N-1")
    if vocab_size is not None and ids and ids[-1] >= vocab_size:
        raise InputError(where, f"vocabulary ids reach {ids[-1]} but the model has {vocab_size} embedding rows "
                                f"(model.vocab_size); expected every id < {vocab_size}")


def check_widths(infos: Iterable[SplitInfo], model_config: Mapping[str, Any] | None = None) -> None:
    """One feature width for all splits, equal to the model's ``img_dim``; regions = ``num_region`` for SA."""
    infos = list(infos)
    if not infos:
        return
    first = infos[0]
    for info in infos[1:]:
        if info.feature_dim != first.feature_dim:
            raise DataError(info.images_path, f"holds {info.feature_dim}-d region features but {first.images_path} "
                                              f"holds {first.feature_dim}-d; expected one width for every split")
    config = model_config or {}
    img_dim = config.get("img_dim")
    if isinstance(img_dim, int) and img_dim != first.feature_dim:
        raise InputError("model.img_dim", f"is {img_dim} but {first.images_path} holds {first.feature_dim}-d region "
                                          f"features; expected model.img_dim={first.feature_dim}")
    num_region = config.get("num_region")
    uses_sa = (config.get("global_pooling") or {"kind": "sa"}).get("kind") == "sa"  # VisualSA's BN over the slots
    if isinstance(num_region, int) and uses_sa:
        for info in infos:
            if info.n_regions != num_region:
                raise InputError("model.num_region", f"is {num_region} but {info.images_path} has {info.n_regions} "
                                                     f"regions per image; expected model.num_region={info.n_regions}")


def run_splits(datamodule: Any, train: bool = True, test: bool = True) -> list[str]:
    """The splits a run reads: train + dev when training, every test split when evaluating (in order, once)."""
    splits = [datamodule.train_split, datamodule.val_split] if train else []
    if test:
        splits += [spec["split"] for spec in (datamodule.test_splits or {}).values()]
    return list(dict.fromkeys(splits))


def validate_run_inputs(datamodule: Any, model_config: Mapping[str, Any] | None = None, train: bool = True,
                        test: bool = True, mode: str | None = None,
                        word2idx: Mapping[str, int] | None = None) -> list[SplitInfo]:
    """Check every split the run will touch, the vocabulary and the model's input sizes; before any training.

    ``datamodule`` is a :class:`temde.data.datamodule.PrecompDataModule` (duck-typed: root, name, split names,
    ``vocab``, ``validate``). ``mode``: ``full`` (default) also scans every value, ``shapes`` only opens files.
    ``word2idx``: the vocabulary the captions will be encoded with (default: the datamodule's when training).
    """
    if hasattr(datamodule, "prepare_data"):
        datamodule.prepare_data()  # built-in synthetic data is generated on first use
    mode = mode or getattr(datamodule, "validate", "full")
    if mode not in VALIDATE_MODES:
        raise InputError("data.validate", f"is {mode!r}; expected one of {VALIDATE_MODES}")
    infos = [check_split(datamodule.root, datamodule.name, split, values=mode == "full")
             for split in run_splits(datamodule, train, test)]
    check_widths(infos, model_config)
    if word2idx is None and train:
        word2idx = datamodule.vocab.word2idx
    if model_config is not None and word2idx is not None:
        check_vocab_ids(word2idx, model_config.get("vocab_size"), getattr(datamodule, "vocab_path", "vocabulary"))
    return infos


def validate_eval_inputs(datamodule: Any, models: Iterable[tuple[Mapping[str, Any], Mapping[str, int]]],
                         mode: str | None = None) -> list[SplitInfo]:
    """:func:`validate_run_inputs` for evaluation: the test splits once, then each (model_config, word2idx)."""
    infos = validate_run_inputs(datamodule, None, train=False, test=True, mode=mode)
    for model_config, word2idx in models:
        check_widths(infos, model_config)
        check_vocab_ids(word2idx, model_config.get("vocab_size"), "the checkpoint's vocabulary")
    return infos
