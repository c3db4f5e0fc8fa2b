"""What a synthetic dataset is made of: sizes, seed and a difficulty level (docs/synthetic.md).

Why a separate file: the spec is what the manifest records and what ``ensure_synthetic_dataset`` compares, and the
levels are the one place where "how hard" is decided (fixed from the design, never tuned towards a model).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from temde.errors import InputError

N_BOX_CHANNELS = 5  # x1, y1, x2, y2, area: the last channels of every region feature


@dataclass(frozen=True)
class Level:
    """Knobs of one difficulty level (see the table in docs/synthetic.md)."""

    region_noise: float  # std of the per-region Gaussian noise (prototypes have unit-variance entries)
    instance_noise: float  # std of a per-instance deviation shared by its regions (no two dogs look alike)
    family_share: float  # fraction of a class prototype's variance shared with its family (confusable classes)
    color_scale: float  # size of the colour prototype relative to the class prototype
    twin_fraction: float  # fraction of images that come as minimal pairs (binding or relation twins)
    distractors: tuple[int, int]  # min, max distractor regions per image (clutter or unmentioned small objects)
    box_scale: float  # the box channels are multiplied by this (features are O(1); boxes are in [0, 1])
    class_zipf: float = 0.0  # class frequency ~ 1 / rank**class_zipf (0: uniform; 1: Zipf's law, as real captions)
    p_color: float = 0.8  # a mentioned group's colour is said with this probability
    p_mention_all: float = 0.45  # a caption names every group with this probability ...
    p_mention_one: float = 0.15  # ... only one with this one, else all but one
    p_relation: float = 0.5  # a caption naming >= 2 groups relates the first two spatially ("left of", "above")
    p_scene: float = 0.5  # a caption names the scene ("on the beach")


LEVELS: dict[str, Level] = {
    "easy": Level(region_noise=0.5, instance_noise=0.3, family_share=0.3, color_scale=0.8, twin_fraction=0.3,
                  distractors=(0, 2), box_scale=2.0),
    "standard": Level(region_noise=1.0, instance_noise=0.5, family_share=0.6, color_scale=0.8, twin_fraction=0.4,
                      distractors=(2, 6), box_scale=2.0, class_zipf=1.0, p_color=0.35,
                      p_mention_all=0.15, p_mention_one=0.45, p_relation=0.3, p_scene=0.35),
}


@dataclass(frozen=True)
class SyntheticSpec:
    """Sizes, level and seed of a synthetic dataset (defaults: the ``standard`` world of ``make train``)."""

    n_train: int = 2000
    n_dev: int = 100
    n_test: int = 100
    n_testall: int = 500  # 5 folds of 100 images for the COCO-1K-style protocol
    n_regions: int = 36
    feature_dim: int = 2048
    difficulty: str = "standard"
    seed: int = 0

    def __post_init__(self) -> None:
        if self.difficulty not in LEVELS:
            raise InputError("data.synthetic.difficulty", f"one of {', '.join(LEVELS)}, got {self.difficulty!r}")
        if self.feature_dim < N_BOX_CHANNELS + 4:
            raise InputError("data.synthetic.feature_dim", f"at least {N_BOX_CHANNELS + 4} "
                             f"({N_BOX_CHANNELS} box channels + content), got {self.feature_dim}")
        if self.n_regions < 4:
            raise InputError("data.synthetic.n_regions", f"at least 4, got {self.n_regions}")
        for split, n in self.splits().items():
            if n < 1:
                raise InputError(f"data.synthetic.n_{split}", f"a positive number of images, got {n}")

    @property
    def level(self) -> Level:
        return LEVELS[self.difficulty]

    def splits(self) -> dict[str, int]:
        return {"train": self.n_train, "dev": self.n_dev, "test": self.n_test, "testall": self.n_testall}

    def to_dict(self) -> dict:
        return asdict(self)
