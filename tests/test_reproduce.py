"""Paper-table reproduction: plans, run keys, ensembles, comparison, and the whole synthetic table end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from temde.evaluation import retrieval_metrics
from temde.paper_results import paper_row
from temde.reproduce import (
    RECALLS,
    TABLES,
    RunSpec,
    build_plan,
    compare,
    estimate_run,
    load_table,
    mean_std,
    row_metrics,
    significance,
)
from temde.reproduce.__main__ import main as reproduce_main
from temde.reproduce.report import chance_metrics
from tests.conftest import REPO

# Smallest settings that still exercise every model of the table (36 regions: SGRAF's VisualSA BatchNorm).
TINY = [
    "data.synthetic.n_train=8", "data.synthetic.n_dev=5", "data.synthetic.n_test=5", "data.synthetic.n_testall=10",
    "data.synthetic.feature_dim=16", "model.img_dim=16", "model.embed_size=32", "model.word_dim=16",
    "data.batch_size=20", "trainer.enable_progress_bar=false", "callbacks.progress_bar=null", "eval.test=false",
    "synthetic_vsrn:model.dim_hidden=16", "synthetic_vsrn:model.dim_word=16",
    "synthetic_vsrn_temde:model.dim_hidden=16", "synthetic_vsrn_temde:model.dim_word=16",
]


@pytest.mark.parametrize("table", TABLES)
def test_every_table_row_has_a_paper_row_and_real_experiments(table):
    spec = load_table(table)
    experiments = {p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml")}
    for row in spec["rows"]:
        if row["paper"]:
            paper_row(spec["protocol"], row["paper"]["model"], row["paper"]["source"])  # exactly one
        for run in row["runs"]:
            assert run["experiment"] in experiments, run
            assert spec["synthetic"][run["experiment"]]["experiment"] in experiments


def test_plan_shares_runs_between_rows_and_keys_depend_on_everything():
    plan = build_plan("f30k", "real")
    by_name = {r.name: r for r in plan.rows}
    assert by_name["SGRAF*"].runs == [by_name["SGR"].runs[0], by_name["SAF"].runs[0]]
    assert [r.seed for r in by_name["VSRN*"].runs] == [1, 2] and by_name["VSRN"].runs[0] in by_name["VSRN*"].runs
    assert len(plan.runs) == 8  # sgr, saf, sgr_temde, saf_temde, 2 x vsrn, 2 x vsrn_temde
    keys = {RunSpec("a", 0).key, RunSpec("a", 1).key, RunSpec("a", 0, ("x=1",)).key, RunSpec("b", 0).key}
    assert len(keys) == 4
    assert RunSpec("a", 0, ("x=1", "y=2")).key == RunSpec("a", 0, ("y=2", "x=1")).key
    synthetic = build_plan("coco5k", "synthetic", epochs=2, overrides=["synthetic_vsrn:model.dim_hidden=8"])
    saf = next(r for r in synthetic.rows if r.name == "SAF").runs[0]
    assert saf.experiment == "synthetic_sgr" and "model.module_name=SAF" in saf.overrides
    assert "trainer.max_epochs=2" in saf.overrides and "model.dim_hidden=8" not in saf.overrides
    vsrn = next(r for r in synthetic.rows if r.name == "VSRN*").runs[0]
    assert "model.dim_hidden=8" in vsrn.overrides


def test_synthetic_run_keys_change_with_the_world_version(monkeypatch):
    """A run trained on an older synthetic world must not be reused after the generator changed."""
    import dataclasses

    from temde.data.synthetic.spec import LEVELS

    before = {r.key for r in build_plan("f30k", "synthetic").runs}
    real_before = {r.key for r in build_plan("f30k", "real").runs}
    monkeypatch.setitem(LEVELS, "standard", dataclasses.replace(LEVELS["standard"], p_color=0.99))
    after = {r.key for r in build_plan("f30k", "synthetic").runs}
    assert len(after) == len(before) and before.isdisjoint(after)
    assert {r.key for r in build_plan("f30k", "real").runs} == real_before  # real data has no world version


def test_estimate_is_iterations_times_epochs_times_step_time():
    plan = build_plan("f30k", "real", rows=["SGR"])
    est = estimate_run(plan.runs[0], plan, {"sgraf": 0.5})
    assert est["iterations_per_epoch"] == -(-145000 // 128) and est["epochs"] == 40
    assert est["train_hours"] == pytest.approx(est["iterations_per_epoch"] * 40 * 0.5 / 3600)
    assert est["step_source"] == "--step-seconds"
    assert est["validations"] == 40  # SGRAF: once per epoch


@pytest.mark.parametrize("iters, epochs, every", [(1133, 30, 500), (7, 5, 3), (6, 4, 3), (10, 3, 1), (5, 2, None)])
def test_validation_count_matches_the_schedule_rule(iters, epochs, every):
    """count_validations vs a brute-force walk over every batch with ValidationSchedule's rule."""
    from temde.lightning import count_validations

    brute = sum(1 for g in range(1, iters * epochs + 1)
                if g % iters == 0 or (every is not None and g % every == 0))
    assert count_validations(iters, epochs, every) == brute


