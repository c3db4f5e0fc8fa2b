"""Write a synthetic dataset atomically, with a manifest that ``ensure_synthetic_dataset`` checks on reuse.

Why: an interrupted regeneration must never leave a mixed dataset (new train, old dev/test) that a later run
accepts. Everything is written into ``<name>.tmp-<pid>/`` next to the final directory; the manifest (spec + size,
SHA-256 and shape of every file) is written last; then the vocabulary and the directory are renamed into place.
Reuse requires a manifest with the same spec whose files all still match.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from temde.data.precomp import CAPTIONS_PER_IMAGE
from temde.data.synthetic.captions import caption
from temde.data.synthetic.spec import LEVELS, SyntheticSpec
from temde.data.synthetic.world import prototypes, region_features, sample_split
from temde.data.vocab import build_vocab

log = logging.getLogger(__name__)

MANIFEST = "manifest.json"
# 2: the world of docs/synthetic.md (difficulty levels, twins, boxes); 3: levels also set class frequencies and how
# much a caption says. With the levels' settings it is part of every synthetic `make reproduce` run key
# (world_version), so runs of an older world are retrained, never reused.
MANIFEST_VERSION = 3
HASH_LIMIT = 1 << 30  # files up to 1 GiB are hashed again on reuse; larger ones are checked by size and shape


def world_version() -> str:
    """The generator version and every level's settings: what a run trained on synthetic data depends on."""
    levels = json.dumps({name: asdict(level) for name, level in sorted(LEVELS.items())}, sort_keys=True)
    return f"v{MANIFEST_VERSION}-{hashlib.sha1(levels.encode()).hexdigest()[:8]}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


def _file_entry(path: Path) -> dict:
    entry = {"size": path.stat().st_size, "sha256": _sha256(path)}
    if path.suffix == ".npy":
        entry["shape"] = list(np.load(path, mmap_mode="r").shape)
    return entry


def vocab_path(root: Path, name: str) -> Path:
    return Path(root) / "vocab" / f"{name}_vocab.json"


def _write_split(out: Path, split: str, split_index: int, n_images: int, spec: SyntheticSpec,
                 protos: dict[str, np.ndarray], progress: bool) -> None:
    images = sample_split(spec, split_index, n_images)
    feats = open_memmap(out / f"{split}_ims.npy", mode="w+", dtype=np.float32,
                        shape=(n_images, spec.n_regions, spec.feature_dim))
    captions, meta = [], []
    for i, image in enumerate(tqdm(images, desc=f"synthetic {split}", disable=not progress, leave=False)):
        feats[i], owner = region_features(image, protos, spec)
        captions.extend(caption(image, seed, spec.level) for seed in image.caption_seeds[:CAPTIONS_PER_IMAGE])
        meta.append({"scene": image.scene, "twin": image.twin, "region_owner": owner.tolist(),
                     "groups": [{"class": g.cls, "color": g.color, "count": g.count, "center": list(g.center)}
                                for g in image.groups]})
    feats.flush()
    del feats
    (out / f"{split}_caps.txt").write_text("\n".join(captions) + "\n")
    (out / f"{split}_world.json").write_text(json.dumps(meta))  # what each image is: for tests and analyses


def write_synthetic_dataset(
    root: str | Path, name: str = "synthetic_precomp", spec: SyntheticSpec | None = None, progress: bool = True
) -> Path:
    """Write ``<root>/<name>/{split}_ims.npy, {split}_caps.txt, {split}_world.json, manifest.json`` and
    ``<root>/vocab/<name>_vocab.json`` atomically; deterministic in ``spec``. Returns the dataset directory."""
    spec = spec or SyntheticSpec()
    root = Path(root)
    out = root / name
    tmp = root / f"{name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    protos = prototypes(spec)
    for split_index, (split, n_images) in enumerate(spec.splits().items()):
        _write_split(tmp, split, split_index, n_images, spec, protos, progress)
    vocab_tmp = tmp / "vocab.json"
    build_vocab((tmp / "train_caps.txt").read_text().splitlines()).save_json(vocab_tmp)
    files = {p.name: _file_entry(p) for p in sorted(tmp.iterdir()) if p.name != "vocab.json"}
    manifest = {"version": MANIFEST_VERSION, "spec": spec.to_dict(), "level": asdict(spec.level), "files": files,
                "vocab": _file_entry(vocab_tmp)}
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=1))
    vocab = vocab_path(root, name)
    vocab.parent.mkdir(parents=True, exist_ok=True)
    os.replace(vocab_tmp, vocab)  # a crash from here on leaves a vocabulary that the old manifest rejects
    old = root / f"{name}.old-{os.getpid()}"
    if out.exists():
        os.replace(out, old)
    os.replace(tmp, out)
    shutil.rmtree(old, ignore_errors=True)
    return out


def check_manifest(root: str | Path, name: str, spec: SyntheticSpec) -> str | None:
    """None when ``<root>/<name>`` is a complete dataset of ``spec``, else why it is not."""
    out = Path(root) / name
    try:
        manifest = json.loads((out / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        return f"no readable {MANIFEST} ({err.__class__.__name__})"
    if manifest.get("version") != MANIFEST_VERSION or manifest.get("spec") != spec.to_dict():
        return "generated with another spec or generator version"
    if manifest.get("level") != json.loads(json.dumps(asdict(spec.level))):  # the level's knobs changed in the code
        return f"generated with other settings of the {spec.difficulty!r} level"
    entries = {**manifest.get("files", {}), "vocab": manifest.get("vocab")}
    for fname, entry in entries.items():
        path = vocab_path(root, name) if fname == "vocab" else out / fname
        if not isinstance(entry, dict) or not path.is_file():
            return f"{path} is missing"
        if path.stat().st_size != entry.get("size"):
            return f"{path} has {path.stat().st_size} bytes, the manifest says {entry.get('size')}"
        if "shape" in entry and list(np.load(path, mmap_mode="r").shape) != entry["shape"]:
            return f"{path} does not have the shape {entry['shape']}"
        if entry["size"] <= HASH_LIMIT and _sha256(path) != entry.get("sha256"):
            return f"{path} does not match its SHA-256 in the manifest"
    return None


def ensure_synthetic_dataset(root: str | Path, name: str = "synthetic_precomp", spec: SyntheticSpec | None = None) -> Path:
    """Reuse ``<root>/<name>`` when its manifest matches ``spec`` and every file; otherwise (re)generate it."""
    spec = spec or SyntheticSpec()
    out = Path(root) / name
    problem = check_manifest(root, name, spec)
    if problem is None:
        return out
    if out.exists():
        log.warning("regenerating the synthetic dataset %s: %s", out, problem)
    return write_synthetic_dataset(root, name, spec)
