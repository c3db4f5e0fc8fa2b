"""Paper rows train as the official code: duplicated optimizer list, validation cadence and selection, train mode.

Each test pins one row of docs/fidelity.md.
"""

from __future__ import annotations

import csv
import math
from types import SimpleNamespace

import pytest
import pytorch_lightning as pl
import torch
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from torch import nn

import temde.lightning
from temde.checkpoint import build_model, load_model, save_model
from temde.errors import InputError
from temde.lightning import RetrievalLitModule, ValidationSchedule
from temde.losses import ContrastiveLoss
from temde.optim import clip_grad_norm_per_entry, has_duplicates
from temde.training import model_config_for, train
from tests.conftest import REPO
from tests.helpers import compose_config, tiny_train_overrides

VSRN_ROWS = ["f30k_vsrn", "f30k_vsrn_temde", "coco_vsrn", "coco_vsrn_temde"]
# The per-entry clip and per-tensor Adam must hold on every device (CUDA defaults to foreach kernels).
DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
SGRAF_ROWS = [f"{d}_{m}{t}" for d in ("f30k", "coco") for m in ("sgr", "saf") for t in ("", "_temde")]


def _compose(overrides: list[str]):
    with initialize_config_dir(version_base="1.3", config_dir=str(REPO / "configs")):
        return compose(config_name="train", overrides=overrides)


# Official schedules (SGRAF README commands; VSRN README commands and train.py defaults): epochs, lr_update.
OFFICIAL_SCHEDULE = {"f30k_sgr": (40, 30), "f30k_saf": (30, 20), "coco_sgr": (20, 10), "coco_saf": (20, 10),
                     "f30k_vsrn": (30, 10), "coco_vsrn": (30, 15)}


@pytest.mark.parametrize("row", VSRN_ROWS + SGRAF_ROWS)
def test_paper_row_optimization_matches_the_official_command(row, tmp_path):
    cfg = _compose([f"experiment={row}", f"data.root={tmp_path}"])
    epochs, lr_update = OFFICIAL_SCHEDULE[row.removesuffix("_temde")]  # T-EMDE rows train on the base schedule
    assert (cfg.trainer.max_epochs, cfg.optim.lr_update) == (epochs, lr_update)
    assert (cfg.optim.lr, cfg.optim.lr_decay, cfg.optim.grad_clip) == (2e-4, 0.1, 2.0)
    assert (cfg.data.batch_size, cfg.data.val_split, cfg.data.val_max_captions) == (128, "dev", 5000)
    assert (cfg.loss.margin, cfg.loss.max_violation, cfg.loss.warmup_epochs) == (0.2, True, 0)
    assert cfg.model_selection == ("r1r5" if "vsrn" in row else "rsum")
    # optimizer list: SGRAF every parameter once; VSRN the official list with the caption branch twice
    model = instantiate(cfg.model, vocab_size=30, _convert_="all")
    listed = RetrievalLitModule(model, {}, ContrastiveLoss())._optimized_parameters()
    assert {id(p) for p in listed} == {id(p) for p in model.parameters()}
    assert has_duplicates(listed) == ("vsrn" in row)


# ---- 1. the official VSRN optimizer list, in every VSRN paper row ---------------------------------------------
@pytest.mark.parametrize("row", VSRN_ROWS)
def test_vsrn_paper_rows_use_the_official_duplicated_list(row, tmp_path):
    cfg = _compose([f"experiment={row}", f"data.root={tmp_path}"])
    assert cfg.model.duplicate_caption_parameters is True
    model = instantiate(cfg.model, vocab_size=30, embed_size=16, word_dim=8, dim_hidden=8, dim_word=8, img_dim=12,
                        _convert_="all")
    params = model.optimizer_parameters()
    assert has_duplicates(params) and len(params) > len(list(model.parameters()))
    optimizer = RetrievalLitModule(model, {}, ContrastiveLoss()).configure_optimizers()["optimizer"]
    assert optimizer.defaults["foreach"] is False  # per-tensor Adam: one update per list entry