def test_vsrn_estimate_counts_the_500_step_validations():
    plan = build_plan("f30k", "real", rows=["VSRN"])
    est = estimate_run(plan.runs[0], plan)
    assert (est["iterations_per_epoch"], est["epochs"]) == (1133, 30)
    assert est["validations"] == 30 + 33990 // 500  # 97: every epoch end + every 500th of 33,990 iterations


def test_row_metrics_is_the_mean_similarity_ensemble_and_compare_handles_missing_values():
    rng = np.random.default_rng(0)
    a, b = rng.standard_normal((10, 50)), rng.standard_normal((10, 50))
    assert row_metrics([a, b], fold5=True) == retrieval_metrics((a + b) / 2, fold5=True)
    assert row_metrics([a], fold5=False) == retrieval_metrics(a)
    ours = dict.fromkeys(("i2t_r1", "i2t_r5", "i2t_r10", "t2i_r1", "t2i_r5", "t2i_r10", "rsum"), 50.0)
    diff = compare(ours, paper_row("coco_5k", "TEMDE+SGR", "temde_paper").metrics())
    assert diff["i2t_r1"] == pytest.approx(50.0 - 57.0) and diff["i2t_r5"] is None and diff["rsum"] is None
    assert compare(ours, None)["rsum"] is None


def test_make_reproduce_f30k_synthetic_end_to_end(tmp_path, monkeypatch):
    """`make reproduce TABLE=f30k DATA=synthetic` with tiny sizes and 1 epoch: table, json, plots, reuse, seeds."""
    monkeypatch.setenv("WANDB_MODE", "offline")
    results = tmp_path / "results"
    argv = ["--table", "f30k", "--data", "synthetic", "--epochs", "1", "--out-root", str(tmp_path / "runs"),
            "--override", f"data.root={tmp_path / 'data'}"]
    argv += [a for o in TINY for a in ("--override", o)]
    published = (REPO / "experiments" / "results" / "synthetic_f30k.json").stat().st_mtime_ns
    assert reproduce_main([*argv, "--seeds", "1", "--results-dir", str(results)]) == 0

    report = json.loads((results / "synthetic_f30k.json").read_text())
    baseline = "Baseline (mean-pool + GRU)"
    assert [r["name"] for r in report["rows"]] == [r["name"] for r in load_table("f30k")["rows"]] + [baseline]
    assert report["commit"] and report["data"] == "synthetic" and len(report["runs"]) == 9
    sgraf = next(r for r in report["rows"] if r["name"] == "SGRAF*")
    assert [r["seed"] for r in sgraf["runs"]] == [0, 0] and sgraf["paper"]["rsum"] == 499.6
    assert sgraf["std"] is None and report["significance"] == []  # one replicate: no std, nothing marked
    # the ensemble row equals the mean of its two runs' cached similarity matrices
    sims = [np.load(Path(r["run_dir"]) / "sims_test.npy") for r in sgraf["runs"]]
    assert sgraf["ours"] == pytest.approx(retrieval_metrics((sims[0] + sims[1]) / 2))
    md = (results / "synthetic_f30k.md").read_text()
    assert "| SGRAF* | f30k_sgr:0, f30k_saf:0 |" in md and report["commit"] in md
    assert "499.6" not in md and "| chance (random scores) |" in md  # synthetic rows are never set against the paper
    # chance on the tiny test split (5 images x 25 captions), analytically: i2t R@K = 1 - C(20, K) / C(25, K),
    # t2i R@K = min(K, 5) / 5: 20 + 70.8 + 94.3 + 20 + 100 + 100
    assert report["chance"]["rsum"] == pytest.approx(405.17, abs=0.01)
    figures = sorted(p.name for p in (results / "synthetic_f30k").glob("*.png"))
    assert "recall_sgraf.png" in figures and sum(f.startswith("curves_") for f in figures) == 9
    assert (REPO / "experiments" / "results" / "synthetic_f30k.json").stat().st_mtime_ns == published  # no --publish

    # two seed replicates of two rows: replicate 0 is reused, replicate 1 (seeds + 100) is trained
    assert reproduce_main([*argv, "--no-plots", "--rows", "SGR", baseline]) == 0  # default: 2 seeds, <out-root>/results
    again = json.loads((tmp_path / "runs" / "results" / "synthetic_f30k.json").read_text())
    assert [r["status"] == "reused" for r in again["runs"]] == [True, False, True, False]
    sgr = again["rows"][0]
    assert [[r["seed"] for r in rep] for rep in sgr["replicas"]] == [[0], [100]]
    assert sgr["per_replicate"][0] == report["rows"][1]["ours"]
    values = [m["rsum"] for m in sgr["per_replicate"]]
    assert sgr["ours"]["rsum"] == pytest.approx(np.mean(values)) and sgr["std"]["rsum"] == pytest.approx(
        np.std(values, ddof=1))
    (pair,) = again["significance"]
    assert pair["exceeds"] == (abs(pair["diff"]) > 2 * max(sgr["std"]["rsum"], again["rows"][1]["std"]["rsum"]))
    md = (tmp_path / "runs" / "results" / "synthetic_f30k.md").read_text()
    assert f"{sgr['ours']['rsum']:.1f} ± {sgr['std']['rsum']:.1f}" in md and "f30k_sgr:0 / f30k_sgr:100" in md


