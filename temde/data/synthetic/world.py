"""The synthetic world: concepts, visual prototypes, images (scene + object groups + boxes) and their regions.

Why this shape (docs/synthetic.md): classes share family components (confusable), colour is added to the class
inside the same region (attribute binding), every region carries its box (spatial relations, counts), and
distractor regions belong to nothing a caption names. Twins are minimal pairs: the same image with two groups'
colours or positions swapped, generated with the same random draws so they differ exactly where intended.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np

from temde.data.synthetic.spec import N_BOX_CHANNELS, SyntheticSpec

# class -> synonyms (the first is the canonical name); grouped by family: classes of a family look alike.
FAMILIES: dict[str, tuple[tuple[str, ...], ...]] = {
    "animal": (("dog", "puppy", "hound"), ("cat", "kitten", "kitty"), ("horse", "pony"), ("sheep", "lamb"),
               ("cow", "calf"), ("bird", "sparrow")),
    "person": (("man", "guy", "gentleman"), ("woman", "lady"), ("child", "kid"), ("boy", "lad"), ("girl", "lass")),
    "vehicle": (("car", "automobile"), ("bus", "coach"), ("truck", "lorry"), ("bicycle", "bike"),
                ("motorcycle", "motorbike"), ("boat", "ship")),
    "furniture": (("chair", "seat"), ("table", "desk"), ("bench", "pew"), ("sofa", "couch")),
    "food": (("cake", "pastry"), ("pizza", "flatbread"), ("apple", "fruit"), ("sandwich", "sub")),
    "object": (("umbrella", "parasol"), ("bottle", "flask"), ("cup", "mug"), ("book", "novel"), ("phone", "cellphone"),
               ("laptop", "computer")),
    "sport": (("ball", "football"), ("kite", "glider"), ("surfboard", "board"), ("skateboard", "deck"),
              ("frisbee", "disc")),
    "clothing": (("hat", "cap"), ("jacket", "coat"), ("scarf", "shawl"), ("shirt", "tee")),
}
CLASSES: tuple[tuple[str, ...], ...] = tuple(c for family in FAMILIES.values() for c in family)
CLASS_FAMILY: tuple[int, ...] = tuple(f for f, family in enumerate(FAMILIES.values()) for _ in family)
# No synonyms and no leading vowel: twin captions must have exactly the same words ("a red dog" / "a blue dog").
COLORS = ("red", "blue", "green", "yellow", "black", "white", "brown", "purple", "pink", "gray")
SCENES: tuple[tuple[str, ...], ...] = (("beach", "seaside", "shore"), ("street", "road"), ("park", "garden"),
                                       ("kitchen",), ("field", "meadow"), ("snow",), ("river", "lake"),
                                       ("city", "town"), ("forest", "woods"), ("stage",))
N_CLUTTER = 8  # unnamed background stuff (distractor regions): never in any caption
GRID = 4  # group centres sit on distinct cells of a GRID x GRID layout: any two differ by >= 1/GRID on an axis
MAX_GROUPS, MAX_COUNT = 4, 3


@dataclass
class Group:
    cls: int
    color: int
    count: int
    center: tuple[float, float]  # (x, y) in the unit square, y grows downwards as in image coordinates
    offsets: list[tuple[float, float, float, float]]  # per instance: dx, dy, width, height


@dataclass
class Image:
    scene: int
    groups: list[Group]
    distractors: list[tuple[int, int]]  # (kind: -1 clutter / class id, clutter id or colour)
    feature_seed: int  # region noise, slots and boxes: shared by twins so they differ only where intended
    caption_seeds: list[int]  # one per caption: shared by twins so they use the same phrasings
    twin: dict | None = None  # {"of": index in split, "kind": "binding" | "relation", "groups": [i, j]}


def prototypes(spec: SyntheticSpec) -> dict[str, np.ndarray]:
    """Unit-variance content prototypes; a class is sqrt(share) * family + sqrt(1 - share) * own."""
    rng = np.random.default_rng([spec.seed, 0])
    d, lv = spec.feature_dim - N_BOX_CHANNELS, spec.level
    family = rng.standard_normal((len(FAMILIES), d))
    own = rng.standard_normal((len(CLASSES), d))
    cls = np.sqrt(lv.family_share) * family[list(CLASS_FAMILY)] + np.sqrt(1 - lv.family_share) * own
    return {
        "class": cls.astype(np.float32),
        "color": (lv.color_scale * rng.standard_normal((len(COLORS), d))).astype(np.float32),
        "scene": rng.standard_normal((len(SCENES), d)).astype(np.float32),
        "clutter": rng.standard_normal((N_CLUTTER, d)).astype(np.float32),
    }


def class_frequencies(spec: SyntheticSpec) -> np.ndarray:
    """Probability of each class: ``1 / rank**class_zipf`` over a seeded ranking of the classes.

    Why: in Flickr30K and COCO a few classes (people, dogs, cars) are in most images and most classes are rare, so
    the *set* of classes in an image identifies it far less than under uniform sampling; this is what keeps a
    bag-of-regions model from matching on "which classes are there" alone.
    """
    rank = np.random.default_rng([spec.seed, 1000]).permutation(len(CLASSES)) + 1
    weights = rank.astype(np.float64) ** -spec.level.class_zipf
    return weights / weights.sum()


def regions_per_instance(spec: SyntheticSpec) -> int:
    """2 proposals per object instance when the largest image still leaves room for distractors, else 1."""
    return 2 if MAX_GROUPS * MAX_COUNT * 2 + spec.level.distractors[1] <= spec.n_regions else 1


def sample_image(rng: np.random.Generator, spec: SyntheticSpec, class_p: np.ndarray) -> Image:
    n_groups = int(rng.integers(2, MAX_GROUPS + 1))
    classes = rng.choice(len(CLASSES), n_groups, replace=False, p=class_p)
    cells = rng.choice(GRID * GRID, n_groups, replace=False)
    budget = spec.n_regions - 1  # at least one background region
    rpi = regions_per_instance(spec)
    groups = []
    for cls, cell in zip(classes.tolist(), cells.tolist()):
        count = int(rng.integers(1, MAX_COUNT + 1))
        count = min(count, (budget - rpi * sum(g.count for g in groups)) // rpi)
        if count < 1:
            break
        center = ((cell % GRID + 0.5) / GRID, (cell // GRID + 0.5) / GRID)
        offsets = [(float(rng.uniform(-0.08, 0.08)), float(rng.uniform(-0.08, 0.08)),
                    float(rng.uniform(0.08, 0.22)), float(rng.uniform(0.08, 0.22))) for _ in range(count)]
        groups.append(Group(int(cls), int(rng.integers(len(COLORS))), count, center, offsets))
    free = budget + 1 - rpi * sum(g.count for g in groups)
    lo, hi = spec.level.distractors
    n_dis = min(int(rng.integers(lo, hi + 1)), max(free - 1, 0))
    distractors = []
    for _ in range(n_dis):
        if rng.random() < 0.5:
            distractors.append((-1, int(rng.integers(N_CLUTTER))))
        else:  # a small object nobody mentions
            distractors.append((int(rng.choice(len(CLASSES), p=class_p)), int(rng.integers(len(COLORS)))))
    return Image(int(rng.integers(len(SCENES))), groups, distractors, int(rng.integers(2**31)),
                 [int(rng.integers(2**31)) for _ in range(5)])


def make_twin(image: Image, rng: np.random.Generator, index: int) -> Image | None:
    """The minimal pair of ``image``: two groups' colours (binding) or positions (relation) swapped."""
    pairs = [(i, j) for i in range(len(image.groups)) for j in range(i + 1, len(image.groups))]
    binding = [(i, j) for i, j in pairs if image.groups[i].color != image.groups[j].color]
    kind = "binding" if binding and rng.random() < 0.5 else "relation"
    options = binding if kind == "binding" else pairs
    if not options:
        return None
    i, j = options[int(rng.integers(len(options)))]
    twin = copy.deepcopy(image)
    a, b = twin.groups[i], twin.groups[j]
    if kind == "binding":
        a.color, b.color = b.color, a.color
    else:
        a.center, b.center = b.center, a.center
    twin.twin = {"of": index, "kind": kind, "groups": [i, j]}
    return twin


