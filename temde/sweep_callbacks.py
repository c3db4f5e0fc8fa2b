"""Hydra callbacks for multiruns (sweeps): one wandb run per trial.

Hydra's basic launcher runs every trial in the same process, and Lightning's WandbLogger leaves its run open at
the end of ``fit``, so without this the second trial would log into the first trial's run.
"""

from __future__ import annotations

import sys
from typing import Any

from hydra.experimental.callback import Callback


class WandbFinish(Callback):
    """Close the active wandb run (if any) when a job ends."""

    def on_job_end(self, config: Any, job_return: Any, **kwargs: Any) -> None:
        wandb = sys.modules.get("wandb")
        if wandb is not None and getattr(wandb, "run", None) is not None:
            wandb.finish()
