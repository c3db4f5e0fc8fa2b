"""Experiment tracking in one place: wandb login / offline policy, the sweep objective, resumable histories.

Why here: the entry points, ``scripts/sweep.py`` and the Hydra sweep callbacks all need the same answers (is a
wandb login configured? where does the sweep objective go? how does a resumed run continue its history?).
"""

from __future__ import annotations

import csv
import netrc
import os
import sys
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback
from pytorch_lightning.loggers import CSVLogger, Logger, WandbLogger

# The one objective of wandb sweeps and the offline Optuna sweep: the best validation score of the run.
OBJECTIVE = "val/best"
WANDB_ID_FILE = "wandb_id.txt"  # in the run directory: a resumed run continues the same wandb run


def wandb_configured() -> bool:
    """A wandb API key is available (environment or ~/.netrc), so online logging will not prompt."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators("api.wandb.ai") is not None
    except (FileNotFoundError, netrc.NetrcParseError):
        return False


def wandb_logged_in() -> bool:
    """Logged in and not forced offline: a wandb sweep server can be used."""
    return wandb_configured() and os.environ.get("WANDB_MODE", "online") not in ("offline", "disabled")


def offline_unless_logged_in() -> None:
    """Never block on a login prompt: without a login, wandb logs offline (``wandb sync`` uploads later)."""
    if not wandb_configured():
        os.environ.setdefault("WANDB_MODE", "offline")


def finish_wandb() -> None:
    """Close the active wandb run, if any: one wandb run per training run, also inside a Hydra multirun."""
    wandb = sys.modules.get("wandb")
    if wandb is not None and getattr(wandb, "run", None) is not None:
        wandb.finish()


class WandbFinish(Callback):
    """Hydra callback for multiruns: trials share a process and Lightning leaves its wandb run open."""

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        finish_wandb()


def wandb_resume_kwargs(run_dir: Path, resuming: bool) -> dict[str, Any]:
    """``id``/``resume`` for WandbLogger: a resumed run continues the wandb run its directory started."""
    id_file = run_dir / WANDB_ID_FILE
    if resuming and id_file.is_file():
        return {"id": id_file.read_text().strip(), "resume": "allow"}
    return {}


def remember_wandb_id(loggers: list[Logger], run_dir: Path) -> None:
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            tmp = run_dir / f".{WANDB_ID_FILE}.tmp"
            tmp.write_text(str(lg.version))
            tmp.replace(run_dir / WANDB_ID_FILE)


def log_objective(loggers: list[Logger], value: float | None, step: int) -> None:
    """Put the best validation score under :data:`OBJECTIVE` in every logger (the wandb run summary too)."""
    if value is None:
        return
    for lg in loggers:
        if isinstance(lg, WandbLogger):
            lg.experiment.summary[OBJECTIVE] = value
        lg.log_metrics({OBJECTIVE: value}, step=step)
        lg.save()


class HistoryCSVLogger(CSVLogger):
    """CSVLogger whose ``metrics.csv`` survives a resume.

    Lightning's CSV writer deletes an existing ``metrics.csv`` when it starts. Given ``resume_at`` = (first epoch,
    first global step) of the resumed run, rows logged before that point are kept and rows of the interrupted
    epoch are dropped (they are logged again), so the file equals the one an uninterrupted run writes.
    """

    def __init__(self, *args: Any, resume_at: tuple[int, int] | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._kept: tuple[list[str], list[dict[str, str]]] | None = None
        path = Path(self.log_dir) / "metrics.csv"
        if resume_at is not None and path.is_file():
            with path.open(newline="") as f:
                reader = csv.DictReader(f)
                rows = [r for r in reader if _logged_before(r, *resume_at)]
                self._kept = (list(reader.fieldnames or []), rows)

    @property
    def experiment(self) -> Any:
        fresh = self._experiment is None
        writer = super().experiment
        if fresh and self._kept is not None:
            header, rows = self._kept
            with open(writer.metrics_file_path, "w", newline="") as f:
                out = csv.DictWriter(f, fieldnames=header)
                out.writeheader()
                out.writerows(rows)
            writer.metrics_keys = list(header)
            self._kept = None
        return writer


def _logged_before(row: dict[str, str], epoch: int, step: int) -> bool:
    """Rows carry their epoch, except the learning-rate rows (logged at an epoch's first step)."""
    if row.get("epoch"):
        return float(row["epoch"]) < epoch
    return bool(row.get("step")) and float(row["step"]) < step
