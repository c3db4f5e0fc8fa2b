"""Reproduce a paper table: plan the runs, train what is missing (or reuse finished runs), evaluate, ensemble,
compare with the reported numbers and write ``experiments/results/<table>.{md,json}`` plus figures.

Tables are data (``tables/<table>.yaml``): rows -> checkpoints (experiment + seed) whose similarity
matrices are averaged. A run is identified by (experiment, seed, overrides); its directory is
``<out_root>/<experiment>_s<seed>_<hash>/`` and it counts as finished once ``metrics.json`` and
``model_best.ckpt`` exist, so re-running a table only trains what is missing. Every run's test similarity
matrix is cached next to its checkpoint, so a checkpoint shared by several rows (SGR in "SGR" and "SGRAF") is
scored once. ``--data synthetic`` swaps each experiment for its CPU-sized synthetic counterpart (mapping in
``tables/shared.yaml``) so the whole pipeline runs in CI.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

REPO = Path(__file__).resolve().parents[1]
CONFIG_DIR = REPO / "configs"
TABLES_DIR = REPO / "tables"  # outside configs/: not a Hydra config group
TABLES = ("f30k", "coco1k", "coco5k")
RECALLS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------------- the table
def load_table(name: str, tables_dir: Path = TABLES_DIR) -> dict[str, Any]:
    """``tables/<name>.yaml`` merged with ``shared.yaml`` (table keys win)."""
    path = tables_dir / f"{name}.yaml"
    if not path.is_file():
        known = sorted(p.stem for p in tables_dir.glob("*.yaml") if p.stem != "shared")
        raise FileNotFoundError(f"{path}: no such reproduction table (known: {', '.join(known)})")
    shared = yaml.safe_load((tables_dir / "shared.yaml").read_text()) or {}
    table = {**shared, **(yaml.safe_load(path.read_text()) or {})}
    for key in ("table", "dataset", "protocol", "eval_split", "synthetic_eval_split", "rows"):
        if key not in table:
            raise ValueError(f"{path}: missing key {key!r}")
    for i, row in enumerate(table["rows"]):
        if not row.get("runs") or "name" not in row:
            raise ValueError(f"{path}: row {i} needs a name and a non-empty runs list")
    return table


@dataclass(frozen=True)
class RunSpec:
    """One training run: what `python -m temde.train` gets."""

    experiment: str
    seed: int
    overrides: tuple[str, ...] = ()
    paper_experiment: str = ""  # the real-data experiment this run stands for (== experiment on real data)

    @property
    def key(self) -> str:
        blob = json.dumps({"experiment": self.experiment, "seed": self.seed, "overrides": sorted(self.overrides)})
        return f"{self.experiment}_s{self.seed}_{hashlib.sha1(blob.encode()).hexdigest()[:10]}"

    def train_overrides(self) -> list[str]:
        return [f"experiment={self.experiment}", f"seed={self.seed}", *self.overrides]

    @property
    def label(self) -> str:
        return f"{self.paper_experiment or self.experiment} (seed {self.seed})"


@dataclass
class RowPlan:
    name: str
    paper: dict[str, str] | None
    runs: list[RunSpec]


@dataclass
class Plan:
    table: str
    title: str
    data: str  # "synthetic" | "real"
    protocol: str
    eval_split: dict[str, Any]
    rows: list[RowPlan]
    out_root: Path
    runs: list[RunSpec] = field(default_factory=list)  # unique, in first-use order

    @property
    def result_name(self) -> str:
        return f"synthetic_{self.table}" if self.data == "synthetic" else self.table

    def run_dir(self, run: RunSpec) -> Path:
        return self.out_root / run.key


def build_plan(
    table_name: str,
    data: str = "real",
    epochs: int | None = None,
    overrides: Sequence[str] = (),
    out_root: Path = REPO / "outputs" / "reproduce",
    rows: Sequence[str] | None = None,
) -> Plan:
    """Rows and unique runs of a table. ``data``: ``real`` (paper experiments) or ``synthetic``.

    ``overrides`` apply to every run, except ``EXPERIMENT:key=value`` which applies only to runs of the (possibly
    synthetic) experiment EXPERIMENT (e.g. ``synthetic_vsrn:model.dim_hidden=16``).
    """
    if data not in ("real", "synthetic"):
        raise ValueError(f"data must be 'real' or 'synthetic', got {data!r}")
    table = load_table(table_name)
    scoped: dict[str, list[str]] = {}  # "EXPERIMENT:key=value" applies to runs of that (run) experiment only
    extra = []
    for override in overrides:
        head = override.split("=", 1)[0]
        if ":" in head:
            experiment, _, rest = override.partition(":")
            scoped.setdefault(experiment, []).append(rest)
        else:
            extra.append(override)
    extra += [f"trainer.max_epochs={epochs}"] if epochs is not None else []
    row_plans, unique = [], {}
    for row in table["rows"]:
        if rows and row["name"] not in rows:
            continue
        specs = []
        for r in row["runs"]:
            experiment, run_over = r["experiment"], []
            if data == "synthetic":
                mapped = table["synthetic"].get(experiment)
                if mapped is None:
                    raise KeyError(f"tables/shared.yaml: no synthetic counterpart for {experiment!r}")
                experiment, run_over = mapped["experiment"], list(mapped.get("overrides", []))
            run_over += scoped.get(experiment, [])
            spec = RunSpec(experiment, int(r.get("seed", 0)), tuple(run_over + extra), r["experiment"])
            specs.append(unique.setdefault(spec.key, spec))
        row_plans.append(RowPlan(row["name"], row.get("paper"), specs))
    if rows and not row_plans:
        raise ValueError(f"no row of table {table_name} matches {list(rows)}")
    split = table["synthetic_eval_split" if data == "synthetic" else "eval_split"]
    return Plan(table["table"], table.get("title", table["table"]), data, table["protocol"], dict(split),
                row_plans, Path(out_root), list(unique.values()))


# ----------------------------------------------------------------------------------------- composing / estimating
def compose_run_config(run: RunSpec, run_dir: Path | None = None, hydra_config: bool = False):
    """The composed training config of a run (validates the experiment and every override).

    Without ``hydra_config`` the result is cached per run (planning, estimates and evaluation all read it;
    treat it as read-only).
    """
    if not hydra_config:
        return _cached_config(run)
    return _compose(run, run_dir, hydra_config)


@functools.lru_cache(maxsize=256)
def _cached_config(run: RunSpec):
    return _compose(run, None, False)


def _compose(run: RunSpec, run_dir: Path | None, hydra_config: bool):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=run.train_overrides(), return_hydra_config=hydra_config)
    if run_dir is not None and hydra_config:
        from omegaconf import open_dict

        with open_dict(cfg):
            cfg.hydra.runtime.output_dir = str(run_dir)
    return cfg


def model_family(target: str) -> str:
    target = target.lower()
    return next((f for f in ("sgraf", "vsrn") if f in target), "baseline")


def estimate_run(run: RunSpec, plan: Plan, step_seconds: dict[str, float] | None = None) -> dict[str, Any]:
    """Iterations/epoch x epochs x step time + evaluation pairs / pairs per second (hours, one GPU).

    Step time: measured from a finished run of the same experiment when one exists in ``plan.out_root``
    (``train_seconds`` / iterations), else ``--step-seconds``, else the assumed figure in shared.yaml.
    """
    table = load_table(plan.table)
    cfg = compose_run_config(run)
    family = model_family(str(cfg.model._target_))
    if cfg.data.get("synthetic"):
        n_captions = 5 * int(cfg.data.synthetic.n_train)
        val_pairs = min(int(cfg.data.synthetic.n_dev), 1000) * min(5 * int(cfg.data.synthetic.n_dev), 5000)
        test_pairs = int(cfg.data.synthetic.get("n_" + plan.eval_split["split"], 0)) ** 2 * 5
    else:
        n_captions = int(table["train_captions"][cfg.data.name])
        val_pairs = int(table["eval_pairs"]["val"])
        test_pairs = int(table["eval_pairs"][cfg.data.name])
    iters = math.ceil(n_captions / int(cfg.data.batch_size))
    epochs = int(cfg.trainer.max_epochs)
    thr = table["throughput"][family]
    step, source = float(thr["step_seconds"]), f"shared.yaml: {thr['source']}"
    if step_seconds and family in step_seconds:
        step, source = step_seconds[family], "--step-seconds"
    measured = _measured_step_seconds(plan.out_root, run.experiment, iters)
    if measured is not None:
        step, source = measured, "measured (finished run of this experiment)"
    eval_hours = (val_pairs * epochs + test_pairs) / float(thr["pairs_per_second"]) / 3600
    train_hours = iters * epochs * step / 3600
    return {"run": run.key, "experiment": run.experiment, "seed": run.seed, "family": family,
            "iterations_per_epoch": iters, "epochs": epochs, "step_seconds": step, "step_source": source,
            "train_hours": train_hours, "eval_hours": eval_hours, "hours": train_hours + eval_hours}


def _measured_step_seconds(out_root: Path, experiment: str, iters_per_epoch: int) -> float | None:
    for metrics in sorted(Path(out_root).glob(f"{experiment}_s*/metrics.json")):
        try:
            meta = json.loads(metrics.read_text()).get("_meta", {})
            run = json.loads((metrics.parent / "run.json").read_text())
        except (OSError, ValueError):
            continue
        epochs, seconds = run.get("epochs"), meta.get("train_seconds")
        if epochs and seconds and run.get("iterations_per_epoch") == iters_per_epoch:
            return float(seconds) / (epochs * iters_per_epoch)
    return None


def format_plan(plan: Plan, estimates: list[dict[str, Any]]) -> str:
    by_key = {e["run"]: e for e in estimates}
    lines = [f"Table {plan.table} ({plan.title}), data={plan.data}: {len(plan.rows)} rows, {len(plan.runs)} runs",
             ""]
    for row in plan.rows:
        lines.append(f"  {row.name:<18} <- " + " + ".join(r.label for r in row.runs))
    lines += ["", f"  {'run':<44} {'status':<9} {'iters/ep':>8} {'epochs':>6} {'s/step':>7} {'GPU h':>7}  source"]
    total = 0.0
    for run in plan.runs:
        e = by_key[run.key]
        status = "reuse" if is_finished(plan.run_dir(run)) else "train"
        hours = 0.0 if status == "reuse" else e["hours"]
        total += hours
        lines.append(f"  {run.key:<44} {status:<9} {e['iterations_per_epoch']:>8} {e['epochs']:>6} "
                     f"{e['step_seconds']:>7.3f} {e['hours']:>7.2f}  {e['step_source']}")
    lines += ["", f"  estimated GPU time still to spend: {total:.1f} h on one GPU (an ESTIMATE: iterations/epoch x "
              "epochs x step time + evaluation pairs / pairs per second; see docs/reproduce.md)"]
    return "\n".join(lines)


# ----------------------------------------------------------------------------------------------------- training
def is_finished(run_dir: Path) -> bool:
    return (run_dir / "metrics.json").is_file() and (run_dir / "model_best.ckpt").is_file()


def train_run(run: RunSpec, run_dir: Path, launcher: str = "subprocess", env: dict[str, str] | None = None) -> None:
    """Train one run into ``run_dir`` (``subprocess``: ``python -m temde.train``; ``inprocess``: same config,
    this interpreter, no start-up cost)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(asdict(run), indent=2))
    if launcher == "subprocess":
        cmd = [sys.executable, "-m", "temde.train", *run.train_overrides(), f"hydra.run.dir={run_dir}"]
        log.info("train: %s", " ".join(cmd))
        proc = subprocess.run(cmd, env={**os.environ, **(env or {})})  # cwd kept: data.root may be relative
        if proc.returncode != 0:
            raise RuntimeError(f"training {run.label} failed (exit {proc.returncode}); log: {run_dir}/train.log")
    elif launcher == "inprocess":
        _train_inprocess(run, run_dir)
    else:
        raise ValueError(f"launcher must be subprocess or inprocess, got {launcher!r}")
    if not is_finished(run_dir):
        raise RuntimeError(f"training {run.label} ended without {run_dir}/metrics.json and model_best.ckpt")


