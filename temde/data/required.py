"""The files a composed data config needs, checked up front so a long job never starts on missing data."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from temde.errors import InputError


def required_files(data: Mapping[str, Any]) -> list[Path]:
    """``<root>/<name>/<split>_{ims.npy,caps.txt}`` of the train, validation and test splits, and the vocabulary."""
    splits = ["train", data["val_split"], *(spec["split"] for spec in data["test_splits"].values())]
    folder = Path(data["root"]) / data["name"]
    return [folder / f"{split}_{kind}" for split in dict.fromkeys(splits) for kind in ("ims.npy", "caps.txt")] + \
        [Path(data["vocab_path"])]


def require_files(datas: Iterable[Mapping[str, Any]], alternative: str) -> None:
    """Raise :class:`InputError` naming the first missing file, the data it belongs to and ``alternative``."""
    for data in datas:
        for path in required_files(data):
            if not path.is_file():
                raise InputError(path, f"{data['name']} features/vocabulary (docs/reproduce.md; set TEMDE_DATA or "
                                       f"data.root); {alternative}")
