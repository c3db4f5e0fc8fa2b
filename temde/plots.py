"""Figures for the README and reports: training curves from Lightning CSV logs, recall bars ours vs paper.

Headless (Agg backend), no pandas: a Lightning ``CSVLogger`` ``metrics.csv`` is sparse (step rows carry the
train loss, epoch-end rows carry validation metrics), so each series is read with its own non-empty rows and
reduced per epoch. Missing columns leave their panel with a "no data" note instead of failing.
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Mapping
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import MaxNLocator  # noqa: E402

RECALL_LABELS = {
    "i2t_r1": "i2t R@1",
    "i2t_r5": "i2t R@5",
    "i2t_r10": "i2t R@10",
    "t2i_r1": "t2i R@1",
    "t2i_r5": "t2i R@5",
    "t2i_r10": "t2i R@10",
}
VAL_RSUM_COLUMNS = ("val/rsum", "val_rsum", "rsum")  # first present wins


def read_metrics_csv(path: str | Path) -> dict[str, dict[int, list[float]]]:
    """column -> epoch -> values, from the non-empty cells of a Lightning ``metrics.csv``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: Lightning metrics.csv not found")
    series: dict[str, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        if not reader.fieldnames or "epoch" not in reader.fieldnames:
            raise ValueError(f"{path}: expected a CSV header with an 'epoch' column (Lightning CSVLogger)")
        last_epoch = -1
        for row in reader:
            try:
                epoch = last_epoch = int(float(row["epoch"]))
            except (TypeError, ValueError):
                # LearningRateMonitor logs at the start of an epoch without an epoch cell: it belongs to the
                # epoch that follows the last one seen.
                epoch = last_epoch + 1
            for col, cell in row.items():
                if col in ("epoch", "step") or cell in (None, ""):
                    continue
                try:
                    value = float(cell)
                except ValueError:
                    continue
                if math.isfinite(value):
                    series[col][epoch].append(value)
    return {k: dict(v) for k, v in series.items()}


def _per_epoch(values: dict[int, list[float]], reduce: str) -> tuple[list[int], list[float]]:
    epochs = sorted(values)
    if reduce == "mean":
        return epochs, [sum(values[e]) / len(values[e]) for e in epochs]
    return epochs, [values[e][-1] for e in epochs]


def _loss_columns(series: Mapping[str, object]) -> dict[str, str]:
    """label -> column: epoch-level columns preferred over their per-step twins."""
    cols = {}
    for col in series:
        if not col.startswith("train") or "loss" not in col:
            continue
        base = col.removesuffix("_epoch").removesuffix("_step")
        if col.endswith("_epoch") or base not in cols:
            cols[base] = col
    return cols


def _no_data(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in log", ha="center", va="center", transform=ax.transAxes, color="gray")


def plot_training_curves(metrics_csv: str | Path, out_png: str | Path) -> Path:
    """Train losses (mean per epoch), validation rsum per epoch and learning rate, one panel each."""
    series = read_metrics_csv(metrics_csv)
    losses = _loss_columns(series)
    rsum_col = next((c for c in VAL_RSUM_COLUMNS if c in series), None)
    lr_cols = [c for c in series if c.startswith("lr")]
    if not losses and rsum_col is None:
        raise ValueError(
            f"{metrics_csv}: no train loss column (train/loss...) and no validation rsum ({VAL_RSUM_COLUMNS})"
        )
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.8))
    ax_loss, ax_val, ax_lr = axes
    for label, col in losses.items():
        e, v = _per_epoch(series[col], "mean")
        ax_loss.plot(e, v, marker="o", ms=3, label=label)
    if losses:
        ax_loss.legend(fontsize=8)
    else:
        _no_data(ax_loss, "train loss")
    ax_loss.set(title="training loss (epoch mean)", xlabel="epoch", ylabel="loss")
    if rsum_col:
        e, v = _per_epoch(series[rsum_col], "last")
        ax_val.plot(e, v, marker="o", ms=3, color="C2")
        best = max(range(len(v)), key=v.__getitem__)
        ax_val.annotate(f"best {v[best]:.1f} @ {e[best]}", (e[best], v[best]), fontsize=8,
                        textcoords="offset points", xytext=(0, -12), ha="center")
    else:
        _no_data(ax_val, "val/rsum")
    ax_val.set(title="validation rsum", xlabel="epoch", ylabel="rsum")
    for col in lr_cols:
        e, v = _per_epoch(series[col], "last")
        ax_lr.plot(e, v, marker="o", ms=3, label=col)
    if lr_cols:
        ax_lr.set_yscale("log")
        ax_lr.legend(fontsize=8)
    else:
        _no_data(ax_lr, "learning rate")
    ax_lr.set(title="learning rate", xlabel="epoch")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    fig.tight_layout()
    return _save(fig, out_png)


def plot_recall_bars(
    ours: Mapping[str, float | None],
    paper: Mapping[str, float | None],
    out_png: str | Path,
    title: str | None = None,
    labels: tuple[str, str] = ("ours", "paper"),
) -> Path:
    """Grouped bars of the six recalls; a value that is missing or ``None`` (e.g. unreported R@5) draws 'n/a'."""
    keys = list(RECALL_LABELS)
    fig, ax = plt.subplots(figsize=(8, 3.8))
    width = 0.38
    for j, (name, metrics) in enumerate(zip(labels, (ours, paper))):
        for i, key in enumerate(keys):
            x = i + (j - 0.5) * width
            value = metrics.get(key)
            if value is None:
                ax.text(x, 1, "n/a", ha="center", va="bottom", fontsize=7, rotation=90, color="gray")
                continue
            ax.bar(x, value, width, color=f"C{j}", label=None if name in _legend(ax) else name)
            ax.text(x, value + 0.5, f"{value:.1f}", ha="center", va="bottom", fontsize=7)
    ax.set_xticks(range(len(keys)), [RECALL_LABELS[k] for k in keys])
    ax.set_ylim(0, 118)  # headroom for the legend above 100 %
    ax.set_ylabel("recall (%)")
    ax.legend(loc="upper left", ncol=2, fontsize=8)
    rsum = [m.get("rsum") for m in (ours, paper)]
    sub = "  |  ".join(f"{n} rsum {r:.1f}" for n, r in zip(labels, rsum) if r is not None)
    ax.set_title(" - ".join(t for t in (title, sub) if t), fontsize=10)
    fig.tight_layout()
    return _save(fig, out_png)


def _legend(ax) -> set[str]:
    return set(ax.get_legend_handles_labels()[1])


def _save(fig, out_png: str | Path) -> Path:
    out = Path(out_png)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)
    plt.close(fig)
    return out
