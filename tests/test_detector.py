"""Detector regions: NMS + top-k padding, RoI pooling against an independent mean, and the BYOD acceptance path
(``extract_features.py --regions detector --random-weights`` -> a valid SCAN split that trains one epoch)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from temde.checkpoint import load_model
from temde.data.check import main as check_main
from temde.data.precomp import PrecompDataset
from temde.data.vocab import build_vocab
from temde.detector import DetectorRegions, top_regions
from temde.features import FeatureError, boxes_path, extract_features, manifest_path, regions_mask_path
from temde.training import train
from tests.helpers import compose_config

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("single_thread")


def test_top_regions_suppresses_overlaps_and_pads_with_a_mask():
    boxes = torch.tensor([[0, 0, 10, 10], [1, 1, 10, 10], [20, 20, 30, 30]], dtype=torch.float32)
    scores = torch.tensor([0.9, 0.8, 0.5])
    out, mask = top_regions(boxes, scores, k=4, iou=0.3)
    assert mask.tolist() == [True, True, False, False]  # box 1 overlaps box 0 (IoU 0.81) and is dropped
    assert torch.equal(out[:2], boxes[[0, 2]]) and torch.all(out[2:] == -1)
    out, mask = top_regions(boxes, scores, k=1, iou=0.3)
    assert mask.tolist() == [True] and torch.equal(out[0], boxes[0])


class _WholeImage(nn.Module):
    """Fake detector: one box covering the whole image, plus nothing else."""

    def forward(self, images):
        return [{"boxes": torch.tensor([[0.0, 0.0, im.shape[2], im.shape[1]]]), "scores": torch.ones(1)}
                for im in images]


def test_whole_image_box_pools_to_the_feature_map_mean():
    trunk = nn.Conv2d(3, 5, kernel_size=32, stride=32)  # stride-32 "ResNet": 64 px -> 2 x 2 map
    regions = DetectorRegions(_WholeImage(), trunk, 5, num_regions=3).eval()
    raw = [torch.rand(3, 40, 90), torch.rand(3, 70, 50)]
    square = torch.rand(2, 3, 64, 64)
    feats, boxes, mask = regions(raw, square, [(40, 90), (70, 50)])
    assert feats.shape == (2, 3, 5) and mask.tolist() == [[True, False, False]] * 2
    expected = trunk(square).mean(dim=(2, 3))  # independent: the plain average of the whole map
    torch.testing.assert_close(feats[:, 0], expected, rtol=1e-5, atol=1e-6)
    assert torch.all(feats[:, 1:] == 0) and torch.equal(boxes[1, 0], torch.tensor([0.0, 0.0, 50.0, 70.0]))


def _script():
    spec = importlib.util.spec_from_file_location("extract_features", REPO / "scripts" / "extract_features.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_detector_extraction_writes_a_scan_split_that_trains(tmp_path):
    rng = np.random.default_rng(0)
    images = tmp_path / "imgs"
    images.mkdir()
    for i in range(6):
        Image.fromarray(rng.integers(0, 256, (50 + 7 * i, 70, 3), dtype=np.uint8)).save(images / f"{i}.png")
    data = tmp_path / "data" / "mine_precomp"
    words = ["a red dog", "a blue cat", "the green car", "one small bird", "a big tree", "two black hats"]
    for split in ("train", "dev", "test"):
        argv = ["--regions", "detector", "--random-weights", "--images", str(images), "--out",
                str(data / f"{split}_ims.npy"), "--arch", "resnet18", "--image-size", "64", "--num-regions", "8",
                "--detector", "fasterrcnn_mobilenet_v3_large_320_fpn", "--detector-size", "96",
                "--batch-size", "3", "--workers", "0", "--device", "cpu", "--no-progress"]
        assert _script().main(argv) == 0
        (data / f"{split}_caps.txt").write_text("".join(f"{w} number {j}\n" for w in words for j in range(5)))
    feats = np.load(data / "train_ims.npy")
    boxes, mask = np.load(boxes_path(data / "train_ims.npy")), np.load(regions_mask_path(data / "train_ims.npy"))
    assert feats.shape == (6, 8, 512) and feats.dtype == np.float32 and boxes.shape == (6, 8, 4)
    assert mask.dtype == bool and mask.any(1).all() and np.all(feats[~mask] == 0) and np.all(boxes[~mask] == -1)
    heights = np.broadcast_to(np.array([50 + 7 * i for i in range(6)])[:, None], mask.shape)
    assert np.all(boxes[mask] >= 0) and np.all(boxes[..., 2][mask] <= 70 + 1e-3)
    assert np.all(boxes[..., 3][mask] <= heights[mask] + 1e-3)
    assert json.loads(manifest_path(data / "train_ims.npy").read_text())["regions"] == "detector"
    # A valid SCAN split (the loader's checks: shape, dtype, 5 captions per row) ...
    split = PrecompDataset(tmp_path / "data", "mine_precomp", "train", build_vocab([], min_count=1))
    assert split.n_regions == 8 and split.feature_dim == 512 and len(split) == 30
    # ... that SGR trains on for one epoch (num_region follows the data: 8, not SGRAF's 36).
    overrides = [f"data.root={tmp_path / 'data'}", "data.name=mine_precomp", "data.synthetic=null",
                 "model=sgr", "model.img_dim=512", "model.embed_size=16", "model.word_dim=8", "model.sim_dim=8",
                 "data.batch_size=10", "~data.test_splits.testall_5fold",
                 "trainer.max_epochs=1", "trainer.accelerator=cpu", "trainer.enable_progress_bar=false",
                 "callbacks.progress_bar=null", "logger=none"]
    results, meta = train(compose_config("train", overrides), tmp_path / "run")
    assert set(results) == {"test"} and np.isfinite(results["test"]["rsum"]) and meta["val_best"] is not None
    _, payload = load_model(tmp_path / "run" / "model_best.ckpt")
    assert payload["model_config"]["num_region"] == 8  # the checkpoint rebuilds with the data's region count
    # The tree (features, captions, the vocabulary training built) passes the data check.
    assert check_main([str(tmp_path / "data")]) == 0


def test_missing_detector_weights_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    image = tmp_path / "a.png"
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(image)
    kwargs = {"arch": "resnet18", "regions": "detector", "progress": False}
    with pytest.raises(FeatureError, match="not in torchvision's cache"):  # backbone weights found, detector's not
        extract_features([image], tmp_path / "x_ims.npy", weights=str(_resnet18_file(tmp_path)), **kwargs)
    with pytest.raises(FeatureError, match="weights file not found"):
        extract_features([image], tmp_path / "x_ims.npy", weights=str(_resnet18_file(tmp_path)),
                         detector_weights=str(tmp_path / "nope.pth"), **kwargs)
    assert not (tmp_path / "x_ims.npy").exists()


def _resnet18_file(tmp_path):
    path = tmp_path / "r18.pth"
    if not path.exists():
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
    return path
