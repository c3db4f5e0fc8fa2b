"""Minimal-pair accuracy on the synthetic world: does a model score a twin caption higher on its own image?

Why: rsum mixes every kind of difficulty; this isolates the designed ones. For each binding (relation) twin pair
and each pair of their captions with identical word multisets, the model is right when it scores the caption
higher on its own image than on the twin. Mean pooling cannot do better than chance (50 %) on binding twins.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np

from temde.data.precomp import CAPTIONS_PER_IMAGE
from temde.data.synthetic.captions import caption_words


def twin_caption_pairs(world: list[dict], captions: list[str]) -> dict[str, list[tuple[int, int, int, int]]]:
    """{kind: [(image a, caption of a, image b, caption of b)]}: captions with the same words, twin images."""
    def words(i: int) -> Counter:
        return Counter(caption_words(captions[i]))

    pairs: dict[str, list[tuple[int, int, int, int]]] = {"binding": [], "relation": []}
    for b, meta in enumerate(world):
        if not meta.get("twin"):
            continue
        a = meta["twin"]["of"]
        for k in range(CAPTIONS_PER_IMAGE):
            ca, cb = a * CAPTIONS_PER_IMAGE + k, b * CAPTIONS_PER_IMAGE + k
            if captions[ca] != captions[cb] and words(ca) == words(cb):
                pairs[meta["twin"]["kind"]].append((a, ca, b, cb))
    return pairs


def twin_accuracy(sims: np.ndarray, world: list[dict], captions: list[str]) -> dict[str, dict[str, float]]:
    """Per twin kind: the share of identical-word caption pairs scored higher on their own image (chance 0.5)."""
    out = {}
    for kind, pairs in twin_caption_pairs(world, captions).items():
        hits = [int(sims[a, ca] > sims[b, ca]) + int(sims[b, cb] > sims[a, cb]) for a, ca, b, cb in pairs]
        out[kind] = {"accuracy": float(np.sum(hits) / (2 * len(pairs))) if pairs else float("nan"),
                     "captions": 2 * len(pairs)}
    return out


def load_split(dataset_dir: str | Path, split: str) -> tuple[list[dict], list[str]]:
    d = Path(dataset_dir)
    return json.loads((d / f"{split}_world.json").read_text()), (d / f"{split}_caps.txt").read_text().splitlines()
