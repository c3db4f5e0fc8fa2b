"""Region features for your own images: a torchvision CNN's last feature map as a grid of "regions".

The SCAN files the papers use hold 36 bottom-up-attention regions (Faster R-CNN on Visual Genome) per image;
that detector is not reproducible here, so the bring-your-own-data path uses grid features instead (as VSE++
did with ResNet-152): the final conv map, average-pooled to ``grid x grid`` cells, each a ``region`` of
``C`` channels (ResNet-152 at 224 px: 7 x 7 = 49 regions x 2048). Models trained on bottom-up features must be
retrained on grid features; the file format is the same.

``regions="detector"`` uses detected object boxes instead (:mod:`temde.detector`; closer to the papers' regions).

Output is the SCAN ``<split>_ims.npy`` float32 array (N, R, C), written through ``np.lib.format.open_memmap`` so
memory stays bounded, into a partial file with a progress marker: rows ``[0, done)`` are flushed to disk before
the marker advances, so an interrupted run resumes at ``done``; the finished file is published atomically with a
manifest (:mod:`temde.resumable`), and a truncated or mismatched output is refused, never zero-filled.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import urlparse

import torch
import torchvision
from PIL import Image
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms
from tqdm.auto import tqdm

from temde.detector import (
    DEFAULT_DETECTOR,
    DEFAULT_DETECTOR_SIZE,
    DEFAULT_NMS_IOU,
    DEFAULT_NUM_REGIONS,
    IMAGENET_MEAN,
    IMAGENET_STD,
    DetectorImages,
    DetectorRegions,
    build_detector,
    collate_detector,
)
from temde.resumable import OutputError, ResumableArrays, manifest_path, marker_path, partial_path  # noqa: F401

DEFAULT_ARCH = "resnet152"  # VSE++-style grid features, 2048 channels
DEFAULT_IMAGE_SIZE = 224  # ResNet stride 32 -> a 7 x 7 final map
DEFAULT_GRID = 7  # 7 x 7 = 49 regions per image
DEFAULT_WEIGHTS = "DEFAULT"  # torchvision's recommended ImageNet weights for the arch (read from its cache)
RANDOM_SEED = 0  # random-weight backbones are seeded so a resumed run uses identical weights
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".gif", ".tif", ".tiff")
SUPPORTED_FAMILIES = ("resnet", "resnext", "wide_resnet")  # torchvision models ending in avgpool + fc


class FeatureError(ValueError):
    """Bad input to feature extraction; the message names the file and what was expected."""


# ---------------------------------------------------------------- image lists
def list_images(source: str | Path, root: str | Path | None = None) -> list[Path]:
    """A folder (its image files, sorted by name, non-recursive) or a text file of paths (one per line).

    Relative paths in a list file are resolved against ``root`` (default: the list file's folder); e.g. the
    ``<split>_images.txt`` written by ``scripts/build_coco_captions.py`` with ``root`` = the COCO image folder.
    """
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())
        if not paths:
            raise FeatureError(f"{source}: folder has no image files ({', '.join(IMAGE_EXTENSIONS)})")
        return paths
    if not source.is_file():
        raise FeatureError(f"{source}: expected an image folder or a text file listing image paths")
    base = Path(root) if root is not None else source.parent
    lines = [ln.strip() for ln in source.read_text().splitlines()]
    paths = [Path(ln) if Path(ln).is_absolute() else base / ln for ln in lines if ln]
    if not paths:
        raise FeatureError(f"{source}: list file is empty (expected one image path per line)")
    missing = [p for p in paths if not p.is_file()]
    if missing:
        raise FeatureError(f"{source}: {len(missing)} listed image(s) not found, e.g. {missing[0]} (root {base})")
    return paths


class ImageFiles(Dataset):
    """RGB images resized to ``size x size`` (the whole image, no crop: every region should be seen)."""

    def __init__(self, paths: Sequence[Path], size: int) -> None:
        self.paths = list(paths)
        self.transform = transforms.Compose(
            [
                transforms.Resize((size, size), antialias=True),
                transforms.ToTensor(),
                transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
            ]
        )

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> Tensor:
        try:
            with Image.open(self.paths[i]) as im:
                return self.transform(im.convert("RGB"))
        except OSError as err:
            raise FeatureError(f"{self.paths[i]}: cannot read image: {err}") from err


# ---------------------------------------------------------------- backbone
class GridBackbone(nn.Module):
    """CNN trunk (classifier head removed) + adaptive average pooling to a fixed ``grid x grid``."""

    def __init__(self, net: nn.Module, grid: int) -> None:
        super().__init__()
        self.feature_dim = int(net.fc.in_features)
        self.trunk = nn.Sequential(*list(net.children())[:-2])  # drop avgpool + fc
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.grid = grid

    def forward(self, images: Tensor) -> Tensor:
        """(B, 3, H, W) -> (B, grid * grid, C) regions in row-major order."""
        return self.pool(self.trunk(images)).flatten(2).transpose(1, 2)


def _cached_torchvision_weights(arch: str, name: str) -> dict[str, Tensor]:
    try:
        enum = torchvision.models.get_model_weights(arch)
        w = enum.verify(name)
    except (ValueError, KeyError) as err:
        raise FeatureError(f"unknown torchvision weights {name!r} for {arch}: {err}") from err
    cached = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(w.url).path).name
    if not cached.is_file():
        raise FeatureError(
            f"pretrained weights for {arch} ({w}) are not in torchvision's cache ({cached}) and nothing is "
            "downloaded here: pass --weights /path/to/checkpoint.pth, copy the file to that cache path, or use "
            "--random-weights (tests only; the features are then meaningless)"
        )
    return torch.load(cached, map_location="cpu", weights_only=True)


def _file_weights(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise FeatureError(f"{path}: weights file not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict):
        raise FeatureError(f"{path}: expected a state dict (optionally under 'state_dict' or 'model')")
    return {k.removeprefix("module."): v for k, v in state.items()}


def build_backbone(
    arch: str = DEFAULT_ARCH,
    weights: str | Path | None = DEFAULT_WEIGHTS,
    random_weights: bool = False,
    grid: int = DEFAULT_GRID,
) -> GridBackbone:
    """Eval-mode grid backbone; ``weights`` is a checkpoint path or a torchvision weights name (cache only)."""
    if not arch.startswith(SUPPORTED_FAMILIES):
        raise FeatureError(f"arch {arch!r} not supported; expected a torchvision {'/'.join(SUPPORTED_FAMILIES)}*")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        net = torchvision.models.get_model(arch, weights=None)
    if not random_weights:
        if weights is None:
            raise FeatureError("no weights given: pass a checkpoint path, a torchvision weights name, or "
                               "--random-weights (tests only)")
        w = str(weights)
        missing, unexpected = net.load_state_dict(_weights_state(weights, arch), strict=False)
        missing = [k for k in missing if not k.startswith("fc.")]  # the classifier head is dropped anyway
        if missing or unexpected:
            raise FeatureError(
                f"weights {w} do not fit {arch}: missing {missing[:3]}..., unexpected {unexpected[:3]}..."
            )
    return GridBackbone(net, grid).eval()


# ---------------------------------------------------------------- extraction with resume
def _beside(out_path: str | Path, suffix: str) -> Path:
    out_path = Path(out_path)
    stem = out_path.name.removesuffix(".npy").removesuffix("_ims")
    return out_path.with_name(f"{stem}_{suffix}.npy")


def boxes_path(out_path: str | Path) -> Path:
    """``test_ims.npy`` -> ``test_boxes.npy`` (detector mode writes boxes beside the features)."""
    return _beside(out_path, "boxes")


def regions_mask_path(out_path: str | Path) -> Path:
    """``test_ims.npy`` -> ``test_regions_mask.npy`` (which detector regions are real, not padding)."""
    return _beside(out_path, "regions_mask")


def _images_digest(paths: Sequence[Path]) -> str:
    return hashlib.sha1("\n".join(str(p) for p in paths).encode()).hexdigest()


def _weights_state(name: str | Path | None, arch: str) -> dict[str, Tensor]:
    w = str(name)
    looks_like_path = os.sep in w or w.endswith((".pth", ".pt", ".bin")) or Path(w).exists()
    return _file_weights(Path(w)) if looks_like_path else _cached_torchvision_weights(arch, w)


def build_detector_regions(arch: str, weights: str | Path | None, detector: str, detector_weights: str | None,
                           random_weights: bool, num_regions: int, nms_iou: float,
                           detector_size: int) -> DetectorRegions:
    """Detector + the grid backbone's trunk (``build_backbone``) as one eval-mode module."""
    if num_regions < 1:
        raise FeatureError(f"--num-regions must be >= 1, got {num_regions}")
    backbone = build_backbone(arch, weights, random_weights, grid=1)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(RANDOM_SEED)
        state = None if random_weights else _weights_state(detector_weights, detector)
        det = build_detector(detector, state, detector_size)
    return DetectorRegions(det, backbone.trunk, backbone.feature_dim, num_regions, nms_iou).eval()


@torch.inference_mode()
def extract_features(
    image_paths: Sequence[str | Path],
    out_path: str | Path,
    arch: str = DEFAULT_ARCH,
    weights: str | Path | None = DEFAULT_WEIGHTS,
    random_weights: bool = False,
    image_size: int = DEFAULT_IMAGE_SIZE,
    grid: int = DEFAULT_GRID,
    batch_size: int = 32,
    num_workers: int = 0,
    device: str | torch.device = "cpu",
    overwrite: bool = False,
    progress: bool = True,
    max_batches: int | None = None,
    regions: str = "grid",
    num_regions: int = DEFAULT_NUM_REGIONS,
    detector: str = DEFAULT_DETECTOR,
    detector_weights: str | None = DEFAULT_WEIGHTS,
    nms_iou: float = DEFAULT_NMS_IOU,
    detector_size: int = DEFAULT_DETECTOR_SIZE,
) -> int:
    """Write (N, R, C) float32 features for ``image_paths`` (row i = image i); returns rows computed now.

    ``regions="grid"``: R = grid * grid cells. ``regions="detector"``: R = ``num_regions`` detected boxes
    (:mod:`temde.detector`), with ``<split>_boxes.npy`` (N, R, 4) and ``<split>_regions_mask.npy`` (N, R)
    beside the features. Outputs are published atomically with a manifest (:mod:`temde.resumable`); re-running
    the same command resumes, a finished output is left alone. ``max_batches`` stops early (tests: an interruption).
    """
    if regions not in ("grid", "detector"):
        raise FeatureError(f"--regions must be grid or detector, got {regions!r}")
    paths = [Path(p) for p in image_paths]
    if not paths:
        raise FeatureError("no images to extract")
    out_path = Path(out_path)
    config: dict = {"n_images": len(paths), "images_sha1": _images_digest(paths), "arch": arch,
                    "weights": "random" if random_weights else str(weights), "image_size": image_size,
                    "regions": regions}
    if regions == "grid":
        model: nn.Module = build_backbone(arch, weights, random_weights, grid).to(device)
        config["grid"] = grid
        n_regions = grid * grid
        dataset: Dataset = ImageFiles(paths, image_size)
        collate_fn = None
    else:
        model = build_detector_regions(arch, weights, detector, detector_weights, random_weights, num_regions,
                                       nms_iou, detector_size).to(device)
        config.update(detector=detector, detector_weights="random" if random_weights else str(detector_weights),
                      num_regions=num_regions, nms_iou=nms_iou, detector_size=detector_size)
        n_regions = num_regions
        dataset, collate_fn = DetectorImages(paths, image_size), collate_detector
    config["feature_dim"] = model.feature_dim
    arrays = {"features": (out_path, (len(paths), n_regions, model.feature_dim), "float32")}
    if regions == "detector":
        arrays["boxes"] = (boxes_path(out_path), (len(paths), n_regions, 4), "float32")
        arrays["regions_mask"] = (regions_mask_path(out_path), (len(paths), n_regions), "bool")
    try:
        out = ResumableArrays(arrays, config, overwrite)
    except OutputError as err:
        raise FeatureError(str(err)) from err
    if out.complete:
        return 0
    start = out.start
    mm = out.open()
    todo = torch.utils.data.Subset(dataset, range(start, len(paths)))
    loader = DataLoader(todo, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate_fn)
    done = start
    bar = tqdm(total=len(paths), initial=start, unit="img", desc=out_path.name, disable=not progress)
    for b, batch in enumerate(loader):
        if max_batches is not None and b >= max_batches:
            break
        if regions == "grid":
            result = {"features": model(batch.to(device))}
        else:
            raw, square, sizes = batch
            feats, boxes, mask = model([r.to(device) for r in raw], square.to(device), sizes)
            result = {"features": feats, "boxes": boxes, "regions_mask": mask}
        n = len(result["features"])
        for name, value in result.items():
            mm[name][done : done + n] = value.cpu().numpy()
        done += n
        out.advance(mm, done)  # rows on disk before the marker claims them
        bar.update(n)
    bar.close()
    if done == len(paths):
        out.publish(mm)
    return done - start