def _train_inprocess(run: RunSpec, run_dir: Path) -> None:
    from temde.training import train

    train(compose_run_config(run), run_dir, experiment=run.experiment)


def _record_run_facts(plan: Plan, run: RunSpec, estimate: dict[str, Any] | None) -> None:
    path = plan.run_dir(run) / "run.json"
    facts = json.loads(path.read_text()) if path.is_file() else asdict(run)
    if estimate:
        facts.update(epochs=estimate["epochs"], iterations_per_epoch=estimate["iterations_per_epoch"])
    path.write_text(json.dumps(facts, indent=2))


# --------------------------------------------------------------------------------------------------- evaluation
def run_similarity(run_dir: Path, split: str, img_block: int | None = None, txt_block: int | None = None,
                   batch_size: int = 128, device: str = "auto") -> np.ndarray:
    """Test similarity matrix of a finished run, cached as ``sims_<split>.npy`` next to its checkpoint."""
    cache = run_dir / f"sims_{split}.npy"
    if cache.is_file():
        return np.load(cache)
    from temde.checkpoint import load_model
    from temde.data.precomp import PrecompDataset
    from temde.data.vocab import Vocabulary
    from temde.evaluating import resolve_device
    from temde.retrieval import split_similarity

    info = json.loads((run_dir / "reproduce_data.json").read_text())
    model, payload = load_model(run_dir / "model_best.ckpt")
    dataset = PrecompDataset(Path(info["root"]), info["name"], split, Vocabulary(payload["word2idx"]))
    tokens, lengths = dataset.caption_tokens()
    sims = split_similarity(model, dataset.image_features(), tokens, lengths, img_block, txt_block, batch_size,
                            resolve_device(device))
    sims = np.asarray(sims, dtype=np.float32)
    np.save(cache, sims)
    return sims


