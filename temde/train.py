"""Training entry point: ``python -m temde.train [experiment=<row>] [overrides]``.

A thin Hydra shell over :func:`temde.training.train`: composes data + model (+ T-EMDE options) + loss + trainer
from ``configs/``, trains into the run directory (``ckpt_path=<run>/checkpoints/last.ckpt`` resumes into the same
one) and returns the best validation score to Hydra sweepers (Optuna).
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from temde.cli import run_reporting_errors
from temde.run_dir import register_resolvers
from temde.training import train

register_resolvers()  # hydra.run.dir: a directory no other run shares, or the resumed run's own


@hydra.main(config_path="configs", config_name="train", version_base="1.3")
def main(cfg: DictConfig) -> float | None:
    hc = HydraConfig.get()
    _, meta = run_reporting_errors(
        lambda: train(cfg, Path(hc.runtime.output_dir), hc.runtime.choices.get("experiment")),
        "temde.train", list(hc.overrides.task))
    # Returned for Hydra sweepers (Optuna): the best validation score, never a test number.
    return meta["val_best"]


if __name__ == "__main__":
    main()
