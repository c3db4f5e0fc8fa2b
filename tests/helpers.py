"""Compose our Hydra configs in-process, the way `python -m temde.train` would, for fast tests."""

from __future__ import annotations

from pathlib import Path

from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig, open_dict

from tests.conftest import REPO, TINY_SPEC

TINY_DATA_OVERRIDES = [f"data.synthetic.{k}={v}"
                       for k, v in TINY_SPEC.__dict__.items()]


def compose_config(config_name: str, overrides: list[str], out_dir: Path) -> DictConfig:
    """Compose ``configs/<config_name>.yaml`` and register it as the running Hydra config (run dir = out_dir)."""
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "configs")):
        cfg = compose(config_name=config_name, overrides=overrides, return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(out_dir)
    HydraConfig.instance().set_config(cfg)
    with open_dict(cfg):
        del cfg["hydra"]  # as in a real run: ${hydra:...} now resolves through the HydraConfig singleton
    return cfg


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
