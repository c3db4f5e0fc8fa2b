"""Compose our Hydra configs in-process, the way `python -m temde.train` would, for fast tests."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from omegaconf import DictConfig

from tests.conftest import REPO, TINY_SPEC

TINY_DATA_OVERRIDES = [f"data.synthetic.{k}={v}"
                       for k, v in TINY_SPEC.__dict__.items()]


def compose_config(config_name: str, overrides: list[str]) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` with ``overrides``; ``temde.training.train(cfg, out_dir)`` and
    ``temde.evaluating.evaluate(cfg, out_dir)`` take it as is (no Hydra run state needed)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "configs")):
        return compose(config_name=config_name, overrides=overrides)


def tiny_train_overrides(data_root: Path, epochs: int = 2) -> list[str]:
    return [
        f"data.root={data_root}",
        *TINY_DATA_OVERRIDES,
        "data.batch_size=32",
        f"model.img_dim={TINY_SPEC.feature_dim}",
        "model.embed_size=32",
        "model.word_dim=16",
        f"trainer.max_epochs={epochs}",
        "trainer.accelerator=cpu",
        "trainer.enable_progress_bar=false",
        "callbacks.progress_bar=null",
        "optim.lr=5e-3",
        "loss.warmup_epochs=100",  # sum over negatives throughout: tiny runs leave the VSE++ plateau at once
    ]
