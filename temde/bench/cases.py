"""What the latency benchmark times: pooling modules and whole image encoders at the paper's shapes.

A :class:`Case` builds a module for a :class:`Shape`; a :class:`Row` groups the cases timed together at the
paper's shapes (T-EMDE vs the self-attention it replaces), a :class:`Sweep` grows the token count T to fit the
log-log exponent. To add a row, add :class:`Case` entries to ``CASES`` and a :class:`Row` to ``PAPER_ROWS``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from temde.models.vsrn import VSRN
from temde.modules.pooling import MeanPool, MultiHeadSelfAttentionPool
from temde.modules.self_attention import TextSA, VisualSA
from temde.modules.temde import TEMDE
from temde.repr import Repr

PAPER_BATCH = 128  # SGRAF/VSRN training batch size
PAPER_DIM = 1024  # SGRAF embed_size (joint space)
PAPER_REGIONS = 36  # bottom-up-attention regions per image
PAPER_CAPTION_LENGTHS = (8, 40)  # caption token counts (incl. <start>/<end>) benchmarked, min..max
MHSA_HEADS = 8
MHSA_FFN = 0  # attention block only (QKV, attention, output projection, LayerNorm): the FFN is per-token


# ---------------------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Shape:
    batch: int
    tokens: int
    dim: int
    lengths: tuple[int, int] | None = None  # ragged valid lengths drawn uniformly in [lo, hi]; None = all


@dataclass(frozen=True)
class Case:
    """``build(shape) -> module`` (on CPU, fp32); ``macs(T, D)`` = analytic multiply-adds per item.

    The module is called as ``module(x, mask)`` with the row's pooled-token inputs, unless ``inputs`` is
    given: ``inputs(shape) -> tuple`` of positional CPU tensors (e.g. raw (B, 36, 2048) region features for a
    whole VSRN image encoder, ``temde.bench.cases.vsrn_latency_cases``); its first float tensor gets the
    gradient in ``fwd_bwd``. Outputs may be a tensor or a dict/tuple of tensors."""

    name: str
    build: Callable[[Shape], nn.Module]
    macs: Callable[[int, int], float]
    note: str = ""
    inputs: Callable[[Shape], tuple[Tensor, ...]] | None = None


def _temde_macs(t: int, d: int, depth: int = 8, bits: int = 7) -> float:
    hi, lo = (bits + 1) // 2, bits // 2
    per_token = depth * bits * d + depth * (2 * hi * 2**hi + 2 * lo * 2**lo) + depth * 2**bits
    return t * per_token


def _visual_sa(shape: Shape) -> nn.Module:
    return VisualSA(shape.dim, num_region=shape.tokens)


def _text_sa(shape: Shape) -> nn.Module:
    return TextSA(shape.dim)


VSRN_IMG_DIM = 2048  # bottom-up region feature size (VSRN input)
VSRN_EMBED = 2048  # VSRN joint-space width (official embed_size)


@functools.cache
def _vsrn_modules(batch: int, regions: int, embed: int) -> dict[str, tuple[nn.Module, tuple[Tensor, ...]]]:
    return vsrn_latency_cases(batch, regions, VSRN_IMG_DIM, embed)


def _vsrn_case(name: str) -> Case:
    """A whole VSRN image encoder (raw (B, 36, 2048) regions in): official GCN vs T-EMDE replacement."""

    @functools.cache
    def macs(t: int, d: int) -> float:  # counted, not analytic: GRU + GCN + fc, per image
        module, (images,) = _vsrn_modules(1, t, d)[name]
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module(images)
        return counter.get_total_flops() / 2

    return Case(name, lambda s: _vsrn_modules(s.batch, s.tokens, s.dim)[name][0], macs,
                f"VSRN image encoder ({name}), from temde.bench.cases.vsrn_latency_cases",
                inputs=lambda s: _vsrn_modules(s.batch, s.tokens, s.dim)[name][1])


CASES: dict[str, Case] = {
    c.name: c
    for c in [
        Case("temde", lambda s: TEMDE(s.dim), _temde_macs, "T-EMDE defaults (depth 8, 7 bits, W = 128)"),
        Case("sa_visual", _visual_sa, lambda t, d: t * (d * d + d) + d * d, "SGRAF VisualSA (BN over regions)"),
        Case("sa_text", _text_sa, lambda t, d: t * (d * d + d) + d * d, "SGRAF TextSA"),
        Case("mhsa", lambda s: MultiHeadSelfAttentionPool(s.dim, heads=MHSA_HEADS, ffn_mult=MHSA_FFN),
             lambda t, d: t * 4 * d * d + 2 * t * t * d, f"MHSA encoder layer, {MHSA_HEADS} heads, no FFN"),
        Case("mean", lambda s: MeanPool(), lambda t, d: t * d, "masked mean + l2norm"),
        _vsrn_case("vsrn_gcn"),
        _vsrn_case("vsrn_temde_replace"),
    ]
}


@dataclass(frozen=True)
class Row:
    name: str
    shape: Shape
    cases: tuple[str, ...]
    baseline: str  # the self-attention case T-EMDE replaces: ratio = time(baseline) / time(temde_case)
    temde_case: str = "temde"


PAPER_ROWS = [
    Row("image", Shape(PAPER_BATCH, PAPER_REGIONS, PAPER_DIM), ("temde", "sa_visual", "mhsa", "mean"), "sa_visual"),
    Row("text", Shape(PAPER_BATCH, PAPER_CAPTION_LENGTHS[1], PAPER_DIM, PAPER_CAPTION_LENGTHS),
        ("temde", "sa_text", "mhsa", "mean"), "sa_text"),
    # Whole VSRN image encoder at paper shapes: 4 region-GCN blocks vs the T-EMDE replacement (temde.md).
    Row("vsrn_image_encoder", Shape(PAPER_BATCH, PAPER_REGIONS, VSRN_EMBED), ("vsrn_gcn", "vsrn_temde_replace"),
        "vsrn_gcn", "vsrn_temde_replace"),
]


@dataclass
class Sweep:
    name: str
    dim: int
    batch: int
    tokens: list[int]
    fit_from: int  # the exponent is fitted on T >= fit_from
    cases: tuple[str, ...] = ("temde", "sa_text", "mhsa")  # timed rounds: --sweep-repeats


SWEEPS = [
    Sweep("sweep_d1024", PAPER_DIM, 8, [16, 32, 64, 128, 256, 512], fit_from=128),
    Sweep("sweep_d128", 128, 2, [64, 128, 256, 512, 1024, 2048], fit_from=512),
]



# ---------------------------------------------------------------------------------------- timing
def make_inputs(shape: Shape, device: torch.device, dtype: torch.dtype, seed: int = 0) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = nn.functional.normalize(torch.randn(shape.batch, shape.tokens, shape.dim, generator=g), dim=-1)
    if shape.lengths is None:
        mask = torch.ones(shape.batch, shape.tokens, dtype=torch.bool)
    else:
        lengths = torch.randint(shape.lengths[0], shape.lengths[1] + 1, (shape.batch,), generator=g)
        mask = torch.arange(shape.tokens)[None, :] < lengths[:, None]
    return x.to(device=device, dtype=dtype), mask.to(device)


def _loss(out: object) -> Tensor:
    if isinstance(out, Tensor):
        return out.float().square().sum()
    values = out.values() if isinstance(out, dict) else out
    return sum(_loss(v) for v in values if isinstance(v, Tensor) and v.is_floating_point())


def runners(module: nn.Module, *inputs: Tensor) -> dict[str, Callable[[], None]]:
    """``fwd`` (inference) and ``fwd_bwd`` (training step without optimizer) closures."""
    first = next(i for i, t in enumerate(inputs) if t.is_floating_point())
    grad_inputs = list(inputs)
    grad_inputs[first] = inputs[first].detach().clone().requires_grad_(True)

    def fwd() -> None:
        module.eval()
        with torch.inference_mode():
            module(*inputs)

    def fwd_bwd() -> None:
        module.train()
        module.zero_grad(set_to_none=True)
        grad_inputs[first].grad = None
        _loss(module(*grad_inputs)).backward()

    return {"fwd": fwd, "fwd_bwd": fwd_bwd}


def case_inputs(case: Case, shape: Shape, x: Tensor, mask: Tensor, device: torch.device,
                dtype: torch.dtype) -> tuple[Tensor, ...]:
    if case.inputs is None:
        return x, mask
    return tuple(t.to(device=device, dtype=dtype) if t.is_floating_point() else t.to(device)
                 for t in case.inputs(shape))



# ---------------------------------------------------------------------------------------- VSRN encoders
class ImageEncoding(nn.Module):
    """``model.encode_images`` as a module, for timing the image side in isolation."""

    def __init__(self, model: VSRN) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, regions_mask: Tensor | None = None) -> Repr:
        return self.model.encode_images(images, regions_mask)


def vsrn_latency_cases(
    batch: int = 128,
    regions: int = 36,
    img_dim: int = 2048,
    embed_size: int = 2048,
    temde: dict[str, Any] | None = None,
    device: str | torch.device = "cpu",
) -> dict[str, tuple[nn.Module, tuple[Tensor, ...]]]:
    """Image-encoder latency cases at the paper shapes: name -> (module in eval mode, positional inputs).

    - ``vsrn_gcn``: official image encoder (fc, 4 Rs_GCN blocks, region GRU, BN).
    - ``vsrn_temde_replace``: the same with the GCN blocks replaced by T-EMDE context (latency variant).
    - ``vsrn_temde_additive``: official encoder plus the image sketch of the additive variant.
    Time ``module(*inputs)`` under ``torch.no_grad()``.
    """
    images = torch.randn(batch, regions, img_dim, device=device)
    common = {"vocab_size": 8, "img_dim": img_dim, "embed_size": embed_size, "caption_branch": False}
    spec = {"kind": "temde", **dict(temde or {})}  # a configs/global T-EMDE spec
    configs = {
        "vsrn_gcn": {},
        "vsrn_temde_replace": {"sketch": "replace", "global_pooling": spec},
        "vsrn_temde_additive": {"sketch": "additive", "global_pooling": spec},
    }
    return {
        name: (ImageEncoding(VSRN(**common, **cfg)).to(device).eval(), (images,)) for name, cfg in configs.items()
    }
