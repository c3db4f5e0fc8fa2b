"""Latency of T-EMDE pooling vs SGRAF's self-attention pooling vs multi-head self-attention.

    python scripts/bench_latency.py                 # CPU (always) + CUDA fp32/bf16 when available
    python scripts/bench_latency.py --device cpu --quick   # smoke run (tiny shapes, seconds)

Writes ``experiments/benchmarks/latency_<device>.json`` and ``latency_<device>.png`` (time vs T, log-log).

What is measured (all numbers are medians of repeated runs after warm-up):

* ``paper``: the paper's shapes, batch 128, D = 1024: an *image* row (36 regions, all valid) and a *text*
  row (caption lengths drawn uniformly in 8..40, padded to 40). Forward = eval mode under
  ``torch.inference_mode``; forward+backward = train mode, gradients w.r.t. the parameters and the input.
* ``sweep_d1024``: T = 16 .. 512 at D = 1024 (smaller batch); ``sweep_d128``: T = 64 .. 4096 at D = 128, where
  the T^2 term of token-token attention dominates its T*D^2 projections. A log-log slope is fitted over
  the large-T points of each sweep (1 = linear, 2 = quadratic).
* ``entropy``: per-depth entropy of the default T-EMDE sketches of synthetic-dataset regions (the
  ``temde.data.synthetic`` generator, through a Xavier Linear(2048 -> 1024) + l2norm like SGRAF's image
  encoder at init), and how well two disjoint halves of an image's regions retrieve each other (R@1).

Measurements are interleaved (one run of every case per round) so that load from other processes on a
shared machine hits all cases alike; the load average is recorded.

To add a row (e.g. VSRN's 4 region-GCN blocks vs the T-EMDE replacement), add :class:`Case` entries to
``CASES`` (``inputs=`` when the module takes other inputs than pooled tokens and a mask) and a :class:`Row`
naming them to ``PAPER_ROWS`` (its ``baseline`` is divided by the case named ``temde_case``); sweeps pick
cases by name in ``SWEEPS``.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import os
import platform
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn
from tqdm.auto import tqdm

from temde.modules.pooling import MeanPool, MultiHeadSelfAttentionPool
from temde.modules.temde import TEMDE

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
    whole VSRN image encoder, ``temde.models.vsrn.vsrn_latency_cases``); its first float tensor gets the
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
    from temde.modules.self_attention import VisualSA

    return VisualSA(shape.dim, num_region=shape.tokens)


def _text_sa(shape: Shape) -> nn.Module:
    from temde.modules.self_attention import TextSA

    return TextSA(shape.dim)


VSRN_IMG_DIM = 2048  # bottom-up region feature size (VSRN input)
VSRN_EMBED = 2048  # VSRN joint-space width (official embed_size)


@functools.cache
def _vsrn_modules(batch: int, regions: int, embed: int) -> dict[str, tuple[nn.Module, tuple[Tensor, ...]]]:
    from temde.models.vsrn import vsrn_latency_cases

    return vsrn_latency_cases(batch, regions, VSRN_IMG_DIM, embed)


def _vsrn_case(name: str) -> Case:
    """A whole VSRN image encoder (raw (B, 36, 2048) regions in): official GCN vs T-EMDE replacement."""

    @functools.cache
    def macs(t: int, d: int) -> float:  # counted, not analytic: GRU + GCN + fc, per image
        from torch.utils.flop_counter import FlopCounterMode

        module, (images,) = _vsrn_modules(1, t, d)[name]
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            module(images)
        return counter.get_total_flops() / 2

    return Case(name, lambda s: _vsrn_modules(s.batch, s.tokens, s.dim)[name][0], macs,
                f"VSRN image encoder ({name}), from temde.models.vsrn.vsrn_latency_cases",
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
    cases: tuple[str, ...] = ("temde", "sa_text", "mhsa")
    repeats: int = 3
    extra: dict = field(default_factory=dict)


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


CLOCK = {"name": "wall"}  # "wall" (perf_counter) or "cpu" (process CPU time); set in run_device


def measure(fns: dict[str, Callable[[], None]], device: torch.device, warmup: int, repeats: int,
            bar: tqdm) -> dict[str, dict]:
    """Interleaved timing: every round runs each function once. Records wall-clock and process CPU time;
    ``median_ms`` / ``min_ms`` are those of the primary clock (``CLOCK``), in milliseconds.

    Single-threaded on a shared CPU, process CPU time is what the module costs: it does not count the time
    the process sits descheduled while other jobs run, which wall-clock does."""

    def sync() -> None:
        if device.type == "cuda":
            torch.cuda.synchronize(device)

    for _ in range(warmup):
        for f in fns.values():
            f()
        sync()
    wall: dict[str, list[float]] = {k: [] for k in fns}
    cpu: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for k, f in fns.items():
            sync()
            t0, c0 = time.perf_counter(), time.process_time()
            f()
            sync()
            wall[k].append((time.perf_counter() - t0) * 1e3)
            cpu[k].append((time.process_time() - c0) * 1e3)
            bar.update(1)
    out = {}
    for k in fns:
        primary = cpu[k] if CLOCK["name"] == "cpu" else wall[k]
        out[k] = {"median_ms": float(np.median(primary)), "min_ms": float(np.min(primary)),
                  "wall_median_ms": float(np.median(wall[k])), "wall_runs_ms": [round(t, 3) for t in wall[k]],
                  "cpu_median_ms": float(np.median(cpu[k])), "cpu_runs_ms": [round(t, 3) for t in cpu[k]]}
    return out


def fit_exponent(ts: list[int], ys: list[float]) -> float:
    """Least-squares slope of log(y) against log(T)."""
    return float(np.polyfit(np.log(ts), np.log(ys), 1)[0])


def build(case: Case, shape: Shape, device: torch.device, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    return case.build(shape).to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------- sections
def bench_paper(device: torch.device, dtype: torch.dtype, warmup: int, repeats: int, bar: tqdm,
                rows: list[Row]) -> dict:
    out = {}
    for row in rows:
        x, mask = make_inputs(row.shape, device, dtype)
        fns = {}
        for name in row.cases:
            module = build(CASES[name], row.shape, device, dtype)
            inputs = case_inputs(CASES[name], row.shape, x, mask, device, dtype)
            for mode, fn in runners(module, *inputs).items():
                fns[f"{name}/{mode}"] = fn
        bar.set_postfix_str(f"paper/{row.name}")
        res = measure(fns, device, warmup, repeats, bar)
        cases = {name: {mode: res[f"{name}/{mode}"] for mode in ("fwd", "fwd_bwd")} for name in row.cases}
        t = row.shape.tokens
        for name in row.cases:
            cases[name]["macs_per_item"] = CASES[name].macs(t, row.shape.dim)
        ratio = {mode: cases[row.baseline][mode]["median_ms"] / cases[row.temde_case][mode]["median_ms"]
                 for mode in ("fwd", "fwd_bwd")}
        ratio_min = {mode: cases[row.baseline][mode]["min_ms"] / cases[row.temde_case][mode]["min_ms"]
                     for mode in ("fwd", "fwd_bwd")}
        ratio_wall = {mode: cases[row.baseline][mode]["wall_median_ms"] / cases[row.temde_case][mode]["wall_median_ms"]
                      for mode in ("fwd", "fwd_bwd")}
        out[row.name] = {
            "shape": vars(row.shape) | {"lengths": row.shape.lengths},
            "cases": cases,
            "baseline": row.baseline,
            f"speedup_temde_vs_{row.baseline}": ratio,
            f"speedup_temde_vs_{row.baseline}_from_min": ratio_min,
            f"speedup_temde_vs_{row.baseline}_wall_clock": ratio_wall,
            f"macs_ratio_{row.baseline}_over_temde": CASES[row.baseline].macs(t, row.shape.dim)
            / CASES[row.temde_case].macs(t, row.shape.dim),
        }
    return out


def bench_sweep(sweep: Sweep, device: torch.device, dtype: torch.dtype, warmup: int, repeats: int,
                bar: tqdm) -> dict:
    per_t: dict[str, dict[int, dict]] = {c: {} for c in sweep.cases}
    for t in sweep.tokens:
        shape = Shape(sweep.batch, t, sweep.dim)
        x, mask = make_inputs(shape, device, dtype)
        fns = {}
        for name in sweep.cases:
            inputs = case_inputs(CASES[name], shape, x, mask, device, dtype)
            for mode, fn in runners(build(CASES[name], shape, device, dtype), *inputs).items():
                fns[f"{name}/{mode}"] = fn
        bar.set_postfix_str(f"{sweep.name}/T={t}")
        res = measure(fns, device, warmup, repeats, bar)
        for name in sweep.cases:
            per_t[name][t] = {mode: res[f"{name}/{mode}"]["median_ms"] for mode in ("fwd", "fwd_bwd")}
            per_t[name][t] |= {f"{mode}_min": res[f"{name}/{mode}"]["min_ms"] for mode in ("fwd", "fwd_bwd")}
            per_t[name][t] |= {f"{mode}_wall": res[f"{name}/{mode}"]["wall_median_ms"] for mode in ("fwd", "fwd_bwd")}
    fit_ts = [t for t in sweep.tokens if t >= sweep.fit_from]
    cases = {}
    for name, table in per_t.items():
        cases[name] = {
            "tokens": sweep.tokens,
            "fwd_ms": [table[t]["fwd"] for t in sweep.tokens],
            "fwd_bwd_ms": [table[t]["fwd_bwd"] for t in sweep.tokens],
            "fwd_min_ms": [table[t]["fwd_min"] for t in sweep.tokens],
            "fwd_bwd_min_ms": [table[t]["fwd_bwd_min"] for t in sweep.tokens],
            "fwd_wall_ms": [table[t]["fwd_wall"] for t in sweep.tokens],
            "fwd_bwd_wall_ms": [table[t]["fwd_bwd_wall"] for t in sweep.tokens],
            "macs_per_item": [CASES[name].macs(t, sweep.dim) for t in sweep.tokens],
            "exponent_fwd": fit_exponent(fit_ts, [table[t]["fwd"] for t in fit_ts]),
            "exponent_fwd_bwd": fit_exponent(fit_ts, [table[t]["fwd_bwd"] for t in fit_ts]),
            "exponent_fwd_min": fit_exponent(fit_ts, [table[t]["fwd_min"] for t in fit_ts]),
            "exponent_macs": fit_exponent(fit_ts, [CASES[name].macs(t, sweep.dim) for t in fit_ts]),
        }
    return {"dim": sweep.dim, "batch": sweep.batch, "repeats": repeats, "fit_tokens": fit_ts, "cases": cases}


def synthetic_tokens(n_images: int, dim: int) -> tuple[Tensor, str]:
    """(n_images, 36, dim) l2-normalized region features; from temde.data.synthetic when available."""
    torch.manual_seed(0)
    try:
        from temde.data.synthetic import SyntheticSpec, write_synthetic_dataset

        with tempfile.TemporaryDirectory() as tmp:
            spec = SyntheticSpec(n_train=n_images, n_dev=2, n_test=2, n_testall=2)
            ims = torch.from_numpy(np.load(write_synthetic_dataset(tmp, spec=spec, progress=False) / "train_ims.npy"))
        fc = nn.Linear(ims.shape[-1], dim)
        nn.init.xavier_uniform_(fc.weight)
        nn.init.zeros_(fc.bias)
        with torch.no_grad():
            x = nn.functional.normalize(fc(ims), dim=-1)
        return x, (f"temde.data.synthetic train regions (SyntheticSpec defaults, n_train={n_images}) -> Xavier "
                   f"Linear(2048->{dim}) -> l2norm")
    except ImportError:
        centers = torch.randn(50, dim)
        which = torch.randint(0, 50, (n_images, PAPER_REGIONS))
        x = centers[which] + 0.7 * torch.randn(n_images, PAPER_REGIONS, dim)
        return nn.functional.normalize(x, dim=-1), "clustered Gaussian features (temde.data.synthetic missing)"


def bench_entropy(dim: int, n_images: int = 256, scales: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 6.0)) -> dict:
    """Sketch entropy (nats) on synthetic regions: set-level (soft / hard), token-level; half-set R@1."""
    x, source = synthetic_tokens(n_images, dim)
    init, evaluate = x[: n_images // 2], x[n_images // 2 :]
    perm = torch.randperm(x.shape[1], generator=torch.Generator().manual_seed(0))
    half_a, half_b = evaluate[:, perm[: x.shape[1] // 2]], evaluate[:, perm[x.shape[1] // 2 :]]

    def entropy(p: Tensor) -> float:
        return float(-(p * p.clamp_min(1e-30).log()).sum(-1).mean())

    def r_at_1(a: Tensor, b: Tensor) -> float:
        sims = a.flatten(1) @ b.flatten(1).t()
        return float((sims.argmax(1) == torch.arange(len(sims))).float().mean())

    default = TEMDE(dim).init_scale
    table = {}
    with torch.no_grad():
        for scale in sorted(set(scales) | {default}):
            torch.manual_seed(0)
            m = TEMDE(dim, init_scale=scale)
            m.init_from_data(init.reshape(1, -1, dim))  # first "batch": the init half's regions
            table[str(scale)] = {
                "set_entropy_soft": entropy(m.histogram(evaluate)),
                "set_entropy_hard": entropy(m.hard_histogram(evaluate)),
                "token_entropy": entropy(m.assign(evaluate)),
                "half_set_r1_soft": r_at_1(m(half_a), m(half_b)),
                "half_set_r1_hard": r_at_1(m.hard_sketch(half_a), m.hard_sketch(half_b)),
            }
        mean = MeanPool()
        mean_r1 = r_at_1(mean(half_a), mean(half_b))
    d = table[str(default)]
    return {
        "source": source,
        "images_init": int(init.shape[0]),
        "images_eval": int(evaluate.shape[0]),
        "log_W": math.log(TEMDE(dim).width),
        "log_tokens_per_set": math.log(x.shape[1]),
        "default_init_scale": default,
        "mean_per_depth_entropy": d["set_entropy_soft"],
        "mean_per_depth_entropy_hard": d["set_entropy_hard"],
        "mean_token_entropy": d["token_entropy"],
        "by_init_scale": table,
        "half_set_r1_meanpool": mean_r1,
        "note": "set entropy = entropy of a depth row of the image's histogram (36 regions); its floor is the "
                "hard histogram's. half_set_r1: the sketch of 18 random regions retrieves the sketch of the "
                "other 18 of the same image among all eval images (untrained hyperplanes).",
    }


# ---------------------------------------------------------------------------------------- plot, main
def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sweeps = [k for k in result["sweeps"]]
    fig, axes = plt.subplots(1, len(sweeps) + 1, figsize=(5.2 * (len(sweeps) + 1), 4.3))
    colors = {"temde": "C0", "sa_text": "C1", "sa_visual": "C1", "mhsa": "C3", "mean": "C7"}
    for ax, key in zip(axes[:-1], sweeps):
        sw = result["sweeps"][key]
        for name, c in sw["cases"].items():
            ts = c["tokens"]
            ax.loglog(ts, c["fwd_ms"], "o-", color=colors.get(name), label=f"{name} fwd (slope {c['exponent_fwd']:.2f})")
            ax.loglog(ts, c["fwd_bwd_ms"], "s--", color=colors.get(name), alpha=0.6,
                      label=f"{name} fwd+bwd (slope {c['exponent_fwd_bwd']:.2f})")
        t0, t1 = sw["cases"]["temde"]["tokens"][0], sw["cases"]["temde"]["tokens"][-1]
        y0 = sw["cases"]["mhsa"]["fwd_ms"][-1]
        ax.loglog([t0, t1], [y0 * (t0 / t1) ** 2, y0], ":", color="k", lw=0.8, label="slope 2")
        ax.loglog([t0, t1], [y0 * (t0 / t1), y0], "-.", color="k", lw=0.8, label="slope 1")
        ax.set(xlabel="tokens T", ylabel="ms per batch", title=f"{key}: D={sw['dim']}, batch {sw['batch']}")
        ax.set_xticks(ts, [str(t) for t in ts])
        ax.minorticks_off()
        ax.legend(fontsize=6.5)
        ax.grid(True, which="both", alpha=0.3)
    ax = axes[-1]
    labels, fwd, fb = [], [], []
    for row, r in result["paper"].items():
        for name, c in r["cases"].items():
            short = {"vsrn_image_encoder": "vsrn enc", "vsrn_gcn": "4 gcn", "vsrn_temde_replace": "temde"}
            labels.append(f"{short.get(row, row)}\n{short.get(name, name)}")
            fwd.append(c["fwd"]["median_ms"])
            fb.append(c["fwd_bwd"]["median_ms"])
    pos = np.arange(len(labels))
    ax.bar(pos - 0.2, fwd, 0.4, label="fwd")
    ax.bar(pos + 0.2, fb, 0.4, label="fwd+bwd")
    ax.set_yscale("log")
    ax.set_xticks(pos, labels, fontsize=6.5)
    for row, r in result["paper"].items():
        sp = r[f"speedup_temde_vs_{r['baseline']}"]
        ax.plot([], [], " ", label=f"{row}: T-EMDE {sp['fwd']:.1f}x (fwd), {sp['fwd_bwd']:.1f}x (fwd+bwd) "
                                   f"faster than {r['baseline']}")
    ax.set(ylabel="ms per batch", title=f"paper shapes (batch {PAPER_BATCH}, D={PAPER_DIM})")
    ax.set_ylim(top=max(fb) * 30)  # room for the legend above the bars
    ax.legend(fontsize=6.5, loc="upper left")
    fig.suptitle(f"T-EMDE vs self-attention pooling latency on {result['device_name']} ({result['dtype']}, "
                 f"{result['threads']} thread(s), torch {result['torch']}; {result['protocol']['clock']} time, median of "
                 f"{result['protocol']['paper_repeats']} runs at paper shapes)", fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=130)
    plt.close(fig)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def run_device(device: torch.device, dtype: torch.dtype, args: argparse.Namespace, out_dir: Path) -> dict:
    quick = args.quick
    rows = PAPER_ROWS
    sweeps = SWEEPS
    if args.rows:
        return run_rows(device, dtype, args, out_dir)
    if quick:
        rows = [Row(r.name, Shape(4, r.shape.tokens, 64, r.shape.lengths), r.cases, r.baseline, r.temde_case)
                for r in PAPER_ROWS]
        sweeps = [Sweep(s.name, 64, 2, [16, 32, 64], fit_from=32) for s in SWEEPS]
    warmup, repeats = args.warmup, args.repeats
    clock = args.clock
    if clock == "auto":
        clock = "cpu" if device.type == "cpu" and torch.get_num_threads() == 1 else "wall"
    CLOCK["name"] = clock
    total = sum(len(r.cases) * 2 * repeats for r in rows)
    total += sum(len(s.cases) * 2 * len(s.tokens) * args.sweep_repeats for s in sweeps)
    load_before = os.getloadavg() if hasattr(os, "getloadavg") else None
    started = time.time()
    with tqdm(total=total, desc=f"latency {device.type} {str(dtype).split('.')[-1]}", unit="run") as bar:
        paper = bench_paper(device, dtype, warmup, repeats, bar, rows)
        sweep_res = {s.name: bench_sweep(s, device, dtype, 1, args.sweep_repeats, bar) for s in sweeps}
    entropy = bench_entropy(PAPER_DIM if not quick else 64, n_images=256 if not quick else 16)
    name = cpu_name() if device.type == "cpu" else torch.cuda.get_device_name(device)
    result = {
        "device": device.type,
        "device_name": name,
        "dtype": str(dtype).split(".")[-1],
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_name(),
        "load_average_before": load_before,
        "load_average_after": os.getloadavg() if hasattr(os, "getloadavg") else None,
        "oversubscribed": bool(load_before and device.type == "cpu" and load_before[0] > (os.cpu_count() or 1)),
        "threads_note": args.threads_note,
        "wall_s": round(time.time() - started, 1),
        "quick": quick,
        "protocol": {
            "paper_warmup": warmup,
            "paper_repeats": repeats,
            "sweep_warmup": 1,
            "sweep_repeats": args.sweep_repeats,
            "statistic": "median over interleaved rounds (each round runs every case once)",
            "clock": clock,
            "clock_note": "cpu = process CPU time (1 thread: immune to time spent descheduled on a shared "
                          "machine); wall = perf_counter (CUDA: synchronized). Both are stored per case.",
            "fwd": "module.eval() + torch.inference_mode()",
            "fwd_bwd": "module.train(), loss = sum(out^2), backward to parameters and input",
            "sweep_batch_note": "sweeps use a smaller batch than 128 (see each sweep) to keep the run short",
            "sa_in_sweeps": "SGRAF TextSA (VisualSA's BatchNorm is tied to a fixed region count)",
            "mhsa": CASES["mhsa"].note,
            "macs": "analytic multiply-adds per item (matmuls only)",
        },
        "cases": {k: c.note for k, c in CASES.items()},
        "paper": paper,
        "sweeps": sweep_res,
        "entropy": entropy,
    }
    suffix = device.type if dtype == torch.float32 else f"{device.type}_{str(dtype).split('.')[-1]}"
    if quick:
        suffix += "_quick"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"latency_{suffix}.json").write_text(json.dumps(result, indent=1))
    plot(result, out_dir / f"latency_{suffix}.png")
    print(summary(result))
    return result


def run_rows(device: torch.device, dtype: torch.dtype, args: argparse.Namespace, out_dir: Path) -> dict:
    """Re-measure only the named paper rows and merge them into the existing JSON (sweeps, entropy kept)."""
    rows = [r for r in PAPER_ROWS if r.name in args.rows]
    unknown = set(args.rows) - {r.name for r in rows}
    if unknown:
        raise SystemExit(f"unknown --rows {sorted(unknown)}; choose from {[r.name for r in PAPER_ROWS]}")
    suffix = device.type if dtype == torch.float32 else f"{device.type}_{str(dtype).split('.')[-1]}"
    path = out_dir / f"latency_{suffix}.json"
    if not path.is_file():
        raise SystemExit(f"{path} does not exist: run the full benchmark once before --rows")
    result = json.loads(path.read_text())
    CLOCK["name"] = result["protocol"]["clock"]
    with tqdm(total=sum(len(r.cases) * 2 * args.repeats for r in rows), desc="latency rows", unit="run") as bar:
        measured = bench_paper(device, dtype, args.warmup, args.repeats, bar, rows)
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
    for row in measured.values():
        row["measured"] = {"threads": torch.get_num_threads(), "repeats": args.repeats, "load_average": load}
    result["paper"].update(measured)
    result["cases"] = {k: c.note for k, c in CASES.items()}
    path.write_text(json.dumps(result, indent=1))
    plot(result, path.with_suffix(".png"))
    print(summary(result))
    return result


def summary(r: dict) -> str:
    lines = [f"{r['device_name']} {r['dtype']} threads={r['threads']} clock={r['protocol']['clock']} torch {r['torch']}"]
    for row, p in r["paper"].items():
        key = f"speedup_temde_vs_{p['baseline']}"
        ms = {n: round(c["fwd"]["median_ms"], 2) for n, c in p["cases"].items()}
        lines.append(f"  paper/{row}: fwd ms {ms}; T-EMDE speedup vs {p['baseline']}: "
                     f"fwd {p[key]['fwd']:.1f}x, fwd+bwd {p[key]['fwd_bwd']:.1f}x")
    for name, s in r["sweeps"].items():
        exps = {n: round(c["exponent_fwd"], 2) for n, c in s["cases"].items()}
        lines.append(f"  {name}: log-log exponent (fwd, T >= {s['fit_tokens'][0]}): {exps}")
    e = r["entropy"]
    lines.append(f"  entropy: {e['mean_per_depth_entropy']:.3f} nats (hard {e['mean_per_depth_entropy_hard']:.3f}, "
                 f"token {e['mean_token_entropy']:.3f}) vs log W = {e['log_W']:.3f}")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="all", choices=["all", "cpu", "cuda"])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds at paper shapes")
    p.add_argument("--sweep-repeats", type=int, default=3, help="timed rounds per sweep point")
    p.add_argument("--threads", default="auto",
                   help="torch CPU threads; 'auto' = torch's default, or 1 when the machine is already busy "
                        "(1-min load average >= cores - 0.5): oversubscribed OpenMP threads stall on every "
                        "parallel op, which measures the scheduler rather than the module")
    p.add_argument("--out-dir", type=Path, default=Path(__file__).resolve().parents[1] / "experiments/benchmarks")
    p.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke test")
    p.add_argument("--clock", default="auto", choices=["auto", "wall", "cpu"],
                   help="primary statistic: auto = process CPU time when running 1 CPU thread, else wall-clock")
    p.add_argument("--replot", type=Path, default=None, help="only redraw the PNG of an existing JSON")
    p.add_argument("--threads-note", default="", help="free text recorded in the JSON (why this thread count)")
    p.add_argument("--rows", nargs="+", default=None,
                   help="only these paper rows (e.g. vsrn_image_encoder), merged into the existing JSON")
    args = p.parse_args()
    if args.replot:
        plot(json.loads(args.replot.read_text()), args.replot.with_suffix(".png"))
        return
    if args.threads == "auto":
        load, cores = (os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0), os.cpu_count() or 1
        if load >= cores - 0.5 and torch.get_num_threads() > 1:
            torch.set_num_threads(1)
            args.threads_note = (args.threads_note + " " if args.threads_note else "") + (
                f"auto: 1 thread because the machine was busy (load average {load:.1f} on {cores} cores); with "
                "oversubscribed OpenMP threads every parallel op waits for a descheduled thread, penalizing "
                "many-small-op modules (T-EMDE) far more than one-big-matmul modules (SA)")
        else:
            args.threads_note = args.threads_note or "auto: torch's default thread count (machine idle)"
    else:
        torch.set_num_threads(int(args.threads))
    if args.device in ("all", "cpu"):
        run_device(torch.device("cpu"), torch.float32, args, args.out_dir)
    if args.device in ("all", "cuda"):
        if not torch.cuda.is_available():
            if args.device == "cuda":
                raise SystemExit("bench_latency.py: --device cuda but torch.cuda.is_available() is False")
        else:
            for dtype in (torch.float32, torch.bfloat16):
                run_device(torch.device("cuda"), dtype, args, args.out_dir)


if __name__ == "__main__":
    main()
