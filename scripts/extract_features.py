#!/usr/bin/env python
"""Raw images -> SCAN-format region features ``<split>_ims.npy`` (N, R, C) float32, resumable.

Examples:

    # COCO test images listed by scripts/build_coco_captions.py, ResNet-152 7x7 grid (49 x 2048)
    python scripts/extract_features.py --images data/coco_byod/testall_images.txt --root /data/coco/images \
        --out data/coco_byod/testall_ims.npy --weights ~/models/resnet152-imagenet.pth --batch-size 64

    # a folder of images, weights already in torchvision's cache
    python scripts/extract_features.py --images my_photos/ --out data/mine/test_ims.npy

    # detected object regions (Faster R-CNN boxes, top 36 after NMS, RoI-pooled ResNet-152 features), with
    # data/mine/test_boxes.npy and test_regions_mask.npy beside them
    python scripts/extract_features.py --regions detector --images my_photos/ --out data/mine/test_ims.npy

Re-running the same command after an interruption continues where it stopped (see docs/byod.md).
"""

from __future__ import annotations

import argparse
import sys

import torch

from temde.cli import one_line
from temde.detector import (
    DEFAULT_DETECTOR,
    DEFAULT_DETECTOR_SIZE,
    DEFAULT_NMS_IOU,
    DEFAULT_NUM_REGIONS,
    DEFAULT_ROI_IMAGE_SIZE,
)
from temde.errors import EXIT_BAD_INPUT, InputError
from temde.features import (
    DEFAULT_ARCH,
    DEFAULT_GRID,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_WEIGHTS,
    FeatureError,
    extract_features,
    list_images,
)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="image folder, or a text file with one image path per line")
    p.add_argument("--root", default=None, help="base folder for relative paths in a list file")
    p.add_argument("--out", required=True, help="output .npy, e.g. data/mine/test_ims.npy")
    p.add_argument("--arch", default=DEFAULT_ARCH, help="torchvision resnet/resnext/wide_resnet name")
    p.add_argument("--weights", default=DEFAULT_WEIGHTS,
                   help="checkpoint path, or a torchvision weights name looked up in its local cache")
    p.add_argument("--random-weights", action="store_true", help="untrained backbone and detector (tests only)")
    p.add_argument("--regions", choices=("grid", "detector"), default="grid",
                   help="grid: grid x grid cells of the last feature map; detector: detected object boxes")
    p.add_argument("--num-regions", type=int, default=DEFAULT_NUM_REGIONS,
                   help="detector: boxes kept per image after NMS (fewer are padded and masked)")
    p.add_argument("--detector", default=DEFAULT_DETECTOR, help="detector: torchvision fasterrcnn_* model")
    p.add_argument("--detector-weights", default="DEFAULT",
                   help="detector: checkpoint path, or a torchvision weights name looked up in its local cache")
    p.add_argument("--nms-iou", type=float, default=DEFAULT_NMS_IOU, help="detector: class-agnostic NMS IoU")
    p.add_argument("--detector-size", type=int, default=DEFAULT_DETECTOR_SIZE,
                   help="detector: shorter image side it sees (torchvision min_size)")
    p.add_argument("--image-size", type=int, default=None,
                   help=f"ResNet input side (default {DEFAULT_IMAGE_SIZE} for grid, {DEFAULT_ROI_IMAGE_SIZE} for detector)")
    p.add_argument("--grid", type=int, default=DEFAULT_GRID, help="regions = grid * grid")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--device", default="cuda" if _cuda() else "cpu")
    p.add_argument("--overwrite", action="store_true", help="start over instead of resuming")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def _cuda() -> bool:
    return torch.cuda.is_available()


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        paths = list_images(args.images, args.root)
        n = extract_features(
            paths,
            args.out,
            arch=args.arch,
            weights=args.weights,
            random_weights=args.random_weights,
            image_size=args.image_size or (DEFAULT_IMAGE_SIZE if args.regions == "grid" else DEFAULT_ROI_IMAGE_SIZE),
            grid=args.grid,
            batch_size=args.batch_size,
            num_workers=args.workers,
            device=args.device,
            overwrite=args.overwrite,
            progress=not args.no_progress,
            regions=args.regions,
            num_regions=args.num_regions,
            detector=args.detector,
            detector_weights=args.detector_weights,
            nms_iou=args.nms_iou,
            detector_size=args.detector_size,
        )
    except InputError as err:
        print(one_line(err), file=sys.stderr)
        return EXIT_BAD_INPUT
    except FeatureError as err:  # extraction failed mid-way (not the input's fault): same one-line format
        print(one_line(err), file=sys.stderr)
        return 1
    print(f"{args.out}: {len(paths)} images ({n} computed in this run)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
