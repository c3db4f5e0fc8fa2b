"""Plots are written and non-trivial; the retrieval visualizer prints the argsort ranking."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from temde.plots import plot_recall_bars, plot_training_curves, read_metrics_csv

REPO = Path(__file__).resolve().parents[1]


def _write_lightning_csv(path: Path, with_val: bool = True, with_lr: bool = True) -> None:
    cols = ["epoch", "step", "train/loss", "train/caption_loss"]
    cols += ["val/rsum"] if with_val else []
    cols += ["lr-Adam"] if with_lr else []
    lines = [",".join(cols)]
    step = 0
    for epoch in range(4):
        for _ in range(3):  # step rows: train losses only
            row = {"epoch": epoch, "step": step, "train/loss": 50 - 5 * epoch - step * 0.1, "train/caption_loss": 3.0}
            lines.append(",".join(str(row.get(c, "")) for c in cols))
            step += 1
        if with_val:  # epoch-end row: validation only
            row = {"epoch": epoch, "step": step - 1, "val/rsum": 300 + 20 * epoch}
            lines.append(",".join(str(row.get(c, "")) for c in cols))
        if with_lr:
            row = {"epoch": epoch, "step": step - 1, "lr-Adam": 2e-4 if epoch < 2 else 2e-5}
            lines.append(",".join(str(row.get(c, "")) for c in cols))
    path.write_text("\n".join(lines) + "\n")


def _assert_nontrivial_png(path: Path) -> None:
    assert path.is_file() and path.stat().st_size > 5000
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 100 and img.shape[1] > 100
    assert len(np.unique(img.reshape(-1, img.shape[-1]), axis=0)) > 10  # more than a blank canvas


def test_read_metrics_csv(tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    _write_lightning_csv(csv)
    s = read_metrics_csv(csv)
    assert sorted(s["train/loss"]) == [0, 1, 2, 3] and len(s["train/loss"][1]) == 3
    assert s["val/rsum"][3] == [360.0]


@pytest.mark.parametrize("with_val,with_lr", [(True, True), (False, False)])
def test_training_curves(tmp_path: Path, with_val: bool, with_lr: bool) -> None:
    csv = tmp_path / "metrics.csv"
    _write_lightning_csv(csv, with_val, with_lr)
    out = plot_training_curves(csv, tmp_path / "figs" / "curves.png")
    _assert_nontrivial_png(out)


def test_training_curves_nothing_to_plot(tmp_path: Path) -> None:
    csv = tmp_path / "metrics.csv"
    csv.write_text("epoch,step,other\n0,0,1.0\n")
    with pytest.raises(ValueError, match="no train loss column"):
        plot_training_curves(csv, tmp_path / "x.png")


def test_recall_bars_with_missing_values(tmp_path: Path) -> None:
    ours = {"i2t_r1": 55.0, "i2t_r5": 83.0, "i2t_r10": 90.5, "t2i_r1": 40.0, "t2i_r5": 69.1, "t2i_r10": 80.0,
            "rsum": 417.6}
    paper = {"i2t_r1": 57.0, "i2t_r5": None, "i2t_r10": 91.0, "t2i_r1": 40.0, "t2i_r5": None, "t2i_r10": 80.1,
             "rsum": None}
    out = plot_recall_bars(ours, paper, tmp_path / "bars.png", title="COCO 5K, T-EMDE + SGR")
    _assert_nontrivial_png(out)


# ---------------------------------------------------------------- visualize_retrieval.py
def _load_script():
    spec = importlib.util.spec_from_file_location("visualize_retrieval", REPO / "scripts" / "visualize_retrieval.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_visualize_retrieval_matches_argsort(tmp_path: Path, capsys) -> None:
    n, k = 8, 4
    sims = np.random.default_rng(0).standard_normal((n, 5 * n)).astype(np.float32)
    sims[0, 7] = sims[3, 7]  # a tie in text query 7: lower index first
    np.save(tmp_path / "sims.npy", sims)
    (tmp_path / "caps.txt").write_text("".join(f"caption {j} of image {j // 5}\n" for j in range(5 * n)))
    (tmp_path / "ids.txt").write_text("".join(f"{1000 + i}\n" for i in range(n)))
    mod = _load_script()
    rc = mod.main(["--sims", str(tmp_path / "sims.npy"), "--captions", str(tmp_path / "caps.txt"),
                   "--ids", str(tmp_path / "ids.txt"), "--k", str(k), "--text-queries", "7", "21",
                   "--image-queries", "2", "5"])
    assert rc == 0
    out = capsys.readouterr().out
    blocks = re.split(r"^(?=text query|image query)", out, flags=re.M)[1:]
    assert len(blocks) == 4
    for block, j in zip(blocks[:2], (7, 21)):
        hits = re.findall(r"^\s+\d+\.([* ]) image (\d+) \(id", block, flags=re.M)
        got = [int(i) for _, i in hits]
        assert got == np.argsort(-sims[:, j].astype(np.float64), kind="stable")[:k].tolist()
        assert [star == "*" for star, _ in hits] == [i == j // 5 for i in got]
        for i in got:
            assert f"(id {1000 + i})" in block and f"{sims[i, j]:.4f}" in block
            assert f"caption {5 * i} of image {i}" in block  # each image shown with its first caption
    for block, i in zip(blocks[2:], (2, 5)):
        hits = re.findall(r"^\s+\d+\.([* ]) caption (\d+) ", block, flags=re.M)
        got = [int(j) for _, j in hits]
        assert got == np.argsort(-sims[i].astype(np.float64), kind="stable")[:k].tolist()
        assert [star == "*" for star, _ in hits] == [j // 5 == i for j in got]


def test_learning_rate_rows_without_epoch_belong_to_the_next_epoch(tmp_path):
    # Lightning's LearningRateMonitor writes its row at each epoch start with an empty epoch cell.
    from temde.plots import read_metrics_csv

    csv_path = tmp_path / "metrics.csv"
    csv_path.write_text(
        "epoch,lr-Adam,step,train/loss_epoch\n"
        ",0.001,0,\n0,,9,5.0\n,0.0001,10,\n1,,19,3.0\n"
    )
    series = read_metrics_csv(csv_path)
    assert series["lr-Adam"] == {0: [0.001], 1: [0.0001]}
    assert series["train/loss_epoch"] == {0: [5.0], 1: [3.0]}
