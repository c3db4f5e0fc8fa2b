"""Plan a paper-table reproduction: which rows, which runs (experiment + seed + overrides), how long.

Tables are data (``tables/<table>.yaml``): rows -> checkpoints (experiment + seed) whose similarity
matrices are averaged. A run is identified by (experiment, seed, overrides); its directory is
``<out_root>/<experiment>_s<seed>_<hash>/``. ``--data synthetic`` swaps each experiment for its CPU-sized
synthetic counterpart (mapping in ``tables/shared.yaml``) and adds the synthetic-only rows (the
baseline). ``replicates`` repeats every row with shifted seeds so that a row is reported as mean +- std.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf

from temde.data.synthetic.writer import world_version
from temde.lightning import count_validations

REPO = Path(__file__).resolve().parents[2]
CONFIG_DIR = REPO / "configs"
TABLES_DIR = REPO / "tables"  # outside configs/: not a Hydra config group
TABLES = ("f30k", "coco1k", "coco5k")
RECALLS = ("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum")
SEED_STRIDE = 100  # replicate r of a row trains every run with seed + r * SEED_STRIDE

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
    data_version: str = ""  # e.g. the synthetic world's version: a run trained on an older world is not reused

    @property
    def key(self) -> str:
        fields: dict[str, Any] = {"experiment": self.experiment, "seed": self.seed, "overrides": sorted(self.overrides)}
        if self.data_version:
            fields["data_version"] = self.data_version
        blob = json.dumps(fields)
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
    runs: list[RunSpec]  # replicate 0 (the table's own seeds)
    replicas: list[list[RunSpec]] = field(default_factory=list)  # every replicate, replicate 0 first

    def __post_init__(self) -> None:
        self.replicas = self.replicas or [self.runs]


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
    replicates: int = 1,
) -> Plan:
    """Rows and unique runs of a table. ``data``: ``real`` (paper experiments) or ``synthetic``.

    ``replicates`` > 1 repeats every row with every seed shifted by ``r * SEED_STRIDE`` (r = 1, 2, ...).

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
    if replicates < 1:
        raise ValueError(f"replicates must be >= 1, got {replicates}")
    table_rows = [{**row, "mapped": data == "synthetic"} for row in table["rows"]]
    if data == "synthetic":  # rows that only exist on synthetic data (their runs name synthetic experiments)
        table_rows += [{**row, "mapped": False, "paper": None} for row in table.get("synthetic_rows", [])]
    data_version = f"synthetic-world-{world_version()}" if data == "synthetic" else ""
    row_plans, unique = [], {}
    for row in table_rows:
        if rows and row["name"] not in rows:
            continue
        replicas = []
        for rep in range(replicates):
            specs = []
            for r in row["runs"]:
                experiment, run_over = r["experiment"], []
                if row["mapped"]:
                    mapped = table["synthetic"].get(experiment)
                    if mapped is None:
                        raise KeyError(f"tables/shared.yaml: no synthetic counterpart for {experiment!r}")
                    experiment, run_over = mapped["experiment"], list(mapped.get("overrides", []))
                run_over += scoped.get(experiment, [])
                seed = int(r.get("seed", 0)) + rep * SEED_STRIDE
                spec = RunSpec(experiment, seed, tuple(run_over + extra), r["experiment"], data_version)
                specs.append(unique.setdefault(spec.key, spec))
            replicas.append(specs)
        row_plans.append(RowPlan(row["name"], row.get("paper"), replicas[0], replicas))
    if rows and not row_plans:
        raise ValueError(f"no row of table {table_name} matches {list(rows)}")
    split = table["synthetic_eval_split" if data == "synthetic" else "eval_split"]
    return Plan(table["table"], table.get("title", table["table"]), data, table["protocol"], dict(split),
                row_plans, Path(out_root), list(unique.values()))


def is_finished(run_dir: Path) -> bool:
    """A run counts as finished once ``metrics.json`` and ``model_best.ckpt`` exist (re-running trains the rest)."""
    return (run_dir / "metrics.json").is_file() and (run_dir / "model_best.ckpt").is_file()


# ----------------------------------------------------------------------------------------- composing / estimating
@functools.lru_cache(maxsize=256)
def compose_run_config(run: RunSpec):
    """The composed training config of a run (validates the experiment and every override).

    Cached per run: planning, estimates, training in-process and evaluation all read it; treat it as read-only.
    """
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        return compose(config_name="train", overrides=run.train_overrides())


def model_family(target: str) -> str:
    target = target.lower()
    return next((f for f in ("sgraf", "vsrn") if f in target), "baseline")


def estimate_run(run: RunSpec, plan: Plan, step_seconds: dict[str, float] | None = None) -> dict[str, Any]:
    """Iterations/epoch x epochs x step time + evaluation pairs / pairs per second (hours, one GPU).

    Validations: one per epoch plus the run-wide every-N-steps ones (VSRN rows: every 500 iterations).

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
    every = OmegaConf.select(cfg, "callbacks.validation_schedule.every_n_steps", default=None)
    validations = count_validations(iters, epochs, None if every is None else int(every))
    eval_hours = (val_pairs * validations + test_pairs) / float(thr["pairs_per_second"]) / 3600
    train_hours = iters * epochs * step / 3600
    return {"run": run.key, "experiment": run.experiment, "seed": run.seed, "family": family,
            "iterations_per_epoch": iters, "epochs": epochs, "step_seconds": step, "step_source": source,
            "validations": validations, "train_hours": train_hours, "eval_hours": eval_hours,
            "hours": train_hours + eval_hours}


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


