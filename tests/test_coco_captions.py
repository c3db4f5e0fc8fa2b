"""COCO caption building on a tiny annotation + Karpathy split file written by the test."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from temde.data.coco import CocoBuildError, build_split, load_karpathy_split

REPO = Path(__file__).resolve().parents[1]


def _load_script():
    spec = importlib.util.spec_from_file_location("build_coco_captions", REPO / "scripts" / "build_coco_captions.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# image id -> (karpathy split, captions in *annotation id* order)
IMAGES = {
    11: ("train", [f"train eleven {i}" for i in range(5)]),
    22: ("restval", [f"restval twentytwo {i}" for i in range(5)]),
    33: ("test", [f"test thirtythree {i}" for i in range(6)]),  # 6 captions: keep the first 5
    44: ("test", [f"test forty four {i}" for i in range(5)]),
    55: ("val", [f"val fiftyfive {i}" for i in range(5)]),
}


def _write_inputs(tmp: Path, short_image: bool = False) -> tuple[Path, Path]:
    anns, ann_id = [], 1000
    for image_id, (_, caps) in IMAGES.items():
        for c in caps:
            anns.append({"id": ann_id, "image_id": image_id, "caption": c})
            ann_id += 1
    anns[1]["caption"] = "  train eleven\n 1 \n"  # messy whitespace / newline inside a caption
    anns = anns[::-1]  # file order != annotation id order: the builder sorts by id
    if short_image:
        anns = [a for a in anns if not (a["image_id"] == 44 and a["id"] % 2)]
    coco = {
        "images": [{"id": i, "file_name": f"COCO_{i:012d}.jpg", "height": 8, "width": 8} for i in IMAGES],
        "annotations": anns,
        "info": {},
        "licenses": [],
    }
    ann_path = tmp / "captions_tiny.json"
    ann_path.write_text(json.dumps(coco))
    # Split order deliberately differs from image-id order: 44 before 33.
    order = [11, 22, 44, 33, 55]
    split = {
        "images": [
            {
                "cocoid": i,
                "split": IMAGES[i][0],
                "filepath": "val2014" if IMAGES[i][0] != "train" else "train2014",
                "filename": f"COCO_{i:012d}.jpg",
                "sentences": [{"raw": f"split-file caption {i} {k}"} for k in range(5)],
            }
            for i in order
        ]
    }
    split_path = tmp / "dataset_coco.json"
    split_path.write_text(json.dumps(split))
    return ann_path, split_path


def _lines(p: str) -> list[str]:
    return Path(p).read_text().splitlines()


def test_test_split_aligned(tmp_path: Path) -> None:
    ann, split = _write_inputs(tmp_path)
    s = build_split(split, "test", tmp_path / "out", annotation_files=[ann])
    assert s["name"] == "testall" and s["n_images"] == 2 and s["n_captions"] == 10
    assert _lines(s["files"]["ids"]) == ["44", "33"]  # split-file order
    assert _lines(s["files"]["images"]) == ["val2014/COCO_000000000044.jpg", "val2014/COCO_000000000033.jpg"]
    caps = _lines(s["files"]["caps"])
    assert caps[:5] == [f"test forty four {i}" for i in range(5)]
    assert caps[5:] == [f"test thirtythree {i}" for i in range(5)]  # 6th caption dropped


def test_train_restval_and_whitespace(tmp_path: Path) -> None:
    ann, split = _write_inputs(tmp_path)
    s = build_split(split, "train", tmp_path / "a", annotation_files=[ann])
    assert _lines(s["files"]["ids"]) == ["11"]
    assert _lines(s["files"]["caps"])[1] == "train eleven 1"
    s = build_split(split, "train", tmp_path / "b", annotation_files=[ann], restval_to_train=True)
    assert _lines(s["files"]["ids"]) == ["11", "22"]
    assert len(_lines(s["files"]["caps"])) == 10


def test_captions_from_split_file_and_limit(tmp_path: Path) -> None:
    _, split = _write_inputs(tmp_path)
    s = build_split(split, "test", tmp_path / "out", out_name="test1k", limit=1)
    assert Path(s["files"]["caps"]).name == "test1k_caps.txt"
    assert _lines(s["files"]["caps"]) == [f"split-file caption 44 {k}" for k in range(5)]


def test_too_few_captions_is_an_error(tmp_path: Path) -> None:
    ann, split = _write_inputs(tmp_path, short_image=True)
    with pytest.raises(CocoBuildError, match=r"image 44 has \d non-empty captions, expected at least 5"):
        build_split(split, "test", tmp_path / "out", annotation_files=[ann])


def test_missing_annotations_is_an_error(tmp_path: Path) -> None:
    ann, split = _write_inputs(tmp_path)
    data = json.loads(ann.read_text())
    data["annotations"] = [a for a in data["annotations"] if a["image_id"] != 55]
    ann.write_text(json.dumps(data))
    with pytest.raises(CocoBuildError, match=r"no captions for 1 image.*\[55\]"):
        build_split(split, "val", tmp_path / "out", annotation_files=[ann])


def test_bad_split_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"annotations": []}))
    with pytest.raises(CocoBuildError, match="'images' list"):
        load_karpathy_split(bad)


def test_script_writes_all_splits(tmp_path: Path, capsys) -> None:
    ann, split = _write_inputs(tmp_path)
    mod = _load_script()
    out = tmp_path / "scan"
    rc = mod.main(["--split-file", str(split), "--annotations", str(ann), "--restval-to-train", "--out-dir", str(out)])
    assert rc == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(
        f"{n}_{k}.txt" for n in ("train", "dev", "testall") for k in ("caps", "ids", "images")
    )
    assert len(capsys.readouterr().out.strip().splitlines()) == 3
    assert _lines(str(out / "dev_caps.txt")) == [f"val fiftyfive {i}" for i in range(5)]
