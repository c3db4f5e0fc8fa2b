#!/usr/bin/env python
"""Write SCAN-format caption files (``<name>_caps.txt``, ``<name>_ids.txt``, ``<name>_images.txt``) for COCO.

Example (Karpathy splits, official 2014 caption annotations):

    python scripts/build_coco_captions.py --split-file dataset_coco.json \
        --annotations annotations/captions_train2014.json annotations/captions_val2014.json \
        --split train --restval-to-train --out-dir data/coco_byod

See docs/byod.md for the whole bring-your-own-data pipeline.
"""

from __future__ import annotations

import argparse
import json
import sys

from temde.data.coco import KARPATHY_SPLITS, CocoBuildError, build_split


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--split-file", required=True, help="Karpathy split JSON (dataset_coco.json format)")
    p.add_argument("--annotations", nargs="*", default=[], help="official COCO captions_*.json (pycocotools); "
                   "omit to take the captions stored in the split file")
    p.add_argument("--split", nargs="+", default=["train", "val", "test"], choices=KARPATHY_SPLITS)
    p.add_argument("--restval-to-train", action="store_true", help="merge Karpathy 'restval' into 'train'")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--name", default=None, help="output prefix (one split only); default train/dev/testall")
    p.add_argument("--limit", type=int, default=None, help="keep only the first N images of each split")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.name and len(args.split) > 1:
        print("--name needs exactly one --split", file=sys.stderr)
        return 2
    try:
        for split in args.split:
            summary = build_split(
                args.split_file,
                split,
                args.out_dir,
                annotation_files=args.annotations,
                out_name=args.name,
                restval_to_train=args.restval_to_train,
                limit=args.limit,
            )
            print(json.dumps(summary))
    except CocoBuildError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
