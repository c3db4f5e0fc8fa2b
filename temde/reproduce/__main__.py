"""``python -m temde.reproduce`` / ``make reproduce TABLE=f30k|coco1k|coco5k DATA=synthetic|f30k|coco [ARGS=...]``.

Trains the runs the table needs (reusing finished ones under --out-root), evaluates and ensembles them, and writes
``<out-root>/results/[synthetic_]<table>.{md,json}`` with figures; ``--publish`` writes the committed example in
experiments/results/ instead. ``--seeds N`` repeats every row with N seed replicates (mean +- std; default 2 on
synthetic data, 1 on real data). ``--dry-run`` prints the plan and the estimated GPU time. See docs/reproduce.md.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from tqdm.auto import tqdm

from temde.data.required import require_files
from temde.errors import EXIT_BAD_INPUT, InputError
from temde.reproduce.plan import REPO, TABLES, build_plan, compose_run_config, estimate_run, format_plan
from temde.reproduce.run import reproduce

PUBLISHED = REPO / "experiments" / "results"
SYNTHETIC_SEEDS = 2  # mean +- std needs at least two replicates; synthetic runs take minutes on a CPU


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m temde.reproduce", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--table", required=True, choices=TABLES)
    p.add_argument("--data", default="real",
                   help="real | f30k | coco (the table's real data, the default) | synthetic (CPU-sized "
                        "counterparts, only when asked for)")
    p.add_argument("--epochs", type=int, help="override trainer.max_epochs of every run (part of the run key)")
    p.add_argument("--seeds", type=int, help=f"seed replicates per row (default {SYNTHETIC_SEEDS} on synthetic "
                   "data, 1 on real data); replicate r shifts every seed by r x 100")
    p.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                   help="Hydra override for every run, repeatable (part of the run key), e.g. data.root=/data; "
                        "EXPERIMENT:KEY=VALUE applies to one experiment only")
    p.add_argument("--rows", nargs="+", help="only these row names")
    p.add_argument("--out-root", type=Path, default=REPO / "outputs" / "reproduce", help="run directories")
    p.add_argument("--results-dir", type=Path, help="where the table goes (default: <out-root>/results)")
    p.add_argument("--publish", action="store_true",
                   help=f"write the committed example table in {PUBLISHED.relative_to(REPO)}/ (on purpose only)")
    p.add_argument("--launcher", choices=("auto", "subprocess", "inprocess"), default="auto",
                   help="auto: inprocess for synthetic data, a fresh `python -m temde.train` per run otherwise")
    p.add_argument("--device", default="auto", help="evaluation device: auto | cpu | cuda")
    p.add_argument("--force", action="store_true", help="retrain even when a finished run exists")
    p.add_argument("--no-plots", action="store_true")
    p.add_argument("--step-seconds", action="append", default=[], metavar="FAMILY=SECONDS",
                   help="step time for the estimate (sgraf|vsrn|baseline), e.g. sgraf=0.5")
    p.add_argument("--dry-run", action="store_true", help="print the plan and the estimated GPU time, train nothing")
    args = p.parse_args(argv)
    if args.publish and args.results_dir is not None:
        p.error("--publish and --results-dir exclude each other")
    if args.seeds is not None and args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    data = args.data
    if data not in ("synthetic", "real"):
        expected = "f30k" if args.table == "f30k" else "coco"
        if data != expected:
            sys.exit(f"--data {data} does not fit table {args.table} (expected {expected}, real or synthetic)")
        data = "real"
    seeds = args.seeds or (SYNTHETIC_SEEDS if data == "synthetic" else 1)
    plan = build_plan(args.table, data, args.epochs, args.override, args.out_root, args.rows, seeds)
    if data == "real" and not args.dry_run:
        try:
            require_files((compose_run_config(run).data for run in plan.runs),
                          f"the CPU-sized synthetic table instead: make reproduce TABLE={args.table} DATA=synthetic")
        except InputError as err:
            print(err.one_line(), file=sys.stderr)
            return EXIT_BAD_INPUT
    steps = {k: float(v) for k, v in (s.split("=", 1) for s in args.step_seconds)}
    estimates = [estimate_run(run, plan, steps) for run in plan.runs]
    print(format_plan(plan, estimates))
    if args.dry_run:
        return 0
    results_dir = PUBLISHED if args.publish else (args.results_dir or args.out_root / "results")
    launcher = args.launcher if args.launcher != "auto" else ("inprocess" if data == "synthetic" else "subprocess")
    report = reproduce(plan, results_dir, launcher, args.force, args.device, not args.no_plots,
                       progress=lambda runs: tqdm(runs, desc=f"runs of {args.table}", unit="run"))
    out = results_dir / plan.result_name
    print(f"\nwrote {out}.md, {out}.json" + (f" and {len(report.get('figures', []))} figures in {out}/"
                                              if not args.no_plots else ""))
    print((results_dir / f"{plan.result_name}.md").read_text())
    return 0


if __name__ == "__main__":
    sys.exit(main())
