"""The report of a reproduced table: rows as mean +- std over seed replicates, chance level, differences between
rows that exceed 2 standard deviations, the comparison with the reported numbers (real data only), md/json/png.

Why here: the numbers a reader takes away are decided in this file, so it says what "significant" means: a
difference between two rows is marked when it exceeds twice the larger of the two rows' seed standard deviations.
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import time
from pathlib import Path
from typing import Any

import numpy as np

from temde.evaluation import ensemble_similarities, retrieval_metrics
from temde.paper_results import paper_row
from temde.plots import plot_recall_bars, plot_training_curves
from temde.reproduce.plan import RECALLS, REPO, Plan

log = logging.getLogger(__name__)
SIGNIFICANCE_STDS = 2.0


def row_metrics(sims: list[np.ndarray], fold5: bool) -> dict[str, float]:
    """Metrics of one row: a single model or the equal-weight ensemble of several (as evaluate_models does)."""
    return retrieval_metrics(ensemble_similarities(sims) if len(sims) > 1 else sims[0], fold5=fold5)


def compare(ours: dict[str, float], paper: dict[str, float | None] | None) -> dict[str, float | None]:
    """ours - paper per recall and rsum (None where the paper reports nothing)."""
    if not paper:
        return {k: None for k in RECALLS}
    return {k: (None if paper.get(k) is None else round(ours[k] - paper[k], 2)) for k in RECALLS}


def paper_metrics(plan: Plan, paper: dict[str, str] | None) -> tuple[dict[str, float | None] | None, str | None]:
    if not paper:
        return None, None
    row = paper_row(plan.protocol, paper["model"], paper["source"])
    return row.metrics(), row.name


def mean_std(values: list[dict[str, float]]) -> tuple[dict[str, float], dict[str, float] | None]:
    """Mean and sample standard deviation (ddof=1) per metric; no std from a single replicate."""
    mean = {k: float(np.mean([v[k] for v in values])) for k in values[0]}
    if len(values) < 2:
        return mean, None
    return mean, {k: float(np.std([v[k] for v in values], ddof=1)) for k in values[0]}


def chance_metrics(n_images: int, n_captions: int, fold5: bool) -> dict[str, float]:
    """Expected recalls of random scores, exactly: i2t R@K = 1 - C(C - c, K) / C(C, K) (none of an image's c
    captions in the top K of C), t2i R@K = min(K, N) / N; with ``fold5`` per fold of N / 5 images (same value)."""
    if fold5:
        n_images, n_captions = n_images // 5, n_captions // 5
    per_image = n_captions // n_images
    out = {}
    for k in (1, 5, 10):
        out[f"i2t_r{k}"] = 100.0 * (1 - math.comb(n_captions - per_image, k) / math.comb(n_captions, k))
        out[f"t2i_r{k}"] = 100.0 * min(k, n_images) / n_images
    out["rsum"] = sum(out[k] for k in RECALLS if k != "rsum")
    return out


def significance(rows: list[dict[str, Any]], key: str = "rsum") -> list[dict[str, Any]]:
    """Every pair of rows: difference of means and whether it exceeds 2x the larger seed std of the two."""
    pairs = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            if a["std"] is None or b["std"] is None:
                continue
            diff = a["ours"][key] - b["ours"][key]
            limit = SIGNIFICANCE_STDS * max(a["std"][key], b["std"][key])
            pairs.append({"a": a["name"], "b": b["name"], "diff": round(diff, 2), "limit": round(limit, 2),
                          "exceeds": bool(abs(diff) > limit)})
    return pairs


def build_report(plan: Plan, sims: dict[str, np.ndarray], run_info: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Rows (mean +- std over replicates, each replicate the ensemble of its runs), chance, significance."""
    fold5 = bool(plan.eval_split.get("fold5", False))
    rows = []
    for row in plan.rows:
        per_replicate = [row_metrics([sims[r.key] for r in runs], fold5) for runs in row.replicas]
        ours, std = mean_std(per_replicate)
        paper, paper_name = paper_metrics(plan, row.paper)
        rows.append({"name": row.name, "runs": [run_info[r.key] for r in row.runs],
                     "replicas": [[run_info[r.key] for r in runs] for runs in row.replicas],
                     "per_replicate": per_replicate, "ours": ours, "std": std,
                     "paper": paper, "paper_name": paper_name, "diff": compare(ours, paper)})
    shape = next(iter(sims.values())).shape
    return {"table": plan.table, "title": plan.title, "data": plan.data, "protocol": plan.protocol,
            "eval_split": plan.eval_split, "commit": git_commit(), "created": time.strftime("%Y-%m-%d %H:%M:%S"),
            "replicates": len(plan.rows[0].replicas) if plan.rows else 0,
            "chance": chance_metrics(*shape, fold5), "rows": rows, "significance": significance(rows),
            "runs": list(run_info.values())}


def git_commit(repo: Path = REPO) -> str:
    """HEAD, with ``-dirty`` when tracked files outside ``experiments/`` (what the results are made by) changed."""
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--", ".", ":!experiments"],
                               cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cell(ours: float, std: float | None, paper: float | None) -> str:
    text = f"{ours:.1f}" + (f" ± {std:.1f}" if std is not None else "")
    if paper is None:
        return text
    mark = "*" if std is not None and abs(ours - paper) > SIGNIFICANCE_STDS * std else ""
    return f"{text} ({paper:.1f}, {ours - paper:+.1f}{mark})"


