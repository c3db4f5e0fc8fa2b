#!/usr/bin/env python
"""Print top-k retrievals from a saved similarity matrix: text -> images and image -> texts.

    python scripts/visualize_retrieval.py --sims outputs/sims_test.npy \
        --captions data/f30k_precomp/test_caps.txt --ids data/f30k_precomp/test_ids.txt --k 5

``--sims`` is an (n_images, 5 * n_images) ``.npy`` (caption 5k..5k+4 describe image k); images are shown by row
index, their id (``--ids``, one per line, optional) and their first caption. Ground-truth hits are starred.
Ties are ordered by index (stable sort), so the listing is deterministic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from temde.data.layout import CAPTIONS_PER_IMAGE


def top_k(scores: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k highest scores, descending, ties by ascending index."""
    return np.argsort(-scores, kind="stable")[:k]


def _read_lines(path: str | None) -> list[str] | None:
    if path is None:
        return None
    lines = Path(path).read_text(encoding="utf-8", errors="replace").splitlines()
    while lines and not lines[-1].strip():
        lines.pop()
    return [ln.strip() for ln in lines]


def _pick(explicit: list[int] | None, n_items: int, count: int, rng: np.random.Generator) -> list[int]:
    if explicit is not None:
        bad = [i for i in explicit if not 0 <= i < n_items]
        if bad:
            raise SystemExit(f"query indices {bad} out of range [0, {n_items})")
        return explicit
    return sorted(rng.choice(n_items, size=min(count, n_items), replace=False).tolist())


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sims", required=True, help="(n_images, 5 * n_images) similarity matrix .npy")
    p.add_argument("--captions", required=True, help="<split>_caps.txt aligned with the matrix columns")
    p.add_argument("--ids", default=None, help="<split>_ids.txt: one image id per matrix row")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--text-queries", type=int, nargs="*", default=None, help="caption indices (default: random)")
    p.add_argument("--image-queries", type=int, nargs="*", default=None, help="image indices (default: random)")
    p.add_argument("--n-queries", type=int, default=3, help="random queries per direction when none are given")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sims = np.load(args.sims, mmap_mode="r")
    captions = _read_lines(args.captions)
    ids = _read_lines(args.ids)
    n_img, n_cap = sims.shape if sims.ndim == 2 else (0, 0)
    if sims.ndim != 2 or n_cap != CAPTIONS_PER_IMAGE * n_img:
        raise SystemExit(f"{args.sims}: shape {sims.shape}, expected (n_images, 5 * n_images)")
    if len(captions) != n_cap:
        raise SystemExit(f"{args.captions}: {len(captions)} captions, expected {n_cap} (matrix columns)")
    if ids is not None and len(ids) != n_img:
        raise SystemExit(f"{args.ids}: {len(ids)} ids, expected {n_img} (matrix rows)")
    rng = np.random.default_rng(args.seed)

    def image_name(i: int) -> str:
        return f"image {i}" + (f" (id {ids[i]})" if ids is not None else "")

    for j in _pick(args.text_queries, n_cap, args.n_queries, rng):
        gt = j // CAPTIONS_PER_IMAGE
        print(f'text query {j}: "{captions[j]}"  [ground truth: {image_name(gt)}]')
        col = np.asarray(sims[:, j], dtype=np.float64)
        for r, i in enumerate(top_k(col, args.k), 1):
            star = "*" if i == gt else " "
            print(f"  {r:2d}.{star} {image_name(int(i))}  score {col[i]:.4f}  | {captions[CAPTIONS_PER_IMAGE * i]}")
    for i in _pick(args.image_queries, n_img, args.n_queries, rng):
        print(f"image query {image_name(i)}:")
        row = np.asarray(sims[i], dtype=np.float64)
        for r, j in enumerate(top_k(row, args.k), 1):
            star = "*" if j // CAPTIONS_PER_IMAGE == i else " "
            print(f"  {r:2d}.{star} caption {j}  score {row[j]:.4f}  | {captions[j]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
