"""A model-free keyword matcher: how much a synthetic split's captions say about their images, with no learning.

Why: a level's difficulty should be measurable without training a model (and without favouring one). The
matcher scores a caption against an image by what it can read off the caption's words and the image's recorded
contents (``{split}_world.json``): +1 per named class the image holds, per named colour it holds, per
"colour class" pair it holds with that binding, and for the named scene. Its rsum is a rough, model-independent
measure of how specific the captions are over a gallery (docs/synthetic.md, design history). It ignores counts,
relations and everything visual, so a trained model can beat it.
"""

from __future__ import annotations

import re

import numpy as np

from temde.data.synthetic.captions import plural
from temde.data.synthetic.world import CLASSES, COLORS, SCENES

_CLASS_OF = {w: c for c, names in enumerate(CLASSES) for n in names for w in (n, plural(n))}
_COLOR_OF = {w: i for i, w in enumerate(COLORS)}
_SCENE_OF = {w: s for s, names in enumerate(SCENES) for w in names}


def keyword_scores(world: list[dict], captions: list[str], tie_break_seed: int = 0) -> np.ndarray:
    """(images, captions) keyword-match scores; ties are broken by a tiny seeded random term."""
    images = [({g["class"] for g in m["groups"]}, {g["color"] for g in m["groups"]},
               {(g["class"], g["color"]) for g in m["groups"]}, m["scene"]) for m in world]
    scores = np.zeros((len(world), len(captions)))
    for j, text in enumerate(captions):
        words = re.findall(r"[a-z]+", text.lower())
        classes = [_CLASS_OF[w] for w in words if w in _CLASS_OF]
        colours = [_COLOR_OF[w] for w in words if w in _COLOR_OF]
        bound = [(_CLASS_OF[b], _COLOR_OF[a]) for a, b in zip(words, words[1:]) if a in _COLOR_OF and b in _CLASS_OF]
        scenes = [_SCENE_OF[w] for w in words if w in _SCENE_OF]
        for i, (has_cls, has_col, has_pair, scene) in enumerate(images):
            scores[i, j] = (sum(c in has_cls for c in classes) + sum(c in has_col for c in colours)
                            + sum(p in has_pair for p in bound) + sum(s == scene for s in scenes))
    return scores + 1e-3 * np.random.default_rng(tie_break_seed).random(scores.shape)
