"""Build SCAN-format caption files from the official COCO annotations and a Karpathy split file.

SCAN ``<split>_caps.txt`` holds 5 consecutive captions per image, in image order (caption ``5k + i`` describes
image ``k``; docs/sgraf.md, "Data layout"). The split file (Karpathy's ``dataset_coco.json``) decides which images form a split
and their order; the captions come from the official COCO caption JSON read with pycocotools (or, without it,
from the split file's own ``sentences``). Alongside we write ``<split>_ids.txt`` (one image id per line, aligned
with the feature rows) and ``<split>_images.txt`` (``filepath/filename`` per line, the input list of
``scripts/extract_features.py``), so captions, ids and features stay row-aligned by construction.

Choices (documented in docs/byod.md):
* Caption order per image: ascending COCO annotation id (deterministic, and the file order of the official
  JSON). Images with more than 5 captions keep the first 5; fewer than 5 is an error.
* Each caption is whitespace-normalised (newlines inside a caption would break the one-per-line format).
* Karpathy ``restval`` images join ``train`` with ``restval_to_train=True`` (the SCAN/VSE++ 113,287-image train).
"""

from __future__ import annotations

import contextlib
import io
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from temde.data.layout import CAPTIONS_PER_IMAGE

KARPATHY_SPLITS = ("train", "restval", "val", "test")  # split values in Karpathy's dataset_coco.json
SCAN_NAMES = {"train": "train", "restval": "restval", "val": "dev", "test": "testall"}  # SCAN file prefixes


class CocoBuildError(ValueError):
    """Bad split/annotation input; the message names the file and what was expected."""


@dataclass(frozen=True)
class SplitImage:
    """One image entry of a Karpathy split file."""

    image_id: int
    split: str
    relpath: str  # "filepath/filename" (or just filename) relative to the image root
    sentences: tuple[str, ...]  # raw captions stored in the split file, in file order


def load_karpathy_split(path: str | Path) -> list[SplitImage]:
    """Read ``{"images": [{"cocoid", "split", "filepath", "filename", "sentences": [{"raw"}...]}]}``.

    ``cocoid`` is the COCO image id; files without it (e.g. Flickr30K's) fall back to ``imgid``.
    """
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise CocoBuildError(f"{path}: cannot read the Karpathy split JSON: {err}") from err
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CocoBuildError(f"{path}: expected a JSON object with an 'images' list (Karpathy dataset_*.json)")
    out = []
    for i, im in enumerate(data["images"]):
        image_id = im.get("cocoid", im.get("imgid"))
        if image_id is None or "split" not in im or "filename" not in im:
            raise CocoBuildError(f"{path}: images[{i}] needs 'cocoid' (or 'imgid'), 'split' and 'filename'")
        if im["split"] not in KARPATHY_SPLITS:
            raise CocoBuildError(f"{path}: images[{i}] split {im['split']!r}, expected one of {KARPATHY_SPLITS}")
        rel = f"{im['filepath']}/{im['filename']}" if im.get("filepath") else im["filename"]
        sents = tuple(s["raw"] if isinstance(s, dict) else str(s) for s in im.get("sentences", []))
        out.append(SplitImage(int(image_id), im["split"], rel, sents))
    return out


def select_split(images: Sequence[SplitImage], split: str, restval_to_train: bool = False) -> list[SplitImage]:
    """Images of one split in split-file order; ``train`` absorbs ``restval`` when asked."""
    if split not in KARPATHY_SPLITS:
        raise CocoBuildError(f"unknown split {split!r}, expected one of {KARPATHY_SPLITS}")
    wanted = {split, "restval"} if (split == "train" and restval_to_train) else {split}
    return [im for im in images if im.split in wanted]


def clean_caption(text: str) -> str:
    """Collapse all whitespace (incl. newlines) to single spaces, strip the ends."""
    return " ".join(text.split())


def load_coco_captions(annotation_files: Sequence[str | Path]) -> dict[int, list[str]]:
    """image id -> captions in ascending annotation id, merged over COCO caption JSONs (pycocotools)."""
    from pycocotools.coco import COCO

    captions: dict[int, list[tuple[int, str]]] = {}
    for path in annotation_files:
        path = Path(path)
        if not path.is_file():
            raise CocoBuildError(f"{path}: COCO caption annotation file not found")
        try:
            with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints progress lines
                coco = COCO(str(path))
        except Exception as err:  # pycocotools raises assorted errors on malformed files
            raise CocoBuildError(f"{path}: not a COCO annotation file: {err}") from err
        for ann in coco.dataset.get("annotations", []):
            if "caption" not in ann:
                raise CocoBuildError(f"{path}: annotation {ann.get('id')} has no 'caption' (captions_*.json?)")
            captions.setdefault(int(ann["image_id"]), []).append((int(ann["id"]), ann["caption"]))
    return {k: [c for _, c in sorted(v)] for k, v in captions.items()}


def five_captions(captions: Sequence[str], image_id: int, origin: str) -> list[str]:
    """The first 5 cleaned captions; a clear error when fewer than 5 exist."""
    cleaned = [clean_caption(c) for c in captions]
    cleaned = [c for c in cleaned if c]
    if len(cleaned) < CAPTIONS_PER_IMAGE:
        raise CocoBuildError(
            f"{origin}: image {image_id} has {len(cleaned)} non-empty captions, expected at least "
            f"{CAPTIONS_PER_IMAGE} (SCAN format stores exactly {CAPTIONS_PER_IMAGE} per image)"
        )
    return cleaned[:CAPTIONS_PER_IMAGE]


def build_split(
    split_file: str | Path,
    split: str,
    out_dir: str | Path,
    annotation_files: Sequence[str | Path] = (),
    out_name: str | None = None,
    restval_to_train: bool = False,
    limit: int | None = None,
) -> dict:
    """Write ``<name>_caps.txt``, ``<name>_ids.txt`` and ``<name>_images.txt`` for one split; returns a summary.

    Captions come from ``annotation_files`` (official COCO JSONs) when given, else from the split file.
    ``limit`` keeps the first N images (e.g. a quick 1000-image subset).
    """
    images = select_split(load_karpathy_split(split_file), split, restval_to_train)
    if limit is not None:
        images = images[:limit]
    if not images:
        raise CocoBuildError(f"{split_file}: no images with split {split!r}")
    if annotation_files:
        by_id = load_coco_captions(annotation_files)
        origin = ", ".join(str(p) for p in annotation_files)
        missing = [im.image_id for im in images if im.image_id not in by_id]
        if missing:
            raise CocoBuildError(
                f"{origin}: no captions for {len(missing)} image(s) of split {split!r}, e.g. ids {missing[:5]}; "
                "pass every captions_*.json the split draws from (train2014 and val2014 for Karpathy COCO)"
            )
        caps = [five_captions(by_id[im.image_id], im.image_id, origin) for im in images]
    else:
        caps = [five_captions(im.sentences, im.image_id, str(split_file)) for im in images]

    name = out_name or SCAN_NAMES[split]
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {kind: out_dir / f"{name}_{kind}.txt" for kind in ("caps", "ids", "images")}
    paths["caps"].write_text("".join(c + "\n" for five in caps for c in five), encoding="utf-8")
    paths["ids"].write_text("".join(f"{im.image_id}\n" for im in images))
    paths["images"].write_text("".join(f"{im.relpath}\n" for im in images), encoding="utf-8")
    return {
        "split": split,
        "name": name,
        "n_images": len(images),
        "n_captions": CAPTIONS_PER_IMAGE * len(images),
        "files": {k: str(v) for k, v in paths.items()},
    }
