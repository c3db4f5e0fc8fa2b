"""Training loop: the loss against brute force, an end-to-end run, exact resume, the official LR schedule."""

from __future__ import annotations

import json

import pytest
import torch

from temde.checkpoint import load_model
from temde.losses import ContrastiveLoss
from temde.training import train
from tests.helpers import compose_config, tiny_train_overrides


def _brute_force_vse(scores: torch.Tensor, margin: float, hardest: bool) -> float:
    n = scores.shape[0]
    total = 0.0
    for i in range(n):  # image i: its caption i vs every other caption j
        costs = [max(0.0, margin + scores[i, j].item() - scores[i, i].item()) for j in range(n) if j != i]
        total += max(costs) if hardest else sum(costs)
    for j in range(n):  # caption j: its image j vs every other image i
        costs = [max(0.0, margin + scores[i, j].item() - scores[j, j].item()) for i in range(n) if i != j]
        total += max(costs) if hardest else sum(costs)
    return total


@pytest.mark.parametrize("hardest", [True, False])
def test_contrastive_loss_matches_brute_force(hardest):
    scores = torch.rand(7, 7, generator=torch.Generator().manual_seed(0))
    loss = ContrastiveLoss(margin=0.2, max_violation=hardest)(scores)
    assert loss.item() == pytest.approx(_brute_force_vse(scores, 0.2, hardest), rel=1e-6)


def test_contrastive_loss_warmup_switches_to_hardest_negative():
    scores = torch.rand(6, 6, generator=torch.Generator().manual_seed(1))
    loss = ContrastiveLoss(margin=0.2, max_violation=True, warmup_epochs=2)
    loss.set_epoch(1)
    assert loss(scores).item() == pytest.approx(_brute_force_vse(scores, 0.2, hardest=False), rel=1e-6)
    loss.set_epoch(2)
    assert loss(scores).item() == pytest.approx(_brute_force_vse(scores, 0.2, hardest=True), rel=1e-6)


def test_contrastive_loss_plateau_value_and_shape_check():
    # All scores equal: every hinge is the margin, so the loss is 2 * B * margin (the SGRAF plateau, 51.2 @128).
    assert ContrastiveLoss(0.2)(torch.full((128, 128), 0.5)).item() == pytest.approx(51.2)
    with pytest.raises(ValueError, match="square"):
        ContrastiveLoss()(torch.zeros(3, 4))


def _run(tmp_path, name, data_root, extra=()):
    out = tmp_path / name
    cfg = compose_config("train", [*tiny_train_overrides(data_root), *extra])
    results, meta = train(cfg, out)
    return out, results, meta


def test_train_end_to_end_writes_metrics_and_checkpoints(tmp_path, tiny_data_root):
    out, results, meta = _run(tmp_path, "run", tiny_data_root, ["trainer.max_epochs=6"])
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics) == {"test", "testall_5fold", "_meta"}
    for key in ("i2t_r1", "t2i_r10", "rsum", "i2t_medr", "t2i_meanr"):
        assert metrics["test"][key] == pytest.approx(results["test"][key])
    assert (out / "checkpoints" / "last.ckpt").is_file() and (out / "checkpoints" / "best.ckpt").is_file()
    assert (out / "csv" / "metrics.csv").read_text().count("val/rsum") == 1
    model, payload = load_model(out / "model_best.ckpt")
    assert payload["model_config"]["_target_"].endswith("MeanPoolBaseline") and not model.training
    assert meta["val_best"] is not None and meta["val_best"] > 0
    # Chance level of this split, from random scores (independent of the model): about 148 for 20 images.
    from temde.evaluation import retrieval_metrics

    chance = sum(retrieval_metrics(torch.rand(20, 100, generator=torch.Generator().manual_seed(s)))["rsum"]
                 for s in range(20)) / 20
    assert results["test"]["rsum"] > chance + 100


def test_resume_equals_uninterrupted_run(tmp_path, tiny_data_root):
    straight, _, _ = _run(tmp_path, "straight", tiny_data_root, ["trainer.max_epochs=3"])
    first, _, _ = _run(tmp_path, "first", tiny_data_root, ["trainer.max_epochs=2"])
    resumed, _, _ = _run(tmp_path, "resumed", tiny_data_root,
                         ["trainer.max_epochs=3", f"ckpt_path={first / 'checkpoints' / 'last.ckpt'}"])
    a = torch.load(straight / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(resumed / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 2 and a["global_step"] == b["global_step"]
    for key, value in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][key], value, rtol=0, atol=1e-6, msg=key)
    # the run really trained between epochs 2 and 3 (resume is not a no-op)
    c = torch.load(first / "checkpoints" / "last.ckpt", weights_only=True)
    assert any(not torch.equal(c["state_dict"][k], v) for k, v in a["state_dict"].items())


def test_official_step_decay_schedule(tmp_path, tiny_data_root):
    cfg = compose_config("train", [*tiny_train_overrides(tiny_data_root), "optim.lr_update=2"])
    from temde.checkpoint import build_model
    from temde.lightning import RetrievalLitModule

    module = RetrievalLitModule(build_model({**cfg.model, "vocab_size": 10}), {}, ContrastiveLoss(),
                                lr=2e-4, lr_update=2, lr_decay=0.1)
    sched = module.configure_optimizers()["lr_scheduler"]["scheduler"]
    lrs = []
    for _ in range(5):
        lrs.append(sched.get_last_lr()[0])
        sched.step()
    assert lrs == pytest.approx([2e-4, 2e-4, 2e-5, 2e-5, 2e-6])


def test_missing_train_features_is_one_clear_line(tmp_path, tiny_data_root):
    import shutil

    root = tmp_path / "data"
    shutil.copytree(tiny_data_root, root)
    (root / "synthetic_precomp" / "train_ims.npy").unlink()
    cfg = compose_config("train", [*tiny_train_overrides(root), "data.synthetic=null"])
    from temde.data.precomp import DataError

    with pytest.raises(DataError) as err:
        train(cfg, tmp_path / "run")
    assert str(root / "synthetic_precomp" / "train_ims.npy") in str(err.value)