def sample_split(spec: SyntheticSpec, split_index: int, n_images: int) -> list[Image]:
    """The images of one split, twins right after their originals (deterministic in spec.seed and split)."""
    rng = np.random.default_rng([spec.seed, split_index + 1])
    images: list[Image] = []
    class_p = class_frequencies(spec)
    while len(images) < n_images:
        image = sample_image(rng, spec, class_p)
        images.append(image)
        if len(images) < n_images and rng.random() < spec.level.twin_fraction / (2 - spec.level.twin_fraction):
            twin = make_twin(image, rng, len(images) - 1)
            if twin is not None:
                images.append(twin)
    return images


def _box(center: tuple[float, float], offset: tuple[float, float, float, float],
         jitter: np.ndarray) -> np.ndarray:
    cx, cy = center[0] + offset[0] + jitter[0], center[1] + offset[1] + jitter[1]
    w, h = offset[2] * (1 + jitter[2]), offset[3] * (1 + jitter[3])
    x1, y1, x2, y2 = np.clip([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 0.0, 1.0)
    return np.array([x1, y1, x2, y2, (x2 - x1) * (y2 - y1)], dtype=np.float32)


def region_features(image: Image, protos: dict[str, np.ndarray], spec: SyntheticSpec) -> tuple[np.ndarray, np.ndarray]:
    """(R, F) non-negative features (content | box channels) and the owner of every region.

    Owner: group index >= 0, -1 background, -2 distractor. All random draws come from ``image.feature_seed`` in a
    fixed order that does not depend on colours or positions, so twins share every draw.
    """
    rng = np.random.default_rng(image.feature_seed)
    r, d, lv = spec.n_regions, spec.feature_dim - N_BOX_CHANNELS, spec.level
    slots = rng.permutation(r)
    content = np.empty((r, d), np.float32)
    boxes = np.empty((r, N_BOX_CHANNELS), np.float32)
    owner = np.full(r, -1, dtype=np.int64)
    noise = lv.region_noise * rng.standard_normal((r, d)).astype(np.float32)
    k = 0
    rpi = regions_per_instance(spec)
    for g, group in enumerate(image.groups):
        mean = protos["class"][group.cls] + protos["color"][group.color]
        for offset in group.offsets:
            instance = mean + lv.instance_noise * rng.standard_normal(d).astype(np.float32)
            for _ in range(rpi):
                jitter = rng.uniform(-0.03, 0.03, 4)
                content[slots[k]], boxes[slots[k]], owner[slots[k]] = instance, _box(group.center, offset, jitter), g
                k += 1
    for kind, which in image.distractors:
        small = (float(rng.uniform(0.05, 0.95)), float(rng.uniform(0.05, 0.95)))
        size = (0.0, 0.0, float(rng.uniform(0.03, 0.08)), float(rng.uniform(0.03, 0.08)))
        mean = protos["clutter"][which] if kind < 0 else protos["class"][kind] + protos["color"][which]
        content[slots[k]], boxes[slots[k]], owner[slots[k]] = mean, _box(small, size, np.zeros(4)), -2
        k += 1
    while k < r:  # background: the scene, large boxes
        center = (float(rng.uniform(0.2, 0.8)), float(rng.uniform(0.2, 0.8)))
        size = (0.0, 0.0, float(rng.uniform(0.3, 0.9)), float(rng.uniform(0.3, 0.9)))
        content[slots[k]], boxes[slots[k]] = protos["scene"][image.scene], _box(center, size, np.zeros(4))
        k += 1
    feats = np.concatenate([np.maximum(content + noise, 0.0), lv.box_scale * boxes], axis=1)
    return feats.astype(np.float32), owner
