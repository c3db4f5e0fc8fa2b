#!/usr/bin/env python
"""Attention picture for one caption and one image of a split (logic: temde.viz.attention).

    python scripts/visualize_attention.py --ckpt outputs/train/.../model_best.ckpt \
        --root data --name synthetic_precomp --split test --caption 12 --out attention.png

Shows the text-to-image attention of every word over the regions (weighted boxes on the image with
``--image-file`` + ``--boxes <split>_boxes.npy`` from ``extract_features.py --regions detector``, else a
words x regions heat map), the top-k retrieved images and captions with scores, and for T-EMDE models the sketch
buckets the caption and the image share. ``--image`` defaults to the caption's own image.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from temde.checkpoint import load_model
from temde.cli import one_line
from temde.data.precomp import CAPTIONS_PER_IMAGE, DataError, PrecompDataset
from temde.errors import EXIT_BAD_INPUT, InputError
from temde.viz.attention import caption_words, checkpoint_caption_encoder, draw, explain


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--ckpt", required=True, help="model checkpoint (model_best.ckpt, a converted one, ...)")
    p.add_argument("--root", default="data", help="data root holding <name>/<split>_ims.npy and _caps.txt")
    p.add_argument("--name", default="synthetic_precomp")
    p.add_argument("--split", default="test")
    p.add_argument("--caption", type=int, default=0, help="caption index in <split>_caps.txt")
    p.add_argument("--image", type=int, default=None, help="image index (default: the caption's own image)")
    p.add_argument("--k", type=int, default=5, help="retrievals listed per direction")
    p.add_argument("--vocab", default=None,
                   help="vocabulary file when the checkpoint carries none (must equal a stored one)")
    p.add_argument("--image-file", default=None, help="the image itself, to draw boxes on")
    p.add_argument("--boxes", default=None, help="<split>_boxes.npy (N, R, 4) from --regions detector")
    p.add_argument("--out", required=True, help="output PNG")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        model, payload = load_model(args.ckpt)
        vocab = checkpoint_caption_encoder(args.ckpt, payload, args.vocab)
        dataset = PrecompDataset(args.root, args.name, args.split, vocab)
        image = args.image if args.image is not None else args.caption // CAPTIONS_PER_IMAGE
        boxes = None
        if args.boxes:
            all_boxes = np.load(args.boxes, mmap_mode="r", allow_pickle=False)
            if all_boxes.shape[:2] != dataset.features.shape[:2] or all_boxes.shape[2:] != (4,):
                raise InputError(args.boxes, f"boxes of shape {(*dataset.features.shape[:2], 4)}, "
                                             f"found {all_boxes.shape}")
            boxes = np.asarray(all_boxes[dataset.image_row(image * CAPTIONS_PER_IMAGE)])
        words = caption_words(vocab, vocab.encode(dataset.captions[args.caption]))
        expl = explain(model, dataset, args.caption, image, words, k=args.k)
        captions = [c.decode("utf-8", errors="replace") for c in dataset.captions]
        out = draw(expl, args.out, captions, args.image_file, boxes)
    except (InputError, DataError, IndexError, FileNotFoundError, ValueError) as err:
        print(one_line(err), file=sys.stderr)
        return EXIT_BAD_INPUT
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
