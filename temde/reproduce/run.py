"""Train the runs of a plan (or reuse finished ones), score each run once, and hand the rows to the report.

Every run's test similarity matrix is cached next to its checkpoint (``sims_<split>.npy``), so a checkpoint shared
by several rows (SGR in "SGR" and "SGRAF") is scored once. Results go to ``results_dir``: by default inside the
output root (``<out_root>/results``); the committed examples in ``experiments/results/`` are rewritten only on
purpose (``--publish``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from temde.checkpoint import checkpoint_vocabulary, load_model
from temde.data.precomp import PrecompDataset
from temde.data.vocab import Vocabulary
from temde.evaluating import resolve_device
from temde.reproduce.lock import run_lock
from temde.reproduce.plan import Plan, RunSpec, compose_run_config, estimate_run, is_finished
from temde.reproduce.report import build_report, write_report
from temde.retrieval import split_similarity
from temde.training import train

log = logging.getLogger(__name__)


def train_run(run: RunSpec, run_dir: Path, launcher: str = "subprocess") -> None:
    """Train one run into ``run_dir`` (``subprocess``: ``python -m temde.train``; ``inprocess``: same config,
    this interpreter, no start-up cost)."""
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "run.json").write_text(json.dumps(asdict(run), indent=2))
    if launcher == "subprocess":
        cmd = [sys.executable, "-m", "temde.train", *run.train_overrides(), f"hydra.run.dir={run_dir}"]
        log.info("train: %s", " ".join(cmd))
        proc = subprocess.run(cmd)  # cwd kept: data.root may be relative
        if proc.returncode != 0:
            raise RuntimeError(f"training {run.label} failed (exit {proc.returncode}); log: {run_dir}/train.log")
    elif launcher == "inprocess":
        _train_inprocess(run, run_dir)
    else:
        raise ValueError(f"launcher must be subprocess or inprocess, got {launcher!r}")
    if not is_finished(run_dir):
        raise RuntimeError(f"training {run.label} ended without {run_dir}/metrics.json and model_best.ckpt")


def _train_inprocess(run: RunSpec, run_dir: Path) -> None:
    train(compose_run_config(run), run_dir, experiment=run.experiment)


def _record_run_facts(plan: Plan, run: RunSpec, estimate: dict[str, Any] | None) -> None:
    path = plan.run_dir(run) / "run.json"
    facts = json.loads(path.read_text()) if path.is_file() else asdict(run)
    if estimate:
        facts.update(epochs=estimate["epochs"], iterations_per_epoch=estimate["iterations_per_epoch"])
    path.write_text(json.dumps(facts, indent=2))


def run_similarity(run_dir: Path, split: str, img_block: int | None = None, txt_block: int | None = None,
                   batch_size: int = 128, device: str = "auto") -> np.ndarray:
    """Test similarity matrix of a finished run, cached as ``sims_<split>.npy`` next to its checkpoint."""
    cache = run_dir / f"sims_{split}.npy"
    if cache.is_file():
        return np.load(cache)
    info = json.loads((run_dir / "reproduce_data.json").read_text())
    ckpt = run_dir / "model_best.ckpt"
    model, payload = load_model(ckpt)
    dataset = PrecompDataset(Path(info["root"]), info["name"], split, Vocabulary(checkpoint_vocabulary(ckpt, payload)))
    tokens, lengths = dataset.caption_tokens()
    sims = split_similarity(model, dataset.image_features(), tokens, lengths, img_block, txt_block, batch_size,
                            resolve_device(device))
    sims = np.asarray(sims, dtype=np.float32)
    tmp = cache.with_name(f".{cache.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as f:  # temporary name, then rename: a concurrent reader never sees half a matrix
        np.save(f, sims)
    os.replace(tmp, cache)
    return sims


def _record_data(run: RunSpec, run_dir: Path) -> None:
    """Where the run's test data lives (the composed config's data.root / data.name)."""
    if (run_dir / "reproduce_data.json").is_file():
        return
    cfg = compose_run_config(run)
    (run_dir / "reproduce_data.json").write_text(json.dumps({"root": str(Path(cfg.data.root).resolve()), "name": cfg.data.name}))


def _train_or_reuse(run: RunSpec, run_dir: Path, launcher: str, force: bool, block: bool) -> str | None:
    """Train ``run`` unless finished, holding its lock; None when another process holds it and ``block`` is False.

    A run that another process finished while we waited is reused, even with ``force`` (it was just trained).
    """
    with run_lock(run_dir, block) as held:
        if not held:
            return None
        if is_finished(run_dir) and not force:
            return "reused"
        started = time.time()
        for stale in run_dir.glob("sims_*.npy"):
            stale.unlink()
        train_run(run, run_dir, launcher)
        return f"trained in {time.time() - started:.0f} s"


def train_missing(plan: Plan, launcher: str = "subprocess", force: bool = False,
                  progress: Callable[[Iterable], Iterable] = lambda x: x) -> dict[str, str]:
    """Train every unfinished run of the plan; {run key: "reused" | "trained in N s"}.

    Several processes may work on one out-root: a run another process is training is skipped at first and waited
    for at the end (then reused), so N processes split a table's runs between them.
    """
    statuses, deferred = {}, []
    for run in progress(plan.runs):
        status = _train_or_reuse(run, plan.run_dir(run), launcher, force, block=False)
        if status is None:
            log.info("%s is being trained by another process: doing the other runs first", run.key)
            deferred.append(run)
        else:
            statuses[run.key] = status
    for run in deferred:
        statuses[run.key] = _train_or_reuse(run, plan.run_dir(run), launcher, force=False, block=True) or "reused"
    return statuses


def _run_info(plan: Plan, run: RunSpec, status: str) -> dict[str, Any]:
    run_dir = plan.run_dir(run)
    try:
        _record_run_facts(plan, run, estimate_run(run, plan))
    except Exception as err:  # noqa: BLE001 - the estimate is a nicety, never a reason to fail a table
        log.warning("no estimate for %s: %s", run.key, err)
    _record_data(run, run_dir)
    meta = json.loads((run_dir / "metrics.json").read_text()).get("_meta", {})
    return {**asdict(run), "key": run.key, "run_dir": str(run_dir), "status": status,
            "val_best": meta.get("val_best"), "train_seconds": meta.get("train_seconds")}


# ---------------------------------------------------------------------------------------------------- pipeline
def reproduce(
    plan: Plan,
    results_dir: Path,
    launcher: str = "subprocess",
    force: bool = False,
    device: str = "auto",
    plots: bool = True,
    progress: Callable[[Iterable], Iterable] = lambda x: x,
) -> dict[str, Any]:
    """Train missing runs, score every run once, ensemble per row and replicate, compare, write md + json (+ png)."""
    statuses = train_missing(plan, launcher, force, progress)
    run_info = {run.key: _run_info(plan, run, statuses[run.key]) for run in plan.runs}
    split = plan.eval_split["split"]
    sims = {run.key: run_similarity(plan.run_dir(run), split, device=device) for run in plan.runs}
    report = build_report(plan, sims, run_info)
    return write_report(plan, report, Path(results_dir), plots)