def _seeds(row: dict[str, Any]) -> str:
    return " / ".join(", ".join(f"{r['paper_experiment'] or r['experiment']}:{r['seed']}" for r in runs)
                      for runs in row["replicas"])


def format_markdown(report: dict[str, Any]) -> str:
    synthetic = report["data"] == "synthetic"
    head = ["row", "seeds (replicates separated by /)", "i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10", "rsum"]
    n = report["replicates"]
    lines = [
        f"# {'Synthetic data, ' + report['table'] + ' protocol' if synthetic else report['title'] + ': ours vs reported'}",
        "",
        f"- commit `{report['commit']}`, written {report['created']}, protocol `{report['protocol']}`"
        f" (split `{report['eval_split']['split']}`, fold5={report['eval_split']['fold5']})",
        f"- each cell: mean ± sample std over {n} seed replicate(s)" + (
            "" if synthetic else "; in brackets: reported, ours - reported (* = more than 2 std away)"),
    ]
    if synthetic:
        lines.append("- synthetic data (docs/synthetic.md): a CPU-sized test of the models and the pipeline, "
                     "NOT comparable with any paper number")
    chance = report["chance"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head),
              "| chance (random scores) | - | " + " | ".join(f"{chance[k]:.1f}" for k in RECALLS) + " |"]
    for row in report["rows"]:
        paper = {} if synthetic else (row["paper"] or {})
        std = row["std"] or {}
        cells = [_cell(row["ours"][k], std.get(k), paper.get(k)) for k in RECALLS]
        lines.append(f"| {row['name']} | {_seeds(row)} | " + " | ".join(cells) + " |")
    if report["significance"]:
        names = [r["name"] for r in report["rows"]]
        lines += ["", f"rsum differences (row - column); **bold** = more than {SIGNIFICANCE_STDS:g}x the larger of "
                  "the two rows' seed std:", "", "| | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
        by_pair = {(p["a"], p["b"]): p for p in report["significance"]}
        for a in names:
            cells = []
            for b in names:
                p, sign = by_pair.get((a, b)), 1
                if p is None and (b, a) in by_pair:
                    p, sign = by_pair[(b, a)], -1
                cells.append("" if p is None else (f"**{sign * p['diff']:+.1f}**" if p["exceeds"]
                                                   else f"{sign * p['diff']:+.1f}"))
            lines.append(f"| {a} | " + " | ".join(cells) + " |")
    if not synthetic:
        lines += ["", "Reported rows: " + "; ".join(
            f"{r['name']} = {r['paper_name'] or 'not reported'}" for r in report["rows"])]
    lines += ["", "Runs:", ""]
    for run in report["runs"]:
        lines.append(f"- `{run['key']}`: {run['experiment']} seed {run['seed']} "
                     f"{' '.join(run['overrides'])} -> {run['status']}, val best {run.get('val_best')}, "
                     f"{run.get('train_seconds')} s")
    return "\n".join(lines) + "\n"


def write_plots(plan: Plan, report: dict[str, Any], fig_dir: Path) -> list[Path]:
    fig_dir.mkdir(parents=True, exist_ok=True)
    synthetic = plan.data == "synthetic"
    paths = []
    for row in report["rows"]:
        slug = "".join(c if c.isalnum() else "_" for c in row["name"].lower()).strip("_")
        title = f"synthetic data ({plan.table} protocol): {row['name']}" if synthetic else f"{plan.title}: {row['name']}"
        paper = {} if synthetic else (row["paper"] or {})  # synthetic numbers are never drawn next to the paper's
        paths.append(plot_recall_bars(row["ours"], paper, fig_dir / f"recall_{slug}.png", title=title))
    for run in plan.runs:
        csv = plan.run_dir(run) / "csv" / "metrics.csv"
        if csv.is_file():
            try:
                paths.append(plot_training_curves(csv, fig_dir / f"curves_{run.key}.png"))
            except ValueError as err:  # a run without loss/val columns: no curve, not a failure
                log.warning("no training curves for %s: %s", run.key, err)
    remove_stale_figures(fig_dir, paths)
    return paths


def remove_stale_figures(fig_dir: Path, keep: list[Path]) -> list[Path]:
    """Delete the figures of rows and runs that are no longer in the table, so the folder matches the md/json."""
    kept = {p.resolve() for p in keep}
    stale = [p for pattern in ("recall_*.png", "curves_*.png") for p in fig_dir.glob(pattern) if p.resolve() not in kept]
    for p in stale:
        p.unlink()
    return stale


def _atomic_write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def write_report(plan: Plan, report: dict[str, Any], results_dir: Path, plots: bool = True) -> dict[str, Any]:
    """``<results_dir>/<result_name>.{md,json}`` (+ figures in ``<results_dir>/<result_name>/``), atomically."""
    results_dir.mkdir(parents=True, exist_ok=True)
    if plots:
        report["figures"] = [str(p) for p in write_plots(plan, report, results_dir / plan.result_name)]
    _atomic_write(results_dir / f"{plan.result_name}.md", format_markdown(report))
    _atomic_write(results_dir / f"{plan.result_name}.json", json.dumps(report, indent=2, default=str))
    return report