def test_significance_marks_differences_beyond_two_standard_deviations():
    def row(name, rsum, std):
        return {"name": name, "ours": {"rsum": rsum}, "std": None if std is None else {"rsum": std}}

    pairs = significance([row("a", 300.0, 5.0), row("b", 311.0, 4.0), row("c", 309.0, 1.0), row("d", 0.0, None)])
    assert [(p["a"], p["b"], p["exceeds"]) for p in pairs] == [("a", "b", True), ("a", "c", False),
                                                               ("b", "c", False)]
    assert mean_std([{k: 1.0 for k in RECALLS}])[1] is None


def test_chance_is_the_expected_recall_of_random_scores():
    exact = chance_metrics(100, 500, fold5=False)
    assert exact["t2i_r5"] == pytest.approx(5.0) and exact["i2t_r1"] == pytest.approx(1.0)
    rng = np.random.default_rng(0)  # independent check: the mean over random score matrices
    sampled = [retrieval_metrics(rng.standard_normal((100, 500)))["rsum"] for _ in range(200)]
    assert np.mean(sampled) == pytest.approx(exact["rsum"], abs=3 * np.std(sampled) / np.sqrt(200))
    assert chance_metrics(500, 2500, fold5=True) == exact  # five folds of 100 images


def test_dry_run_prints_plan_and_trains_nothing(tmp_path, capsys):
    assert reproduce_main(["--table", "coco5k", "--data", "coco", "--dry-run", "--out-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "coco_sgr_s0_" in out and "estimated GPU time" in out and "ESTIMATE" in out
    assert not any(tmp_path.iterdir())
    with pytest.raises(SystemExit):
        reproduce_main(["--table", "coco5k", "--data", "f30k", "--dry-run"])


def test_run_lock_is_exclusive_and_released_when_its_holder_dies(tmp_path):
    import subprocess
    import sys

    from temde.reproduce.lock import lock_path, run_lock

    run_dir = tmp_path / "synthetic_sgr_s0_abc"
    with run_lock(run_dir, block=False) as held:
        assert held
        with run_lock(run_dir, block=False) as again:  # a second holder (another open file) is refused
            assert not again
    with run_lock(run_dir, block=False) as held:
        assert held  # released on exit from the block
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)"), str(lock_path(run_dir))],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        with run_lock(run_dir, block=False) as held:
            assert not held
    finally:
        holder.kill()
        holder.wait()
    with run_lock(run_dir, block=True) as held:  # a killed holder leaves nothing locked
        assert held


def test_processes_sharing_an_out_root_split_the_runs(tmp_path, monkeypatch):
    """A run another process is training is done last and then reused, never trained twice."""
    import threading

    import temde.reproduce.run as run_module
    from temde.reproduce.lock import run_lock
    from temde.reproduce.run import train_missing

    plan = build_plan("f30k", "synthetic", out_root=tmp_path, rows=["SGR", "SAF", "T-EMDE + SGR"])
    first, *others = plan.runs
    trained, other_holds, release = [], threading.Event(), threading.Event()

    def finish(run_dir: Path) -> None:
        run_dir.mkdir(parents=True, exist_ok=True)
        (run_dir / "metrics.json").write_text("{}")
        (run_dir / "model_best.ckpt").write_bytes(b"")

    def other_process() -> None:  # holds the first run, finishes it once this process has trained the others
        with run_lock(plan.run_dir(first), block=True):
            other_holds.set()
            release.wait(30)
            finish(plan.run_dir(first))

    def fake_train(run, run_dir, launcher="subprocess"):
        trained.append(run.key)
        finish(run_dir)
        if len(trained) == len(others):
            release.set()

    monkeypatch.setattr(run_module, "train_run", fake_train)
    thread = threading.Thread(target=other_process)
    thread.start()
    assert other_holds.wait(10)
    statuses = train_missing(plan)
    thread.join()
    assert trained == [r.key for r in others]  # everything else first, in plan order; the first never trained here
    assert statuses[first.key] == "reused" and all(statuses[r.key].startswith("trained") for r in others)
    assert train_missing(plan) == {r.key: "reused" for r in plan.runs}


def test_stale_figures_are_removed_from_a_published_table(tmp_path):
    from temde.reproduce.report import remove_stale_figures

    keep = [tmp_path / "recall_sgr.png", tmp_path / "curves_synthetic_sgr_s0_new.png"]
    stale = [tmp_path / "curves_synthetic_sgr_s0_old.png", tmp_path / "recall_old_row.png"]
    other = tmp_path / "notes.txt"
    for p in [*keep, *stale, other]:
        p.write_bytes(b"x")
    assert sorted(remove_stale_figures(tmp_path, keep)) == sorted(stale)
    assert all(p.exists() for p in [*keep, other]) and not any(p.exists() for p in stale)