def _record_data(run: RunSpec, run_dir: Path) -> None:
    """Where the run's test data lives (the composed config's data.root / data.name)."""
    if (run_dir / "reproduce_data.json").is_file():
        return
    cfg = compose_run_config(run)
    (run_dir / "reproduce_data.json").write_text(json.dumps({"root": str(Path(cfg.data.root).resolve()), "name": cfg.data.name}))


def row_metrics(sims: list[np.ndarray], fold5: bool) -> dict[str, float]:
    """Metrics of one row: a single model or the equal-weight ensemble of several (as evaluate_models does)."""
    from temde.evaluation import ensemble_similarities, retrieval_metrics

    return retrieval_metrics(ensemble_similarities(sims) if len(sims) > 1 else sims[0], fold5=fold5)


def compare(ours: dict[str, float], paper: dict[str, float | None] | None) -> dict[str, float | None]:
    """ours - paper per recall and rsum (None where the paper reports nothing)."""
    if not paper:
        return {k: None for k in RECALLS}
    return {k: (None if paper.get(k) is None else round(ours[k] - paper[k], 2)) for k in RECALLS}


def paper_metrics(plan: Plan, paper: dict[str, str] | None) -> tuple[dict[str, float | None] | None, str | None]:
    if not paper:
        return None, None
    from temde.paper_results import paper_row

    row = paper_row(plan.protocol, paper["model"], paper["source"])
    return row.metrics(), row.name