# ---- 2. clipping and Adam apply twice to a tensor listed twice -------------------------------------------------
class _Listed(nn.Module):
    """A model whose optimizer list names ``a`` twice (as VSRN's caption branch), through the general hook."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Parameter(torch.tensor([1.0, -2.0, 0.5]))
        self.b = nn.Parameter(torch.tensor([[0.3, 0.1], [-0.4, 2.0]]))

    def optimizer_parameters(self) -> list[torch.Tensor]:
        return [self.a, self.b, self.a]


def _official_step(listed: list[torch.Tensor], grads: list[torch.Tensor], lr: float, max_norm: float,
                   steps: int) -> list[torch.Tensor]:
    """Hand-written torch 0.4.1 loop: clip_grad_norm(params) then Adam.step(), one list entry at a time."""
    values = {id(p): p.detach().clone().double() for p in listed}
    state: dict[int, dict] = {}
    b1, b2, eps = 0.9, 0.999, 1e-8
    for _ in range(steps):
        g = {id(p): grad.double().clone() for p, grad in zip(listed, grads, strict=True)}
        total = math.sqrt(sum(float(g[id(p)].norm()) ** 2 for p in listed))
        coef = max_norm / (total + 1e-6)
        if coef < 1:
            for p in listed:
                g[id(p)] *= coef
        for p in listed:
            s = state.setdefault(id(p), {"step": 0, "m": torch.zeros_like(g[id(p)]), "v": torch.zeros_like(g[id(p)])})
            s["step"] += 1
            s["m"] = b1 * s["m"] + (1 - b1) * g[id(p)]
            s["v"] = b2 * s["v"] + (1 - b2) * g[id(p)] ** 2
            step_size = lr * math.sqrt(1 - b2 ** s["step"]) / (1 - b1 ** s["step"])
            values[id(p)] = values[id(p)] - step_size * s["m"] / (s["v"].sqrt() + eps)
    return [values[id(p)] for p in listed]


@pytest.mark.parametrize("device", DEVICES)
def test_listed_twice_gradient_is_clipped_twice_and_gets_two_adam_updates(device):
    model = _Listed()
    grad_a, grad_b = torch.tensor([3.0, 4.0, -12.0]), torch.tensor([[1.0, -2.0], [0.5, 6.0]])
    expected = _official_step(model.optimizer_parameters(), [grad_a, grad_b, grad_a], 0.01, 2.0, steps=3)
    model.to(device)
    grad_a, grad_b = grad_a.to(device), grad_b.to(device)
    module = RetrievalLitModule(model, {}, ContrastiveLoss(), lr=0.01, grad_clip=2.0)
    optimizer = module.configure_optimizers()["optimizer"]
    for _ in range(3):
        model.a.grad, model.b.grad = grad_a.clone(), grad_b.clone()
        module.configure_gradient_clipping(optimizer)
        # total norm counts a twice: sqrt(2|ga|^2 + |gb|^2); a is multiplied by the coefficient twice, b once
        coef = 2.0 / (math.sqrt(2 * grad_a.norm() ** 2 + grad_b.norm() ** 2) + 1e-6)
        torch.testing.assert_close(model.a.grad, grad_a * coef**2)
        torch.testing.assert_close(model.b.grad, grad_b * coef)
        optimizer.step()
    assert optimizer.state[model.a]["step"].item() == 6 and optimizer.state[model.b]["step"].item() == 3
    # float32 vs the float64 reference (one update moves ~lr = 1e-2); torch puts Adam eps after the bias
    # correction, 0.4.1 before it: a difference of ~eps/sqrt(v) (docs/fidelity.md)
    torch.testing.assert_close(model.a.detach().cpu().double(), expected[0], rtol=0, atol=1e-6)
    torch.testing.assert_close(model.b.detach().cpu().double(), expected[1], rtol=0, atol=1e-6)


def test_duplicates_are_found_by_identity_also_across_parameter_groups():
    a, b = nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))
    assert not has_duplicates([a, b]) and has_duplicates([a, b, a])
    assert not has_duplicates([nn.Parameter(torch.zeros(2)), nn.Parameter(torch.zeros(2))])  # equal values
    assert has_duplicates([{"params": [a]}, {"params": [b, a], "lr": 1e-3}]) and not has_duplicates([{"params": [a, b]}])


def test_float16_loss_scaling_is_refused_for_a_list_with_duplicates():
    # GradScaler.unscale_ visits every list entry: a listed-twice gradient would be divided by the scale twice.
    module = RetrievalLitModule(_Listed(), {}, ContrastiveLoss())
    module._trainer = SimpleNamespace(precision="16-mixed")
    with pytest.raises(InputError, match="trainer.precision"):
        module.on_fit_start()
    for precision in ("32-true", "bf16-mixed"):
        module._trainer = SimpleNamespace(precision=precision)
        module.on_fit_start()


def test_per_entry_clip_equals_the_single_tensor_torch_loop():
    gen = torch.Generator().manual_seed(0)
    params = [nn.Parameter(torch.randn(4, 3, generator=gen)) for _ in range(3)]
    listed = [params[0], params[1], params[2], params[1]]
    grads = [torch.randn(p.shape, generator=gen) * 5 for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    ours = clip_grad_norm_per_entry(listed, 2.0)
    ours_grads = [p.grad.clone() for p in params]
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone()
    reference = torch.nn.utils.clip_grad_norm_(listed, 2.0, foreach=False)  # CPU loop: entries one by one
    torch.testing.assert_close(ours, reference)
    for p, g in zip(params, ours_grads, strict=True):
        torch.testing.assert_close(g, p.grad)
    # below the threshold nothing changes
    for p, g in zip(params, grads, strict=True):
        p.grad = g.clone() * 1e-4
    clip_grad_norm_per_entry(listed, 2.0)
    assert all(torch.equal(p.grad, g * 1e-4) for p, g in zip(params, grads, strict=True))


# ---- 3. validation cadence and model selection ----------------------------------------------------------------
@pytest.mark.parametrize("row", VSRN_ROWS + SGRAF_ROWS)
def test_paper_row_validation_cadence_and_selection(row, tmp_path):
    cfg = _compose([f"experiment={row}", f"data.root={tmp_path}"])
    schedule = instantiate(cfg.callbacks.validation_schedule)
    best = cfg.callbacks.model_checkpoint
    assert best.save_on_train_epoch_end is False and best.mode == "max" and best.save_top_k == 1
    if "vsrn" in row:  # official VSRN train.py: val_step=500 (+ epoch ends), best by R@1+R@5
        assert schedule.every_n_steps == 500 and best.monitor == "val/r1r5"
    else:  # official SGRAF train.py: once per epoch (its 1000-step validations only log), best by rsum
        assert schedule.every_n_steps is None and best.monitor == "val/rsum"


def test_validation_schedule_rejects_bad_values():
    for bad in (0, -5, 2.5):
        with pytest.raises(InputError, match="every_n_steps"):
            ValidationSchedule(bad)


def _val_rows(run_dir) -> list[dict]:
    """Logged validations with ``iteration``: training iterations done (the logger's step counts from 0)."""
    with open(run_dir / "csv" / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("val/rsum")]
    return [{**row, "iteration": int(row["step"]) + 1} for row in rows]


def test_validates_every_n_steps_and_at_epoch_ends_and_keeps_the_best_of_all(tmp_path, tiny_data_root):
    # tiny data: 400 captions / 32 = 13 iterations per epoch; every 5 iterations + epoch ends (13, 26, 39)
    out = tmp_path / "run"
    cfg = compose_config("train", [*tiny_train_overrides(tiny_data_root, epochs=3), "eval.test=false",
                                   "callbacks.validation_schedule.every_n_steps=5"])
    _, meta = train(cfg, out)
    rows = _val_rows(out)
    assert [r["iteration"] for r in rows] == [5, 10, 13, 15, 20, 25, 26, 30, 35, 39]
    scores = [float(r["val/rsum"]) for r in rows]
    first_best = scores.index(max(scores))
    assert meta["val_best"] == pytest.approx(max(scores))
    best = torch.load(out / "checkpoints" / "best.ckpt", weights_only=True)
    assert best["global_step"] == rows[first_best]["iteration"]  # the first validation reaching the maximum
    last = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert last["global_step"] == 39


def test_resume_is_exact_with_mid_epoch_validation(tmp_path, tiny_data_root):
    every = "callbacks.validation_schedule.every_n_steps=5"

    def run(name, extra):
        out = tmp_path / name
        train(compose_config("train", [*tiny_train_overrides(tiny_data_root), "eval.test=false", every, *extra]),
              out)
        return out

    straight = run("straight", ["trainer.max_epochs=3"])
    first = run("first", ["trainer.max_epochs=2"])
    resumed = run("resumed", ["trainer.max_epochs=3", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"])
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 39
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    # the resumed run validated at the same iterations of epoch 3 and found the same scores; its history carries
    # the first run's validations over (temde.training copies it), so the whole history equals the straight run's
    assert [(r["step"], r["val/rsum"]) for r in _val_rows(resumed)] == \
        [(r["step"], r["val/rsum"]) for r in _val_rows(straight)]


# ---- 5. a loaded model trains in train mode (and the official list goes through Lightning's step) ------------
def test_fine_tuning_a_loaded_checkpoint_trains_in_train_mode(tmp_path, tiny_data_root, monkeypatch):
    cfg = compose_config("train", [*tiny_train_overrides(tiny_data_root), "experiment=synthetic_vsrn",
                                   "model.dim_hidden=8", "model.dim_word=8",
                                   "model.duplicate_caption_parameters=true"])
    datamodule = instantiate(cfg.data)
    model_config = model_config_for(cfg, len(datamodule.vocab))
    save_model(tmp_path / "m.ckpt", build_model(model_config), model_config, datamodule.vocab.word2idx)
    loaded, _ = load_model(tmp_path / "m.ckpt")
    assert not loaded.training  # loaders hand out eval mode
    norms = [m for m in loaded.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    assert norms
    before = [m.running_mean.clone() for m in norms]
    clips = []
    monkeypatch.setattr(temde.lightning, "clip_grad_norm_per_entry",
                        lambda params, max_norm: clips.append(max_norm) or clip_grad_norm_per_entry(params, max_norm))
    module = RetrievalLitModule(loaded, model_config, ContrastiveLoss(), lr=1e-3)
    trainer = pl.Trainer(max_steps=2, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, limit_val_batches=0,
                         num_sanity_val_steps=0)
    trainer.fit(module, datamodule=datamodule)
    assert any(not torch.equal(m.running_mean, b) for m, b in zip(norms, before, strict=True))
    assert all(m.num_batches_tracked.item() == 2 for m in norms)
    # Lightning's step ran the per-entry clip and per-tensor Adam: caption branch 2 updates per step, rest 1
    assert clips == [2.0, 2.0]
    state = trainer.optimizers[0].state
    caption = {id(p) for p in loaded.caption.parameters()}
    assert {int(state[p]["step"]) for p in loaded.parameters() if id(p) in caption} == {4}
    assert {int(state[p]["step"]) for p in loaded.parameters() if id(p) not in caption} == {2}
