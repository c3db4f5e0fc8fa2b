"""Captions of a synthetic image: partial, paraphrased, with counts and spatial relations.

Every random choice is a ``rng.random()`` draw made in a fixed order that depends only on the number of groups,
never on which class, colour or position they have. Twins (same caption seeds, two groups' colours or positions
swapped) therefore get the same phrasings, and their captions have identical word multisets whenever both swapped
groups are mentioned in the same way: "a red dog and a blue cat" / "a blue dog and a red cat".
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np

from temde.data.synthetic.spec import Level
from temde.data.synthetic.world import CLASSES, COLORS, SCENES, Group, Image

COUNT_WORDS = {2: ("two", "a pair of", "some"), 3: ("three", "some", "several")}
OPENERS = ("", "a photo of ", "there is ", "an image showing ", "we can see ", "a picture of ")
CONNECTORS = (" and ", " with ", " next to ", " near ", " , ")
# axis -> (first-direction phrasings, second-direction phrasings); "x" left/right, "y" above/below
RELATIONS = {"x": (("to the left of", "left of", "on the left of"), ("to the right of", "right of")),
             "y": (("above", "over"), ("below", "under", "beneath"))}
SCENE_PREPS = ("on the", "in the", "at the")
_IRREGULAR = {"man": "men", "woman": "women", "child": "children", "gentleman": "gentlemen", "sheep": "sheep",
              "calf": "calves", "scarf": "scarves", "lass": "lasses"}


def caption_words(text: str) -> list[str]:
    """The lower-case words of a caption, punctuation dropped: what twin and keyword probes compare."""
    return re.findall(r"[a-z]+", text.lower())


def plural(noun: str) -> str:
    if noun in _IRREGULAR:
        return _IRREGULAR[noun]
    if noun.endswith("y") and noun[-2] not in "aeiou":
        return noun[:-1] + "ies"
    if noun.endswith(("s", "sh", "ch", "x")):
        return noun + "es"
    return noun + "s"


def _pick(options: Sequence[str], u: float) -> str:
    return options[min(int(u * len(options)), len(options) - 1)]


def _phrase(group: Group, u: np.ndarray, p_color: float) -> str:
    """'a red dog', 'two puppies', 'some gray kittens' from the group and 4 uniform draws."""
    noun = _pick(CLASSES[group.cls], u[0])
    words = [COLORS[group.color]] if u[1] < p_color else []
    words.append(noun if group.count == 1 else plural(noun))
    if group.count == 1:
        return ("an " if words[0][0] in "aeiou" else "a ") + " ".join(words)
    return _pick(COUNT_WORDS[group.count], u[2]) + " " + " ".join(words)


def _relation(first: Group, second: Group, u: float, v: float) -> tuple[Group, str, Group]:
    """(subject, relation words, object): the axis is where the centres differ most; u picks the direction."""
    dx, dy = second.center[0] - first.center[0], second.center[1] - first.center[1]
    axis = "x" if abs(dx) >= abs(dy) else "y"
    delta = dx if axis == "x" else dy
    forward = u < 0.5  # "left of" / "above": the subject has the smaller coordinate
    subject, obj = (first, second) if (delta > 0) == forward else (second, first)
    return subject, _pick(RELATIONS[axis][0 if forward else 1], v), obj


def caption(image: Image, seed: int, level: Level) -> str:
    rng = np.random.default_rng(seed)
    n = len(image.groups)
    order = rng.permutation(n).tolist()
    u_mention, u_opener, u_rel, u_rel_dir, u_rel_word = rng.random(5)
    u_scene = rng.random(3)
    u_groups = rng.random((n, 4))  # per group, not per slot: phrasings travel with the group in a twin
    u_connect = rng.random(n)
    if u_mention < level.p_mention_all:
        m = n
    elif u_mention < level.p_mention_all + level.p_mention_one:
        m = 1
    else:
        m = max(n - 1, 1)
    mentioned = order[:m]
    phrases = {g: _phrase(image.groups[g], u_groups[g], level.p_color) for g in mentioned}
    if m >= 2 and u_rel < level.p_relation:
        a, b = mentioned[0], mentioned[1]
        subject, words, obj = _relation(image.groups[a], image.groups[b], u_rel_dir, u_rel_word)
        s, o = (a, b) if subject is image.groups[a] else (b, a)
        parts = [f"{phrases[s]} {words} {phrases[o]}"]
        rest = mentioned[2:]
    else:
        parts = [phrases[mentioned[0]]]
        rest = mentioned[1:]
    text = _pick(OPENERS, u_opener) + parts[0]
    for g in rest:
        text += _pick(CONNECTORS, u_connect[g]) + phrases[g]
    if u_scene[0] < level.p_scene:
        text += f" {_pick(SCENE_PREPS, u_scene[1])} {_pick(SCENES[image.scene], u_scene[2])}"
    return text[0].upper() + text[1:] + " ."
