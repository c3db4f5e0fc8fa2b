"""Feature extraction on tiny generated images with a random-weight resnet18 (512-d), including resume."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from temde.features import (
    FeatureError,
    ImageFiles,
    build_backbone,
    extract_features,
    list_images,
    manifest_path,
    marker_path,
    partial_path,
)

REPO = Path(__file__).resolve().parents[1]
SMALL = {"arch": "resnet18", "random_weights": True, "image_size": 64, "grid": 2, "progress": False}


pytestmark = pytest.mark.usefixtures("single_thread")  # tiny tensors: see conftest.single_thread


@pytest.fixture(scope="module")
def image_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(0)
    sizes = [(40, 30), (64, 64), (20, 50), (33, 33), (70, 45)]
    for i, (w, h) in enumerate(sizes):
        arr = rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        im = Image.fromarray(arr)
        if i == 2:
            im = im.convert("L")  # grayscale is converted to RGB
        im.save(d / f"img_{i}.png")
    (d / "notes.txt").write_text("not an image")
    return d


def _reference(paths: list[Path]) -> np.ndarray:
    """Independent per-image forward pass of the same seeded backbone."""
    model = build_backbone("resnet18", random_weights=True, grid=2)
    ds = ImageFiles(paths, 64)
    with torch.no_grad():
        return np.stack([model(ds[i][None])[0].numpy() for i in range(len(ds))])


def test_list_images(image_dir: Path, tmp_path: Path) -> None:
    paths = list_images(image_dir)
    assert [p.name for p in paths] == [f"img_{i}.png" for i in range(5)]
    lst = tmp_path / "list.txt"
    lst.write_text("img_3.png\nimg_1.png\n\n")
    assert [p.name for p in list_images(lst, root=image_dir)] == ["img_3.png", "img_1.png"]
    lst.write_text("img_3.png\nmissing.png\n")
    with pytest.raises(FeatureError, match="not found"):
        list_images(lst, root=image_dir)


def test_full_run_matches_reference(image_dir: Path, tmp_path: Path) -> None:
    paths = list_images(image_dir)
    out = tmp_path / "test_ims.npy"
    assert extract_features(paths, out, batch_size=2, **SMALL) == 5
    feats = np.load(out)
    assert feats.shape == (5, 4, 512) and feats.dtype == np.float32
    np.testing.assert_allclose(feats, _reference(paths), rtol=1e-4, atol=1e-5)
    state = json.loads(manifest_path(out).read_text())
    assert state["complete"] and state["feature_dim"] == 512 and not marker_path(out).exists()
    assert extract_features(paths, out, batch_size=2, **SMALL) == 0  # finished: nothing recomputed


def test_resume_continues_and_keeps_written_rows(image_dir: Path, tmp_path: Path) -> None:
    paths = list_images(image_dir)
    out = tmp_path / "dev_ims.npy"
    assert extract_features(paths, out, batch_size=2, max_batches=1, **SMALL) == 2  # "interrupted"
    state = json.loads(marker_path(out).read_text())
    assert state["done"] == 2 and not out.exists()  # nothing published before every row is written
    # Mark the rows already written: a resume must not recompute (overwrite) them.
    mm = np.lib.format.open_memmap(partial_path(out), mode="r+")
    sentinel = mm[:2].copy() + 1000.0
    mm[:2] = sentinel
    mm.flush()
    del mm
    assert extract_features(paths, out, batch_size=2, **SMALL) == 3
    feats = np.load(out)
    np.testing.assert_array_equal(feats[:2], sentinel)
    np.testing.assert_allclose(feats[2:], _reference(paths)[2:], rtol=1e-4, atol=1e-5)
    assert json.loads(manifest_path(out).read_text())["complete"] and not partial_path(out).exists()


def test_truncated_partial_is_rebuilt_not_zero_filled(image_dir: Path, tmp_path: Path) -> None:
    # Issue 10 finding 6: a resume over a truncated file used to zero-fill it (numpy r+ memmap) and mark it done.
    paths = list_images(image_dir)
    out = tmp_path / "t_ims.npy"
    extract_features(paths, out, batch_size=2, max_batches=2, **SMALL)
    part = partial_path(out)
    os.truncate(part, part.stat().st_size // 2)
    assert extract_features(paths, out, batch_size=2, **SMALL) == 5  # rebuilt from row 0
    np.testing.assert_allclose(np.load(out), _reference(paths), rtol=1e-4, atol=1e-5)


def test_truncated_or_foreign_final_output_is_refused(image_dir: Path, tmp_path: Path) -> None:
    paths = list_images(image_dir)
    out = tmp_path / "f_ims.npy"
    extract_features(paths, out, batch_size=5, **SMALL)
    size = out.stat().st_size
    os.truncate(out, size - 100)
    with pytest.raises(FeatureError, match="truncated"):
        extract_features(paths, out, batch_size=5, **SMALL)
    assert out.stat().st_size == size - 100  # never extended with zeros
    manifest_path(out).unlink()
    with pytest.raises(FeatureError, match="without its manifest"):
        extract_features(paths, out, batch_size=5, **SMALL)
    assert extract_features(paths, out, batch_size=5, overwrite=True, **SMALL) == 5
    np.testing.assert_allclose(np.load(out), _reference(paths), rtol=1e-4, atol=1e-5)


def test_resume_refuses_changed_settings(image_dir: Path, tmp_path: Path) -> None:
    paths = list_images(image_dir)
    out = tmp_path / "x_ims.npy"
    extract_features(paths, out, batch_size=2, max_batches=1, **SMALL)
    with pytest.raises(FeatureError, match="settings differ"):
        extract_features(paths, out, batch_size=2, **{**SMALL, "grid": 1})
    assert extract_features(paths, out, batch_size=4, overwrite=True, **{**SMALL, "grid": 1}) == 5
    assert np.load(out).shape == (5, 1, 512)


def test_missing_weights_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty_hub"))
    with pytest.raises(FeatureError, match="not in torchvision's cache"):
        build_backbone("resnet18")
    with pytest.raises(FeatureError, match="weights file not found"):
        build_backbone("resnet18", weights=str(tmp_path / "nope.pth"))
    with pytest.raises(FeatureError, match="not supported"):
        build_backbone("vit_b_16", random_weights=True)


def test_weights_from_file(tmp_path: Path) -> None:
    net = build_backbone("resnet18", random_weights=True, grid=2)
    full = {f"module.{k}": v for k, v in torchvision_resnet18_state().items()}
    torch.save({"state_dict": full}, tmp_path / "r18.pth")
    loaded = build_backbone("resnet18", weights=str(tmp_path / "r18.pth"), grid=2)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x))


def torchvision_resnet18_state() -> dict:
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)  # same seed as RANDOM_SEED -> same weights as the random backbone
        return torchvision.models.resnet18(weights=None).state_dict()


def test_script_main(image_dir: Path, tmp_path: Path, capsys) -> None:
    spec = importlib.util.spec_from_file_location("extract_features", REPO / "scripts" / "extract_features.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    out = tmp_path / "s_ims.npy"
    argv = ["--images", str(image_dir), "--out", str(out), "--arch", "resnet18", "--random-weights",
            "--image-size", "32", "--grid", "1", "--workers", "0", "--device", "cpu", "--no-progress"]
    assert mod.main(argv) == 0
    assert np.load(out).shape == (5, 1, 512)
    assert mod.main(argv[:4] + ["--arch", "resnet18", "--no-progress", "--workers", "0"]) == 1  # exists/mismatch
    assert "error:" in capsys.readouterr().err
