"""Global encoders T-EMDE is swapped with: same call signature, padding/permutation invariance, and the
MHSA layer against an explicit per-head, per-token reference written here."""

from __future__ import annotations

import math

import pytest
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from torch.nn import functional as F

from temde.errors import InputError
from temde.modules.pooling import (
    GLOBAL_ENCODERS,
    GLOBAL_POOLINGS,
    L2Pooling,
    MeanPool,
    MultiHeadSelfAttentionPool,
    build_global_encoder,
    build_global_pooling,
)
from temde.modules.self_attention import TextSA, VisualSA
from tests.conftest import REPO

DIM = 16


def data(b: int = 3, t: int = 7, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b, t, DIM, generator=g)
    lengths = torch.tensor([t, t - 3, 2])[:b]
    return x, torch.arange(t)[None, :] < lengths[:, None]


def reference_mhsa(m: MultiHeadSelfAttentionPool, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Eval-mode encoder layer computed item by item on the valid tokens only, heads in an explicit loop."""
    outs = []
    hd = DIM // m.heads
    for i in range(x.shape[0]):
        xi = x[i, mask[i]]  # (n, D): padding simply absent
        q, k, v = (xi @ m.qkv.weight.t() + m.qkv.bias).split(DIM, dim=-1)
        heads = []
        for h in range(m.heads):
            sl = slice(h * hd, (h + 1) * hd)
            scores = q[:, sl] @ k[:, sl].t() / math.sqrt(hd)
            heads.append(torch.softmax(scores, dim=-1) @ v[:, sl])
        att = torch.cat(heads, dim=-1) @ m.out.weight.t() + m.out.bias
        h1 = F.layer_norm(xi + att, (DIM,), m.norm1.weight, m.norm1.bias, m.norm1.eps)
        ff = m.ffn[3](F.gelu(m.ffn[0](h1)))
        h2 = F.layer_norm(h1 + ff, (DIM,), m.norm2.weight, m.norm2.bias, m.norm2.eps)
        outs.append(F.normalize(h2.mean(0), dim=-1))
    return torch.stack(outs)


def test_mhsa_matches_explicit_reference():
    torch.manual_seed(0)
    m = MultiHeadSelfAttentionPool(DIM, heads=4).eval()
    x, mask = data()
    with torch.no_grad():
        torch.testing.assert_close(m(x, mask), reference_mhsa(m, x, mask), atol=1e-5, rtol=1e-4)


def test_mean_pool_matches_loop():
    x, mask = data()
    ref = torch.stack([F.normalize(x[i, mask[i]].mean(0), dim=-1) for i in range(3)])
    torch.testing.assert_close(MeanPool()(x, mask), ref)
    torch.testing.assert_close(MeanPool(normalize=False)(x, mask), torch.stack([x[i, mask[i]].mean(0) for i in range(3)]))


def _encoders() -> list[tuple[str, torch.nn.Module]]:
    torch.manual_seed(0)
    out = [("mean", build_global_encoder("mean", DIM)), ("mhsa", build_global_encoder("mhsa", DIM, heads=2))]
    try:
        out.append(("sa_text", build_global_encoder("sa_text", DIM)))
    except ImportError:  # the SGRAF module is written by another engineer
        pass
    return [(name, enc.eval()) for name, enc in out]


@pytest.mark.parametrize(("name", "enc"), _encoders(), ids=lambda v: v if isinstance(v, str) else "")
def test_signature_padding_and_permutation_invariance(name, enc):
    x, mask = data()
    with torch.no_grad():
        out = enc(x, mask)
        assert out.shape == (3, DIM) and torch.isfinite(out).all()
        torch.testing.assert_close(out.norm(dim=-1), torch.ones(3))
        x_pad = torch.cat([x, torch.full((3, 4, DIM), 1e3)], dim=1)
        mask_pad = torch.cat([mask, torch.zeros(3, 4, dtype=torch.bool)], dim=1)
        torch.testing.assert_close(enc(x_pad, mask_pad), out, atol=1e-5, rtol=1e-4)
        perm = torch.randperm(7, generator=torch.Generator().manual_seed(1))
        torch.testing.assert_close(enc(x[:, perm], mask[:, perm]), out, atol=1e-5, rtol=1e-4)


def test_sa_visual_through_factory():
    torch.manual_seed(0)
    enc = build_global_encoder("sa_visual", DIM, num_region=5).eval()
    x = torch.randn(4, 5, DIM)
    with torch.no_grad():
        out = enc(x, torch.ones(4, 5, dtype=torch.bool))
    assert out.shape == (4, DIM)


def test_gradients_and_empty_set():
    m = MultiHeadSelfAttentionPool(DIM, heads=2)
    x, mask = data()
    x.requires_grad_(True)
    m(x, mask).sum().backward()
    assert torch.isfinite(x.grad).all() and x.grad[~mask].abs().sum() == 0
    empty = torch.zeros(1, 7, dtype=torch.bool)
    with torch.no_grad():
        assert torch.isfinite(m.eval()(x[:1], empty)).all()
        assert torch.isfinite(MeanPool()(x[:1], empty)).all()


def test_factory_and_errors():
    assert set(GLOBAL_ENCODERS) == {"sa_visual", "sa_text", "mhsa", "mean"}
    with pytest.raises(ValueError, match="build_global_pooling"):
        build_global_encoder("temde", DIM)
    with pytest.raises(ValueError, match="unknown kind"):
        build_global_encoder("gcn", DIM)
    with pytest.raises(ValueError, match="mask must be bool"):
        MeanPool()(torch.randn(2, 3, DIM), torch.ones(2, 3))
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadSelfAttentionPool(DIM, heads=3)


def test_global_pooling_spec_builds_shared_or_per_modality_sketchers():
    spec = {"kind": "temde", "depth": 2, "hyperplanes": 3, "shared": True}
    pooling = build_global_pooling(spec, DIM)
    assert pooling.image is pooling.text and pooling.dim == 2 * 8 and pooling.is_sketch
    assert spec == {"kind": "temde", "depth": 2, "hyperplanes": 3, "shared": True}  # caller's dict untouched
    pooling = build_global_pooling({"kind": "temde", "depth": 2, "hyperplanes": 3, "shared": False}, DIM)
    assert pooling.image is not pooling.text
    assert not torch.equal(pooling.image.hyperplanes, pooling.text.hyperplanes)
    pooling = build_global_pooling({"kind": "temde"}, DIM)
    assert pooling.image is pooling.text and pooling.image.depth == 8 and pooling.image.width == 128
    with pytest.raises(InputError, match="model.global_pooling: bad temde options"):
        build_global_pooling({"kind": "temde", "depht": 2}, DIM)
    with pytest.raises(InputError, match="bias_init must be one of"):
        build_global_pooling({"kind": "temde", "bias_init": "mean"}, DIM)
    with pytest.raises(InputError, match="kind must be one of"):
        build_global_pooling({"depth": 2}, DIM)


def test_global_pooling_sa_and_baselines():
    pooling = build_global_pooling(None, DIM, num_region=5, dropout=0.0)  # default: SGRAF's official SA
    assert isinstance(pooling.image, VisualSA) and isinstance(pooling.text, TextSA) and pooling.dim == DIM
    assert not pooling.is_sketch
    with pytest.raises(InputError, match="sa takes no options"):
        build_global_pooling({"kind": "sa", "heads": 2}, DIM)
    for kind in ("mhsa", "mean"):
        pooling = build_global_pooling({"kind": kind, **({"heads": 2} if kind == "mhsa" else {})}, DIM)
        assert isinstance(pooling.image, L2Pooling) and pooling.image is not pooling.text
        x, mask = torch.randn(3, 5, DIM), torch.rand(3, 5) > 0.3
        mask[:, 0] = True
        out = pooling.image.eval()(x, mask)
        assert out.shape == (3, DIM) and torch.allclose(out.norm(dim=-1), torch.ones(3), atol=1e-5)


def test_every_global_config_builds():
    """Every option of the `global` config group builds through the one factory (and T-EMDE keys stay valid)."""
    config_dir = REPO / "configs" / "global"
    names = sorted(p.stem for p in config_dir.glob("*.yaml"))
    assert {"sa", "temde", "temde_per_modality", "static_emde", "mhsa", "mean"} <= set(names)
    with initialize_config_dir(config_dir=str(config_dir), version_base="1.3"):
        for name in names:
            spec = OmegaConf.to_container(compose(config_name=name))
            spec = spec.get("model", {}).get("global_pooling", spec)  # package header: model.global_pooling
            assert spec["kind"] in GLOBAL_POOLINGS, name
            pooling = build_global_pooling(spec, DIM)
            if spec["kind"] == "temde":
                assert (pooling.image is pooling.text) == spec["shared"], name
                assert pooling.image.trainable == spec["trainable"] and pooling.image.assignment == spec["assignment"]
