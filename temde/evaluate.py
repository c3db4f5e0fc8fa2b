"""Evaluation entry point: ``python -m temde.evaluate ckpt=[a.ckpt,b.ckpt] data=f30k``.

A thin Hydra shell over :func:`temde.evaluating.evaluate` (several checkpoints = an equal-weight ensemble);
writes ``metrics.json`` and a Recall table into the run directory and says where.
"""

from __future__ import annotations

from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from temde.cli import run_reporting_errors
from temde.evaluating import evaluate
from temde.run_dir import register_resolvers

register_resolvers()


@hydra.main(config_path="configs", config_name="eval", version_base="1.3")
def main(cfg: DictConfig) -> dict[str, dict[str, float]]:
    out_dir = Path(HydraConfig.get().runtime.output_dir)
    return run_reporting_errors(lambda: evaluate(cfg, out_dir), "temde.evaluate")


if __name__ == "__main__":
    main()
