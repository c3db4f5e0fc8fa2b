"""SCAN "precomp" datasets: ``<root>/<name>/<split>_ims.npy`` (N, R, F) + ``<split>_caps.txt`` (5 per image).

Features are memory-mapped (COCO train is 31 GB). Two layouts exist: one feature row per image (N images,
5N captions) and one row per caption (N == number of captions, e.g. f30k dev); the row for caption ``i`` is
``i // im_div`` as in the official loaders. Every problem with the files is reported here, naming the file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from temde.data.vocab import Vocabulary
from temde.data.layout import CAPTIONS_PER_IMAGE
from temde.errors import InputError

DATA_HELP = "see data/README.md for where to download the SCAN features and how the tree must look"


class DataError(InputError):
    """Bad or missing dataset files; names the file and what was expected."""


def check_dir(path: Path) -> None:
    if not path.is_dir():
        raise DataError(path, f"dataset directory does not exist; {DATA_HELP}")


def load_features(path: Path) -> np.ndarray:
    """Memory-map ``<split>_ims.npy`` and check it is (N, R, F) float."""
    if not path.is_file():
        raise DataError(path, f"feature file not found (expected a float array (N, R, F)); {DATA_HELP}")
    try:
        feats = np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise DataError(path, f"not a readable .npy array of region features (N, R, F) (truncated or not "
                              f"NumPy): {err}") from err
    if feats.ndim != 3 or not np.issubdtype(feats.dtype, np.floating):
        raise DataError(path, f"has shape {feats.shape} and dtype {feats.dtype}; expected float (N, R, F)")
    return feats


def load_captions(path: Path) -> list[bytes]:
    """Read captions as stripped bytes lines (the official loaders open the file in binary mode).

    Every line must decode as UTF-8 (the tokenizer decodes it later, mid-training): the first bad line is
    reported here with its number.
    """
    if not path.is_file():
        raise DataError(path, f"caption file not found (expected one caption per line); {DATA_HELP}")
    with open(path, "rb") as f:
        captions = [line.strip() for line in f]
    while captions and not captions[-1]:
        captions.pop()  # a trailing newline is not a caption
    if not captions:
        raise DataError(path, "caption file is empty; expected one caption per line")
    try:
        b"\n".join(captions).decode("utf-8")
    except UnicodeDecodeError:
        for number, line in enumerate(captions, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(path, f"line {number} is not UTF-8 text ({err.reason} at byte {err.start}: "
                                      f"{line[max(0, err.start - 10):err.start + 10]!r}); expected UTF-8 captions"
                                ) from err
    return captions


def captions_per_row(n_rows: int, n_caps: int, images_path: Path, captions_path: Path) -> int:
    """The official ``im_div``: 1 (one feature row per caption) when the counts are equal, else 5 (one row per
    image), which needs exactly 5 captions per row. The one home of the rule (loader and up-front check)."""
    if n_rows == n_caps:
        return 1
    if n_caps != CAPTIONS_PER_IMAGE * n_rows:
        raise DataError(
            captions_path, f"{n_caps} captions but {images_path} has {n_rows} feature rows; "
            f"expected {CAPTIONS_PER_IMAGE} captions per row ({CAPTIONS_PER_IMAGE * n_rows}) or one row per caption"
        )
    return CAPTIONS_PER_IMAGE


class PrecompDataset(Dataset):
    """One split of a SCAN precomp dataset, indexed by caption."""

    def __init__(
        self,
        root: str | Path,
        name: str,
        split: str,
        vocab: Vocabulary,
        max_captions: int | None = None,
    ) -> None:
        self.dir = Path(root) / name
        check_dir(self.dir)
        self.split = split
        self.vocab = vocab
        self.images_path = self.dir / f"{split}_ims.npy"
        self.captions_path = self.dir / f"{split}_caps.txt"
        self.features = load_features(self.images_path)
        captions = load_captions(self.captions_path)
        n_rows = len(self.features)
        self.im_div = captions_per_row(n_rows, len(captions), self.images_path, self.captions_path)
        if self.im_div == 1:
            check_repeated_rows(self.features, self.images_path, groups=sample_groups(n_rows))
        if max_captions is not None:
            captions = captions[:max_captions]  # official dev split: first 5000 captions / 1000 images
        self.captions = captions

    @property
    def n_regions(self) -> int:
        return int(self.features.shape[1])

    @property
    def feature_dim(self) -> int:
        return int(self.features.shape[2])

    @property
    def n_images(self) -> int:
        """Number of distinct images covered by the captions (5 captions each)."""
        return len(self.captions) // CAPTIONS_PER_IMAGE

    def __len__(self) -> int:
        return len(self.captions)

    def image_row(self, caption_index: int) -> int:
        return caption_index // self.im_div

    def __getitem__(self, index: int) -> tuple[Tensor, Tensor, int, int]:
        image = torch.from_numpy(np.array(self.features[self.image_row(index)], dtype=np.float32))
        tokens = torch.tensor(self.vocab.encode(self.captions[index]), dtype=torch.long)
        return image, tokens, index, index // CAPTIONS_PER_IMAGE

    def image_features(self, chunk: int = 1000) -> Tensor:
        """(n_images, R, F) float32 of the distinct images, read chunk by chunk from the memory map."""
        if len(self.captions) % CAPTIONS_PER_IMAGE:
            raise DataError(
                self.captions_path, f"{len(self.captions)} captions is not a multiple of "
                f"{CAPTIONS_PER_IMAGE}; evaluation needs {CAPTIONS_PER_IMAGE} consecutive captions per image"
            )
        rows = np.arange(self.n_images) * CAPTIONS_PER_IMAGE // self.im_div
        out = torch.empty(len(rows), self.n_regions, self.feature_dim, dtype=torch.float32)
        for start in range(0, len(rows), chunk):
            sel = rows[start : start + chunk]
            out[start : start + len(sel)] = torch.from_numpy(np.asarray(self.features[sel], dtype=np.float32))
        return out

    def caption_tokens(self) -> tuple[Tensor, Tensor]:
        """All captions as (M, L_max) zero-padded ids and (M,) lengths, in file order."""
        encoded = [self.vocab.encode(c) for c in self.captions]
        return pad_tokens(encoded)


def sample_groups(n_rows: int, count: int = 8) -> np.ndarray:
    """Indices of up to ``count`` evenly spread 5-row groups: a cheap layout probe at every dataset open."""
    n_groups = n_rows // CAPTIONS_PER_IMAGE
    return np.unique(np.linspace(0, max(n_groups - 1, 0), num=min(count, max(n_groups, 1))).astype(np.int64))


def check_repeated_rows(features: np.ndarray, path: Path, groups: np.ndarray | None = None) -> None:
    """One feature row per caption means rows 5k..5k+4 are the same image: check the given groups (all if None).

    Without this, 10 distinct rows with 10 captions would silently be read as 2 images x 5 captions.
    """
    n = len(features)
    if n % CAPTIONS_PER_IMAGE:
        raise DataError(path, f"{n} feature rows, one per caption, is not a multiple of {CAPTIONS_PER_IMAGE}; "
                              f"expected {CAPTIONS_PER_IMAGE} consecutive rows per image")
    n_groups = n // CAPTIONS_PER_IMAGE
    ids = np.arange(n_groups) if groups is None else groups
    step = max(1, (64 << 20) // max(1, CAPTIONS_PER_IMAGE * features[0].nbytes))  # ~64 MB per read
    for start in range(0, len(ids), step):
        sel = ids[start:start + step]
        rows = np.stack([features[g * CAPTIONS_PER_IMAGE:(g + 1) * CAPTIONS_PER_IMAGE] for g in sel])
        same = (rows == rows[:, :1]).reshape(len(sel), CAPTIONS_PER_IMAGE, -1).all(axis=2)
        if not same.all():
            g, r = np.argwhere(~same)[0]
            first = int(sel[g]) * CAPTIONS_PER_IMAGE
            raise DataError(path, f"{n} feature rows for {n} captions (one row per caption), but rows {first} and "
                                  f"{first + int(r)} differ; expected rows 5k..5k+4 to repeat one image, or "
                                  f"{CAPTIONS_PER_IMAGE * n} captions for {n} images")


def pad_tokens(encoded: list[list[int]] | list[Tensor]) -> tuple[Tensor, Tensor]:
    lengths = torch.tensor([len(e) for e in encoded], dtype=torch.long)
    tokens = torch.zeros(len(encoded), int(lengths.max()), dtype=torch.long)  # 0 = <pad>
    for row, ids in enumerate(encoded):
        tokens[row, : len(ids)] = torch.as_tensor(ids, dtype=torch.long)
    return tokens, lengths


def collate(samples: list[tuple[Tensor, Tensor, int, int]], sort_by_length: bool = True) -> dict[str, Tensor]:
    """Stack a batch; optionally sort by caption length (descending) keeping image/caption pairs aligned."""
    if sort_by_length:
        samples = sorted(samples, key=lambda s: len(s[1]), reverse=True)
    images = torch.stack([s[0] for s in samples])
    tokens, lengths = pad_tokens([s[1] for s in samples])
    return {
        "images": images,
        "regions_mask": torch.ones(images.shape[:2], dtype=torch.bool),
        "tokens": tokens,
        "lengths": lengths,
        "caption_ids": torch.tensor([s[2] for s in samples], dtype=torch.long),
        "image_ids": torch.tensor([s[3] for s in samples], dtype=torch.long),
    }


class ImageSet(Dataset):
    """The distinct images of a split, one item per image (for encoding galleries once per image)."""

    def __init__(self, split: PrecompDataset) -> None:
        if len(split) % CAPTIONS_PER_IMAGE:
            raise DataError(split.captions_path,
                            f"{len(split)} captions is not a multiple of {CAPTIONS_PER_IMAGE}")
        self.split = split

    def __len__(self) -> int:
        return self.split.n_images

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        row = self.split.image_row(index * CAPTIONS_PER_IMAGE)
        return torch.from_numpy(np.array(self.split.features[row], dtype=np.float32)), index


class CaptionSet(Dataset):
    """The captions of a split, one item per caption, in file order."""

    def __init__(self, split: PrecompDataset) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        return torch.tensor(self.split.vocab.encode(self.split.captions[index]), dtype=torch.long), index


def collate_images(samples: list[tuple[Tensor, int]]) -> dict[str, Tensor]:
    images = torch.stack([s[0] for s in samples])
    return {
        "images": images,
        "regions_mask": torch.ones(images.shape[:2], dtype=torch.bool),
        "index": torch.tensor([s[1] for s in samples], dtype=torch.long),
    }


def collate_captions(samples: list[tuple[Tensor, int]]) -> dict[str, Tensor]:
    tokens, lengths = pad_tokens([s[0] for s in samples])
    return {"tokens": tokens, "lengths": lengths, "index": torch.tensor([s[1] for s in samples], dtype=torch.long)}
