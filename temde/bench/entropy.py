"""Entropy of untrained T-EMDE sketches on synthetic regions (a side study of the latency benchmark).

Per-depth entropy of the default sketches of synthetic-dataset regions (the ``temde.data.synthetic`` generator,
through a Xavier Linear(2048 -> D) + l2norm like SGRAF's image encoder at init), and how well two disjoint
halves of an image's regions retrieve each other (R@1). The trained-model counterpart is
``scripts/sketch_entropy.py``.
"""

from __future__ import annotations

import math
import tempfile

import numpy as np
import torch
from torch import Tensor, nn

from temde.data.synthetic import SyntheticSpec, write_synthetic_dataset
from temde.modules.pooling import MeanPool
from temde.modules.temde import TEMDE


def synthetic_tokens(n_images: int, dim: int) -> tuple[Tensor, str]:
    """(n_images, 36, dim) l2-normalized region features from the synthetic world's train regions."""
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        spec = SyntheticSpec(n_train=n_images, n_dev=2, n_test=2, n_testall=2)
        ims = torch.from_numpy(np.load(write_synthetic_dataset(tmp, spec=spec, progress=False) / "train_ims.npy"))
    fc = nn.Linear(ims.shape[-1], dim)
    nn.init.xavier_uniform_(fc.weight)
    nn.init.zeros_(fc.bias)
    with torch.no_grad():
        x = nn.functional.normalize(fc(ims), dim=-1)
    return x, (f"temde.data.synthetic train regions (SyntheticSpec defaults, n_train={n_images}) -> Xavier "
               f"Linear(2048->{dim}) -> l2norm")


def bench_entropy(dim: int, n_images: int = 256, scales: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 6.0)) -> dict:
    """Sketch entropy (nats) on synthetic regions: set-level (soft / hard), token-level; half-set R@1."""
    x, source = synthetic_tokens(n_images, dim)
    init, evaluate = x[: n_images // 2], x[n_images // 2 :]
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(0))
    half_a, half_b = evaluate[:, perm[: x.shape[1] // 2]], evaluate[:, perm[x.shape[1] // 2 :]]

    def entropy(p: Tensor) -> float:
        return float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())

    def r_at_1(a: Tensor, b: Tensor) -> float:
        sims = a.flatten(1) @ b.flatten(1).t()
        return float((sims.argmax(1) == torch.arange(len(sims))).float().mean())

    default = TEMDE(dim).init_scale
    table = {}
    with torch.no_grad():
        for scale in sorted(set(scales) | {default}):
            torch.manual_seed(0)
            m = TEMDE(dim, init_scale=scale)
            m.init_from_data(init.reshape(1, -1, dim))  # first "batch": the init half's regions
            table[str(scale)] = {
                "set_entropy_soft": entropy(m.histogram(evaluate)),
                "set_entropy_hard": entropy(m.hard_histogram(evaluate)),
                "token_entropy": entropy(m.assign(evaluate)),
                "half_set_r1_soft": r_at_1(m(half_a), m(half_b)),
                "half_set_r1_hard": r_at_1(m.hard_sketch(half_a), m.hard_sketch(half_b)),
            }
        mean = MeanPool()
        mean_r1 = r_at_1(mean(half_a), mean(half_b))
    d = table[str(default)]
    return {
        "source": source,
        "images_init": int(init.shape[0]),
        "images_eval": int(evaluate.shape[0]),
        "log_W": math.log(TEMDE(dim).width),
        "log_tokens_per_set": math.log(x.shape[1]),
        "default_init_scale": default,
        "mean_per_depth_entropy": d["set_entropy_soft"],
        "mean_per_depth_entropy_hard": d["set_entropy_hard"],
        "mean_token_entropy": d["token_entropy"],
        "by_init_scale": table,
        "half_set_r1_meanpool": mean_r1,
        "note": "set entropy = entropy of a depth row of the image's histogram (36 regions); its floor is the "
                "hard histogram's. half_set_r1: the sketch of 18 random regions retrieves the sketch of the "
                "other 18 of the same image among all eval images (untrained hyperplanes).",
    }


