"""A deterministic synthetic world written in the exact SCAN precomp on-disk format.

Why: Flickr30K/COCO features cannot be downloaded everywhere (CI, this machine), yet the real loading code,
training and evaluation must run end to end. Each image holds 2-4 coloured objects in a scene; every object
owns several of the 36 region slots whose features are noisy non-negative functions of (object, colour)
prototypes, background regions come from the scene prototype. Each of the 5 captions mentions most of the
image's objects (usually with their colour) and sometimes the scene, in varied templates. So captions and
regions share latent content, and a model *can* learn the alignment; chance level is what random scores give.

Sizes are configurable up to real scale (29000 train images x 36 x 2048) for benchmarks; features are
streamed to a memory-mapped ``.npy`` so large splits never sit in RAM.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from numpy.lib.format import open_memmap
from tqdm.auto import tqdm

from temde.data.layout import CAPTIONS_PER_IMAGE
from temde.data.vocab import build_vocab

OBJECTS = (
    "dog cat man woman child boy girl horse bicycle car bus ball kite surfboard skateboard umbrella bench "
    "table chair guitar bird cow sheep boat train truck motorcycle frisbee hat jacket tree flower cake pizza "
    "laptop phone book bottle cup elephant"
).split()
COLORS = "red blue green yellow black white brown orange pink gray".split()
SCENES = "beach street park kitchen field snow river city forest stage".split()
RELATIONS = ("next to", "near", "beside", "behind", "in front of", "with", "and")
OPENERS = ("", "a photo of ", "there is ", "an image showing ", "we can see ")
SCENE_PHRASES = ("on the {s}", "in the {s}", "at the {s}")


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes and noise of the synthetic world (the defaults train a model on CPU in minutes)."""

    n_train: int = 1000
    n_dev: int = 100
    n_test: int = 100
    n_testall: int = 500  # 5 folds of 100 images for the COCO-1K-style protocol
    n_regions: int = 36
    feature_dim: int = 2048
    region_noise: float = 1.0
    seed: int = 0

    def splits(self) -> dict[str, int]:
        return {"train": self.n_train, "dev": self.n_dev, "test": self.n_test, "testall": self.n_testall}


def _prototypes(spec: SyntheticSpec) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(spec.seed)
    d = spec.feature_dim
    return {
        "object": rng.standard_normal((len(OBJECTS), d)).astype(np.float32),
        "color": 0.6 * rng.standard_normal((len(COLORS), d)).astype(np.float32),
        "scene": rng.standard_normal((len(SCENES), d)).astype(np.float32),
    }


def _sample_image(rng: np.random.Generator) -> dict:
    n_obj = int(rng.integers(2, 5))
    return {
        "objects": rng.choice(len(OBJECTS), n_obj, replace=False).tolist(),
        "colors": rng.integers(0, len(COLORS), n_obj).tolist(),
        "scene": int(rng.integers(len(SCENES))),
    }


def _region_features(image: dict, protos: dict[str, np.ndarray], spec: SyntheticSpec,
                     rng: np.random.Generator) -> np.ndarray:
    """(R, F) non-negative features: object regions from (object + colour), the rest from the scene."""
    r, d = spec.n_regions, spec.feature_dim
    means = np.repeat(protos["scene"][image["scene"]][None], r, axis=0)
    slots = rng.permutation(r)
    start = 0
    for obj, color in zip(image["objects"], image["colors"]):
        count = int(rng.integers(4, 9))
        means[slots[start : start + count]] = protos["object"][obj] + protos["color"][color]
        start += count
    noisy = means + spec.region_noise * rng.standard_normal((r, d)).astype(np.float32)
    return np.maximum(noisy, 0.0).astype(np.float32)  # like ReLU'd Faster R-CNN pool5 features


def _caption(image: dict, rng: np.random.Generator) -> str:
    order = rng.permutation(len(image["objects"]))
    n_mention = max(2, int(np.ceil(0.7 * len(order)))) if len(order) > 2 else len(order)
    phrases = []
    for k in order[:n_mention]:
        noun = OBJECTS[image["objects"][k]]
        colored = rng.random() < 0.85
        words = f"{COLORS[image['colors'][k]]} {noun}" if colored else noun
        phrases.append(("an " if words[0] in "aeiou" else "a ") + words)
    text = OPENERS[int(rng.integers(len(OPENERS)))] + phrases[0]
    for phrase in phrases[1:]:
        text += f" {RELATIONS[int(rng.integers(len(RELATIONS)))]} {phrase}"
    if rng.random() < 0.6:
        text += " " + SCENE_PHRASES[int(rng.integers(len(SCENE_PHRASES)))].format(s=SCENES[image["scene"]])
    return text[0].upper() + text[1:] + " ."


def write_synthetic_dataset(
    root: str | Path, name: str = "synthetic_precomp", spec: SyntheticSpec | None = None, progress: bool = True
) -> Path:
    """Write ``<root>/<name>/{split}_ims.npy, {split}_caps.txt`` and ``<root>/vocab/<name>_vocab.json``.

    Deterministic in ``spec.seed``; returns the dataset directory. A ``spec.json`` records the parameters so
    an existing directory is reused only when it was generated with the same spec.
    """
    spec = spec or SyntheticSpec()
    out = Path(root) / name
    out.mkdir(parents=True, exist_ok=True)
    protos = _prototypes(spec)
    for split_index, (split, n_images) in enumerate(spec.splits().items()):
        rng = np.random.default_rng([spec.seed, split_index + 1])
        tmp = out / f"{split}_ims.tmp.npy"
        feats = open_memmap(tmp, mode="w+", dtype=np.float32, shape=(n_images, spec.n_regions, spec.feature_dim))
        captions = []
        for i in tqdm(range(n_images), desc=f"synthetic {split}", disable=not progress, leave=False):
            image = _sample_image(rng)
            feats[i] = _region_features(image, protos, spec, rng)
            captions.extend(_caption(image, rng) for _ in range(CAPTIONS_PER_IMAGE))
        feats.flush()
        del feats
        tmp.replace(out / f"{split}_ims.npy")  # only complete files ever carry the final name
        (out / f"{split}_caps.txt").write_text("\n".join(captions) + "\n")
    train_caps = (out / "train_caps.txt").read_text().splitlines()
    build_vocab(train_caps).save_json(Path(root) / "vocab" / f"{name}_vocab.json")
    (out / "spec.json").write_text(json.dumps(asdict(spec), indent=1))
    return out


def ensure_synthetic_dataset(root: str | Path, name: str = "synthetic_precomp", spec: SyntheticSpec | None = None) -> Path:
    """Generate the dataset unless an identical one (same spec) is already on disk."""
    spec = spec or SyntheticSpec()
    out = Path(root) / name
    spec_file = out / "spec.json"
    if spec_file.is_file() and json.loads(spec_file.read_text()) == asdict(spec):
        return out
    return write_synthetic_dataset(root, name, spec)
