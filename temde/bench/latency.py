"""Latency of T-EMDE pooling vs SGRAF's self-attention pooling vs multi-head self-attention.

    python scripts/bench_latency.py                 # CPU (always) + CUDA fp32/bf16 when available
    python scripts/bench_latency.py --device cpu --quick   # smoke run (tiny shapes, seconds)

Writes ``experiments/benchmarks/latency_<device>.json`` and ``latency_<device>.png`` (time vs T, log-log).

What is measured (all numbers are medians of repeated runs after warm-up):

* ``paper``: the paper's shapes, batch 128, D = 1024: an *image* row (36 regions, all valid) and a *text*
  row (caption lengths drawn uniformly in 8..40, padded to 40). Forward = eval mode under
  ``torch.inference_mode``; forward+backward = train mode, gradients w.r.t. the parameters and the input.
* ``sweep_d1024``: T = 16 .. 512 at D = 1024 (smaller batch); ``sweep_d128``: T = 64 .. 2048 at D = 128, where
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
import json
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from temde.bench.cases import (
    CASES,
    PAPER_DIM,
    PAPER_ROWS,
    SWEEPS,
    Case,
    Row,
    Shape,
    Sweep,
    case_inputs,
    make_inputs,
    runners,
)
from temde.bench.entropy import bench_entropy
from temde.bench.latency_plot import plot
from temde.bench.timing import cpu_name, load_average, publishable, write_json

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


# ---------------------------------------------------------------------------------------- main
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
    load_before = load_average()
    started = time.time()
    with tqdm(total=total, desc=f"latency {device.type} {str(dtype).split('.')[-1]}", unit="run") as bar:
        paper = bench_paper(device, dtype, warmup, repeats, bar, rows)
        sweep_res = {s.name: bench_sweep(s, device, dtype, 1, args.sweep_repeats, bar) for s in sweeps}
    load_after = load_average()
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
        "load_average_after": load_after,
        "publishable": publishable(load_before, load_after, device.type, torch.get_num_threads()),
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
    write_json(out_dir / f"latency_{suffix}.json", result)
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
    load_before = load_average()
    with tqdm(total=sum(len(r.cases) * 2 * args.repeats for r in rows), desc="latency rows", unit="run") as bar:
        measured = bench_paper(device, dtype, args.warmup, args.repeats, bar, rows)
    load_after = load_average()
    threads = torch.get_num_threads()
    for row in measured.values():  # the file's top-level load fields describe the full run, not these rows
        row["measured"] = {"threads": threads, "repeats": args.repeats, "load_average_before": load_before,
                           "load_average_after": load_after,
                           "publishable": publishable(load_before, load_after, device.type, threads)}
    result["paper"].update(measured)
    result["cases"] = {k: c.note for k, c in CASES.items()}
    write_json(path, result)
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


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="all", choices=["all", "cpu", "cuda"])
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5, help="timed rounds at paper shapes")
    p.add_argument("--sweep-repeats", type=int, default=3, help="timed rounds per sweep point")
    p.add_argument("--threads", default="auto",
                   help="torch CPU threads; 'auto' = torch's default, or 1 when the machine is already busy "
                        "(1-min load average >= cores - 0.5): oversubscribed OpenMP threads stall on every "
                        "parallel op, which measures the scheduler rather than the module")
    p.add_argument("--out-dir", type=Path, default=Path("experiments/benchmarks"))
    p.add_argument("--quick", action="store_true", help="tiny shapes, for a smoke test")
    p.add_argument("--clock", default="auto", choices=["auto", "wall", "cpu"],
                   help="primary statistic: auto = process CPU time when running 1 CPU thread, else wall-clock")
    p.add_argument("--replot", type=Path, default=None, help="only redraw the PNG of an existing JSON")
    p.add_argument("--threads-note", default="", help="free text recorded in the JSON (why this thread count)")
    p.add_argument("--rows", nargs="+", default=None,
                   help="only these paper rows (e.g. vsrn_image_encoder), merged into the existing JSON")
    args = p.parse_args(argv)
    if args.replot:
        plot(json.loads(args.replot.read_text()), args.replot.with_suffix(".png"))
        return
    if args.threads == "auto":
        load, cores = (load_average() or [0.0])[0], os.cpu_count() or 1
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


