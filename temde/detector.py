"""Detector regions for your own images: Faster R-CNN boxes, RoI-pooled from a ResNet feature map.

Why: SGRAF/VSRN were trained on 36 *object regions* per image, not on a grid. The papers' bottom-up-attention
features (Anderson et al. 2018: Faster R-CNN with a ResNet-101 trained on Visual Genome's 1600 object and 400
attribute classes, 10-100 boxes with a per-class score threshold, the detector's own pooled 2048-d res5 features)
cannot be reproduced with torchvision. This module does the closest thing torchvision offers, and
``docs/byod.md`` says plainly how it differs:

1. a torchvision detector (default ``fasterrcnn_resnet50_fpn``, COCO's 91 classes) proposes boxes; its
   per-class detections are merged by class-agnostic NMS (IoU ``nms_iou``) and the ``num_regions`` highest
   scoring are kept (fewer -> padded: zero features, box ``-1``, mask ``False``);
2. an ImageNet ResNet (the grid backbone, default ResNet-152, 2048 channels) runs on the image resized to
   ``image_size`` x ``image_size``; each box is RoI-aligned from its last feature map (stride 32) and
   average-pooled into one vector.

Boxes are in pixels of the original image (x1, y1, x2, y2), so they can be drawn on it.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
import torchvision
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import Dataset
from torchvision import transforms
from torchvision.ops import nms, roi_align

from temde.errors import InputError

DEFAULT_DETECTOR = "fasterrcnn_resnet50_fpn"
DEFAULT_NUM_REGIONS = 36  # as the SCAN/bottom-up features
DEFAULT_NMS_IOU = 0.3  # bottom-up-attention's class-agnostic suppression threshold
DEFAULT_DETECTOR_SIZE = 800  # torchvision's min_size: the shorter image side seen by the detector
DEFAULT_ROI_IMAGE_SIZE = 448  # feature-map input: 14 x 14 cells at stride 32
ROI_OUTPUT = 7  # RoI-align grid per box, then averaged (as a res5 head's global pool)
CANDIDATES = 300  # detections kept by torchvision before our class-agnostic NMS
IMAGENET_MEAN = (0.485, 0.456, 0.406)  # torchvision ImageNet normalisation (weights' transforms)
IMAGENET_STD = (0.229, 0.224, 0.225)


class DetectorImages(Dataset):
    """(image in [0, 1] at its own size for the detector, normalised square image for the ResNet, (h, w))."""

    def __init__(self, paths: Sequence[Path], image_size: int) -> None:
        self.paths = list(paths)
        self.to_tensor = transforms.ToTensor()
        self.square = transforms.Compose([transforms.Resize((image_size, image_size), antialias=True),
                                          transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD)])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor, tuple[int, int]]:
        try:
            with Image.open(self.paths[i]) as im:
                raw = self.to_tensor(im.convert("RGB"))
        except OSError as err:
            raise InputError(self.paths[i], f"a readable image file ({err})") from err
        return raw, self.square(raw), (raw.shape[1], raw.shape[2])


def collate_detector(samples: list) -> tuple[list[Tensor], Tensor, list[tuple[int, int]]]:
    return [s[0] for s in samples], torch.stack([s[1] for s in samples]), [s[2] for s in samples]


def build_detector(name: str = DEFAULT_DETECTOR, state: dict[str, Tensor] | None = None,
                   min_size: int = DEFAULT_DETECTOR_SIZE) -> nn.Module:
    """A torchvision Faster R-CNN in eval mode; ``state`` = its weights (``None``: random, tests only)."""
    if not name.startswith("fasterrcnn"):
        raise InputError("--detector", f"a torchvision Faster R-CNN (fasterrcnn_*), got {name!r}")
    kwargs = {"box_score_thresh": 0.0, "box_detections_per_img": CANDIDATES, "min_size": min_size,
              "max_size": max(min_size, int(min_size * 1333 / 800))}
    net = torchvision.models.get_model(name, weights=None, weights_backbone=None, **kwargs)
    if state is not None:
        missing, unexpected = net.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise InputError(name, f"detector weights that fit it; missing {missing[:3]}, unexpected {unexpected[:3]}")
    return net.eval()


def top_regions(boxes: Tensor, scores: Tensor, k: int, iou: float) -> tuple[Tensor, Tensor]:
    """Class-agnostic NMS, then the ``k`` best: (k, 4) boxes (-1 padded) and (k,) mask."""
    keep = nms(boxes, scores, iou)[:k]
    out = boxes.new_full((k, 4), -1.0)
    out[: len(keep)] = boxes[keep]
    mask = torch.zeros(k, dtype=torch.bool, device=boxes.device)
    mask[: len(keep)] = True
    return out, mask


class DetectorRegions(nn.Module):
    """detector + ResNet trunk -> per image (k, C) region vectors, (k, 4) boxes, (k,) mask."""

    def __init__(self, detector: nn.Module, trunk: nn.Module, feature_dim: int, num_regions: int,
                 nms_iou: float = DEFAULT_NMS_IOU) -> None:
        super().__init__()
        self.detector, self.trunk = detector, trunk
        self.feature_dim, self.num_regions, self.nms_iou = feature_dim, num_regions, nms_iou

    @torch.no_grad()
    def forward(self, raw: list[Tensor], square: Tensor, sizes: list[tuple[int, int]]
                ) -> tuple[Tensor, Tensor, Tensor]:
        detections = self.detector(raw)
        picked = [top_regions(d["boxes"], d["scores"], self.num_regions, self.nms_iou) for d in detections]
        boxes = torch.stack([p[0] for p in picked])
        mask = torch.stack([p[1] for p in picked])
        fmap = self.trunk(square)  # (B, C, S/32, S/32)
        side = square.shape[-1]
        # Boxes in the square image's pixels (the ResNet saw the whole image resized to side x side).
        scale = torch.tensor([[side / w, side / h, side / w, side / h] for h, w in sizes],
                             dtype=boxes.dtype, device=boxes.device)
        rois = (boxes.clamp(min=0) * scale[:, None, :]).unbind(0)
        pooled = roi_align(fmap, list(rois), output_size=ROI_OUTPUT, spatial_scale=fmap.shape[-1] / side,
                           sampling_ratio=2, aligned=True)  # (B*k, C, 7, 7)
        feats = pooled.mean(dim=(2, 3)).view(len(raw), self.num_regions, -1)
        feats = feats * mask[..., None].to(feats.dtype)
        return feats, boxes, mask
