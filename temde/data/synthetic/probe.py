"""A model-free keyword matcher: how much a synthetic split's captions say about their images, with no learning.

Why: a level's difficulty should be measurable without training a model (and without favouring one). The
matcher scores a caption against an image by what it can read off the caption's words and the image's recorded
contents (``{split}_world.json``): +1 per named class the image holds, per named colour it holds, per
"colour class" pair it holds with that binding, and for the named scene. Its rsum is a rough, model-independent
measure of how specific the captions are over a gallery (docs/synthetic.md, design history). It ignores counts,
relations and everything visual, so a trained model can beat it.
"""

from __future__ import annotations

import numpy as np

from temde.data.synthetic.captions import caption_words, plural
from temde.data.synthetic.world import CLASSES, COLORS, SCENES

_CLASS_OF = {w: c for c, names in enumerate(CLASSES) for n in names for w in (n, plural(n))}
_COLOR_OF = {w: i for i, w in enumerate(COLORS)}
_SCENE_OF = {w: s for s, names in enumerate(SCENES) for w in names}


def keyword_scores(world: list[dict], captions: list[str], tie_break_seed: int = 0) -> np.ndarray:
    """(images, captions) keyword-match scores; ties are broken by a tiny seeded random term.

    Computed as (image indicators) @ (caption word counts).T per kind of keyword, one matrix product each.
    """
    n_cls, n_col, n_scene = len(CLASSES), len(COLORS), len(SCENES)
    sizes = (n_cls, n_col, n_cls * n_col, n_scene)  # classes, colours, (class, colour) pairs, scenes
    has = [np.zeros((len(world), n)) for n in sizes]
    for i, m in enumerate(world):
        for g in m["groups"]:
            has[0][i, g["class"]] = has[1][i, g["color"]] = has[2][i, g["class"] * n_col + g["color"]] = 1
        has[3][i, m["scene"]] = 1
    said = [np.zeros((len(captions), n)) for n in sizes]
    for j, text in enumerate(captions):
        words = caption_words(text)
        for w in words:
            for table, counts in ((_CLASS_OF, said[0]), (_COLOR_OF, said[1]), (_SCENE_OF, said[3])):
                if w in table:
                    counts[j, table[w]] += 1
        for a, b in zip(words, words[1:]):
            if a in _COLOR_OF and b in _CLASS_OF:
                said[2][j, _CLASS_OF[b] * n_col + _COLOR_OF[a]] += 1
    scores = sum(h @ c.T for h, c in zip(has, said))
    return scores + 1e-3 * np.random.default_rng(tie_break_seed).random(scores.shape)
