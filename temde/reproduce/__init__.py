"""Reproduce a paper table: plan the runs (plan.py), train and score them (run.py), report mean +- std over seed
replicates against the reported numbers (report.py); the command line is ``python -m temde.reproduce``."""

from temde.reproduce.plan import (
    RECALLS,
    REPO,
    SEED_STRIDE,
    TABLES,
    Plan,
    RowPlan,
    RunSpec,
    build_plan,
    compose_run_config,
    estimate_run,
    format_plan,
    is_finished,
    load_table,
    model_family,
)
from temde.reproduce.report import build_report, compare, format_markdown, mean_std, row_metrics, significance
from temde.reproduce.run import reproduce, run_similarity, train_run

__all__ = ["RECALLS", "REPO", "SEED_STRIDE", "TABLES", "Plan", "RowPlan", "RunSpec", "build_plan", "build_report",
           "compare", "compose_run_config", "estimate_run", "format_markdown", "format_plan", "is_finished",
           "load_table", "mean_std", "model_family", "reproduce", "row_metrics", "run_similarity", "significance",
           "train_run"]
