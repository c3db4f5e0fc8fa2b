#!/usr/bin/env python
"""Print top-k retrievals: text -> images and image -> texts, from a checkpoint or a saved similarity matrix.

    # score the split with a checkpoint (nothing saved beforehand)
    python scripts/visualize_retrieval.py --ckpt outputs/train/.../model_best.ckpt \
        --root data --name synthetic_precomp --split test --k 5

    # or read a matrix written by `python -m temde.evaluate ... save_sims=true`
    python scripts/visualize_retrieval.py --sims outputs/eval/.../sims_test.npy \
        --captions data/f30k_precomp/test_caps.txt --k 5

The matrix is (n_images, 5 * n_images) (caption 5k..5k+4 describe image k); images are shown by row index, their
id and their first caption. Ids come from ``--ids`` (one per line), else (with ``--ckpt``) from
``<root>/<name>/<split>_ids.txt`` when that file exists (COCO/Flickr30K trees built by ``scripts/build_coco_captions.py``); otherwise only the row
index is shown (the synthetic data has no ids). Ground-truth hits are starred. Ties are ordered by index (stable
sort), so the listing is deterministic.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from temde.checkpoint import load_model
from temde.data.layout import CAPTIONS_PER_IMAGE  # noqa: E402  (one home for the layout)
from temde.data.precomp import PrecompDataset
from temde.errors import InputError
from temde.viz.attention import checkpoint_caption_encoder, dataset_similarity


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
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--ckpt", help="model checkpoint: score --root/--name/--split with it")
    src.add_argument("--sims", help="(n_images, 5 * n_images) similarity matrix .npy (evaluate save_sims=true)")
    p.add_argument("--root", default="data", help="with --ckpt: data root")
    p.add_argument("--name", default="synthetic_precomp", help="with --ckpt: dataset directory name")
    p.add_argument("--split", default="test", help="with --ckpt: split to score")
    p.add_argument("--vocab", default=None,
                   help="with --ckpt: vocabulary file when the checkpoint carries none (must equal a stored one)")
    p.add_argument("--captions", default=None,
                   help="<split>_caps.txt aligned with the matrix columns (default with --ckpt: the split's)")
    p.add_argument("--ids", default=None, help="<split>_ids.txt: one image id per matrix row")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--text-queries", type=int, nargs="*", default=None, help="caption indices (default: random)")
    p.add_argument("--image-queries", type=int, nargs="*", default=None, help="image indices (default: random)")
    p.add_argument("--n-queries", type=int, default=3, help="random queries per direction when none are given")
    p.add_argument("--seed", type=int, default=0)
    return p.parse_args(argv)


def _score_split(args: argparse.Namespace) -> np.ndarray:
    model, payload = load_model(args.ckpt)
    vocab = checkpoint_caption_encoder(args.ckpt, payload, args.vocab)
    dataset = PrecompDataset(args.root, args.name, args.split, vocab)
    return dataset_similarity(model, dataset).numpy()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    split_dir = Path(args.root) / args.name
    if args.ckpt:
        try:
            sims = _score_split(args)
        except InputError as err:
            print(err.one_line(), file=sys.stderr)
            return 2
        args.captions = args.captions or str(split_dir / f"{args.split}_caps.txt")
    else:
        sims = np.load(args.sims, mmap_mode="r")
        if args.captions is None:
            raise SystemExit("--captions is required with --sims")
    if args.ckpt and args.ids is None and (split_dir / f"{args.split}_ids.txt").is_file():
        args.ids = str(split_dir / f"{args.split}_ids.txt")
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