# ----------------------------------------------------------------------------------------------------- reports
def git_commit(repo: Path = REPO) -> str:
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=repo,
                               capture_output=True, text=True, check=True).stdout.strip()
        return sha + ("-dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cell(ours: float, paper: float | None) -> str:
    if paper is None:
        return f"{ours:.1f}"
    return f"{ours:.1f} ({paper:.1f}, {ours - paper:+.1f})"


def format_markdown(report: dict[str, Any]) -> str:
    head = ["row", "seeds", "i2t R@1", "R@5", "R@10", "t2i R@1", "R@5", "R@10", "rsum"]
    lines = [
        f"# {report['title']}: ours vs reported" + (" (synthetic data)" if report["data"] == "synthetic" else ""),
        "",
        f"- commit `{report['commit']}`, written {report['created']}, protocol `{report['protocol']}`"
        f" (split `{report['eval_split']['split']}`, fold5={report['eval_split']['fold5']})",
        "- each cell: ours (reported, ours - reported); reported rows from experiments/paper_results.yaml",
    ]
    if report["data"] == "synthetic":
        lines.append("- synthetic data: a CPU-sized check of the pipeline, NOT comparable with the paper numbers")
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in report["rows"]:
        paper = row["paper"] or {}
        seeds = ", ".join(f"{r['paper_experiment'] or r['experiment']}:{r['seed']}" for r in row["runs"])
        cells = [_cell(row["ours"][k], paper.get(k)) for k in RECALLS]
        lines.append(f"| {row['name']} | {seeds} | " + " | ".join(cells) + " |")
    lines += ["", "Reported rows: " + "; ".join(
        f"{r['name']} = {r['paper_name'] or 'not reported'}" for r in report["rows"])]
    lines += ["", "Runs:", ""]
    for run in report["runs"]:
        lines.append(f"- `{run['key']}`: {run['experiment']} seed {run['seed']} "
                     f"{' '.join(run['overrides'])} -> {run['status']}, val best {run.get('val_best')}, "
                     f"{run.get('train_seconds')} s")
    return "\n".join(lines) + "\n"


def write_plots(plan: Plan, report: dict[str, Any], fig_dir: Path) -> list[Path]:
    from temde.plots import plot_recall_bars, plot_training_curves

    fig_dir.mkdir(parents=True, exist_ok=True)
    paths = []
    for row in report["rows"]:
        slug = "".join(c if c.isalnum() else "_" for c in row["name"].lower()).strip("_")
        paths.append(plot_recall_bars(row["ours"], row["paper"] or {}, fig_dir / f"recall_{slug}.png",
                                      title=f"{plan.title}: {row['name']}"))
    for run in plan.runs:
        csv = plan.run_dir(run) / "csv" / "metrics.csv"
        if csv.is_file():
            try:
                paths.append(plot_training_curves(csv, fig_dir / f"curves_{run.key}.png"))
            except ValueError as err:  # a run without loss/val columns: no curve, not a failure
                log.warning("no training curves for %s: %s", run.key, err)
    return paths


# ---------------------------------------------------------------------------------------------------- pipeline
def reproduce(
    plan: Plan,
    results_dir: Path = REPO / "experiments" / "results",
    launcher: str = "subprocess",
    force: bool = False,
    device: str = "auto",
    plots: bool = True,
    progress: Callable[[Iterable], Iterable] = lambda x: x,
) -> dict[str, Any]:
    """Train missing runs, score every run once, ensemble per row, compare, write md + json (+ png)."""
    run_info = {}
    for run in progress(plan.runs):
        run_dir = plan.run_dir(run)
        status = "reused"
        if force or not is_finished(run_dir):
            started = time.time()
            for stale in run_dir.glob("sims_*.npy"):
                stale.unlink()
            train_run(run, run_dir, launcher)
            status = f"trained in {time.time() - started:.0f} s"
        try:
            _record_run_facts(plan, run, estimate_run(run, plan))
        except Exception as err:  # noqa: BLE001 - the estimate is a nicety, never a reason to fail a table
            log.warning("no estimate for %s: %s", run.key, err)
        _record_data(run, run_dir)
        meta = json.loads((run_dir / "metrics.json").read_text()).get("_meta", {})
        run_info[run.key] = {**asdict(run), "key": run.key, "run_dir": str(run_dir), "status": status,
                             "val_best": meta.get("val_best"), "train_seconds": meta.get("train_seconds")}
    split, fold5 = plan.eval_split["split"], bool(plan.eval_split.get("fold5", False))
    rows = []
    for row in plan.rows:
        sims = [run_similarity(plan.run_dir(r), split, device=device) for r in row.runs]
        ours = row_metrics(sims, fold5)
        paper, paper_name = paper_metrics(plan, row.paper)
        rows.append({"name": row.name, "runs": [run_info[r.key] for r in row.runs],
                     "ours": ours, "paper": paper, "paper_name": paper_name, "diff": compare(ours, paper)})
    report = {"table": plan.table, "title": plan.title, "data": plan.data, "protocol": plan.protocol,
              "eval_split": plan.eval_split, "commit": git_commit(),
              "created": time.strftime("%Y-%m-%d %H:%M:%S"), "rows": rows, "runs": list(run_info.values())}
    results_dir.mkdir(parents=True, exist_ok=True)
    md = results_dir / f"{plan.result_name}.md"
    md.write_text(format_markdown(report))
    if plots:
        report["figures"] = [str(p) for p in write_plots(plan, report, results_dir / plan.result_name)]
    (results_dir / f"{plan.result_name}.json").write_text(json.dumps(report, indent=2, default=str))
    return report
