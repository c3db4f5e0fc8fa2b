"""SGRAF evaluation (scoring) speed: our blocked scoring vs the official per-caption strategy.

Both sides use the *same* model and the same encoded galleries (regions and words are encoded once; encoding
time is reported separately). Compared, in interleaved rounds (:mod:`temde.bench.timing`):

* ``blocked``: :func:`temde.retrieval.blocked_similarity` (image x caption blocks, each scored vectorized in
  length-sorted chunks sized for the device, :func:`temde.models.sgraf.auto_chunk_size`);
* ``official``: the official ``shard_attn_scores`` / ``forward_sim`` strategy (:mod:`temde.bench.official`);
* ``loop``: the per-caption strategy on our kernels (one caption against 100 images per call).

Shapes are Flickr30K test (1000 images x 5000 captions, 36 x 2048 regions, SCAN vocabulary) with caption lengths
drawn like Flickr30K's (mean ~14.3 tokens incl. <start>/<end>); on CPU a stated fraction is run (default 100
images x 500 captions). Weights are random (official init, randomised BatchNorm statistics), which does not change
the cost. ``--precision fp32,bf16`` also times the blocked path in lower precision and writes the Recall change
next to the time.

    python scripts/bench_eval.py --threads 1      # -> experiments/benchmarks/eval_cpu_100x500_t1.json
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import torch

from temde.bench.official import OFFICIAL_SHARD, official_scores
from temde.bench.timing import (
    MIN_REPEATS,
    PeakMemory,
    environment,
    interleaved,
    load_average,
    matmul_peak,
    publishable,
    sync,
    write_json,
)
from temde.evaluation import RECALL_KEYS, retrieval_metrics
from temde.models.sgraf import SGRAF, auto_chunk_size
from temde.repr import Repr, slice_repr
from temde.retrieval import PRECISIONS, blocked_similarity, encode_images, encode_texts

F30K_VOCAB = 8481
F30K_TEST = (1000, 5000)
REGIONS = 36


def flops_per_pair(length: int, d: int, m: int, g: int, regions: int, steps: int, module: str) -> dict[str, int]:
    """Multiply-adds x 2 of one (image, caption) pair: ``executed`` = what our code runs (fused SGR steps, the
    last one for node 0 only, see temde.modules.graph), ``official`` = the official computation."""
    n = length + 1
    common = 2 * regions * length * d * 2 + 2 * length * d * m + 2 * g * m + 2 * m  # attention, loc, glo, head
    if module == "SGR":
        official_step = 2 * n * m * (3 * m) + 4 * n * n * m
        fused_step = 2 * n * m * (2 * m) + 4 * n * n * m
        last_step = 3 * 2 * m * m + 4 * n * m
        executed = common + (steps - 1) * fused_step + last_step
        official = common + steps * official_step
    else:
        executed = official = common + 4 * n * m
    return {"executed": executed, "official": official}


def total_flops(lengths: torch.Tensor, n_img: int, model: SGRAF, steps: int = 3) -> dict[str, float]:
    d, m = model.embed_size, model.sim_enc.sim_eval_w.in_features
    g = model.sim_enc.sim_tranglo_w.in_features
    out = {"executed": 0.0, "official": 0.0}
    for length, count in zip(*torch.unique(lengths, return_counts=True)):
        f = flops_per_pair(int(length), d, m, g, REGIONS, steps, model.module_name)
        for key in out:
            out[key] += f[key] * int(count) * n_img
    return out


def f30k_like_lengths(n: int, generator: torch.Generator) -> torch.Tensor:
    """Caption lengths incl. <start>/<end>: 4 + Poisson(10.3), clipped to 82 (Flickr30K mean ~12.3 words)."""
    return (4 + torch.poisson(torch.full((n,), 10.3), generator=generator)).long().clamp(max=82)


def randomize_bn(model: torch.nn.Module, generator: torch.Generator) -> None:
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.running_mean.normal_(0, 0.2, generator=generator)
            mod.running_var.uniform_(0.5, 1.5, generator=generator)


def random_gallery(model: SGRAF, n_img: int, n_cap: int, seed: int = 0, device: str | torch.device = "cpu"
                   ) -> tuple[Repr, Repr, torch.Tensor, float]:
    """Encoded random images and Flickr30K-like captions: (img, txt, lengths, encode seconds)."""
    g = torch.Generator().manual_seed(seed)
    images = torch.rand(n_img, REGIONS, model.img_enc.fc.in_features, generator=g) * 2
    lengths = f30k_like_lengths(n_cap, g)
    tokens = torch.randint(4, model.vocab_size, (n_cap, int(lengths.max())), generator=g)
    tokens[torch.arange(tokens.shape[1])[None] >= lengths[:, None]] = 0
    t0 = time.perf_counter()
    img = encode_images(model, images, 128, device)
    txt = encode_texts(model, tokens, lengths, 128, device)
    sync(device)
    return img, txt, lengths, time.perf_counter() - t0


def random_sgraf(module: str = "SGR", seed: int = 0, vocab_size: int = F30K_VOCAB, **kwargs: Any) -> SGRAF:
    torch.manual_seed(seed)
    model = SGRAF(vocab_size=vocab_size, module_name=module, **kwargs)
    randomize_bn(model, torch.Generator().manual_seed(seed))
    return model.eval()


@torch.no_grad()
def per_caption_loop(model: SGRAF, img: Repr, txt: Repr, device: torch.device | str,
                     shard: int = OFFICIAL_SHARD) -> torch.Tensor:
    """The per-caption strategy on our kernels: 100-image shards, each caption (cut to its length) at a time."""
    n_img, n_cap = img["regions"].shape[0], txt["words"].shape[0]
    sims = torch.empty(n_img, n_cap)
    lengths = txt["words_mask"].sum(1).tolist()
    img = {k: v.to(device) for k, v in img.items()}
    txt = {k: v.to(device) for k, v in txt.items()}
    for i in range(0, n_img, shard):
        img_s = slice_repr(img, i, i + shard)
        for j in range(n_cap):
            length = int(lengths[j])
            cap = {"words": txt["words"][j : j + 1, :length], "words_mask": txt["words_mask"][j : j + 1, :length],
                   "global": txt["global"][j : j + 1]}
            sims[i : i + shard, j] = model.similarity(img_s, cap)[:, 0].float().cpu()
    return sims


def strategies(model: SGRAF, img: Repr, txt: Repr, device: torch.device, names: list[str],
               img_block: int | None = None, txt_block: int | None = None) -> dict[str, Any]:
    """name -> zero-argument scorer returning the (n_img, n_cap) matrix."""
    table = {
        "blocked": lambda: blocked_similarity(model, img, txt, img_block, txt_block, device, progress=False),
        "official": lambda: official_scores(model, img, txt, device),
        "loop": lambda: per_caption_loop(model, img, txt, device),
    }
    for precision in PRECISIONS[1:]:
        table[f"blocked_{precision}"] = (lambda p=precision: blocked_similarity(
            model, img, txt, img_block, txt_block, device, progress=False, precision=p))
    unknown = set(names) - set(table)
    if unknown:
        raise ValueError(f"unknown strategies {sorted(unknown)}; choose from {sorted(table)}")
    return {name: table[name] for name in names}


def coco5k_memory(model: SGRAF, working_set_bytes: int, max_len: int = 50) -> dict[str, float]:
    """Estimated peak memory (GiB) of a COCO-5K evaluation (5000 images x 25000 captions, captions padded to
    ``max_len`` tokens) next to the official float64 per-caption caches."""
    d, g = model.embed_size, model.sim_enc.sim_tranglo_w.in_features
    n_img, n_cap, gib = 5000, 25000, 2.0**30
    images = n_img * REGIONS * (d * 4 + 1) + n_img * g * 4
    texts = n_cap * max_len * (d * 4 + 1) + n_cap * g * 4
    sims = n_img * n_cap * 4
    official = n_cap * REGIONS * d * 8 + n_cap * max_len * d * 8 + n_img * n_cap * 8
    return {"assumed_max_caption_len": max_len, "image_gallery_gib": images / gib, "caption_gallery_gib": texts / gib,
            "sims_matrix_gib": sims / gib, "scoring_working_set_gib": working_set_bytes / gib,
            "ours_total_gib": (images + texts + sims + working_set_bytes) / gib, "official_caches_gib": official / gib}


def recall_change(sims: torch.Tensor, reference: torch.Tensor) -> dict[str, float] | None:
    """Recall@K and rsum differences (points) of ``sims`` against ``reference``; None unless 5 captions/image."""
    if sims.shape[1] != 5 * sims.shape[0]:
        return None
    a, b = retrieval_metrics(sims.numpy()), retrieval_metrics(reference.numpy())
    return {k: a[k] - b[k] for k in (*RECALL_KEYS, "rsum")}


def run(args: argparse.Namespace) -> dict[str, Any]:
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    model = random_sgraf(args.module, args.seed, chunk_size=args.chunk_size).to(device)
    n_img, n_cap = args.images, args.captions
    img, txt, lengths, encode_s = random_gallery(model, n_img, n_cap, args.seed, device)
    names = ["blocked", *args.strategies]
    names += [f"blocked_{p}" for p in args.precision if p != "fp32"]
    fns = strategies(model, img, txt, device, names, args.img_block, args.txt_block)
    flops = total_flops(lengths, n_img, model)
    pairs = n_img * n_cap
    peak = matmul_peak(device, 2048 if device.type == "cpu" else 8192)
    print(f"{environment(device)['device']}, {torch.get_num_threads()} thread(s): {n_img} images x {n_cap} "
          f"captions, {flops['executed'] / pairs / 1e6:.1f} MFLOP/pair executed "
          f"({flops['official'] / pairs / 1e6:.1f} official), encode {encode_s:.1f}s", flush=True)
    load_before = load_average()
    timings, protocol = interleaved(
        fns, repeats=args.repeats, warmup=0, device=device,
        on_run=lambda name, r, s: print(f"  [{r}] {name}: {s:.2f}s ({pairs / s:.0f} pairs/s)", flush=True))
    load_after = load_average()
    with PeakMemory(device) as mem:
        reference = fns["blocked"]()
    sims = {name: t.pop("result") for name, t in timings.items()}
    out_cases = {}
    for name, t in timings.items():
        entry = {**t, "pairs_per_s_median": pairs / t["median_s"],
                 "fraction_of_matmul_peak": flops["executed"] / t["median_s"] / peak if name == "blocked" else None,
                 "max_abs_diff_vs_official": float((sims[name] - sims["official"]).abs().max())
                 if "official" in sims else None}
        if name.startswith("blocked_"):
            # random weights: only ranking stability; scripts/bench_gpu.py --parts recall uses a trained model
            entry["recall_change_vs_fp32_random_weights"] = recall_change(sims[name], sims["blocked"])
        out_cases[name] = entry
    result: dict[str, Any] = {
        "command": args.command,
        **environment(device),
        "load_average_before": load_before,
        "load_average_after": load_after,
        "publishable": publishable(load_before, load_after, device.type, torch.get_num_threads()),
        "protocol": {**protocol, "repeats": args.repeats, "order": names,
                     "statistic": "min / median / max over interleaved rounds"},
        "model": {"module_name": args.module, "embed_size": model.embed_size, "sim_dim": 256, "sgr_step": 3,
                  "weights": "random (official init), randomized BatchNorm statistics",
                  "chunk_size": model.chunk_size or auto_chunk_size(device, torch.float32, model.embed_size)},
        "shapes": {"n_images": n_img, "n_captions": n_cap, "mean_caption_len": float(lengths.float().mean()),
                   "max_caption_len": int(lengths.max()),
                   "fraction_of_f30k_test_pairs": pairs / (F30K_TEST[0] * F30K_TEST[1])},
        "flops_per_pair_mean": {k: v / pairs for k, v in flops.items()},
        "matmul_peak_flops_per_s": peak,
        "encode_time_s": encode_s,
        "blocked_peak_extra_memory_mib": mem.peak_bytes / 2**20,
        "coco5k_memory_estimate": coco5k_memory(model, mem.peak_bytes),
        "cases": out_cases,
        "speedup_median": {name: timings[name]["median_s"] / timings["blocked"]["median_s"]
                           for name in timings if name != "blocked"},
        "reference_check": float((reference - sims["blocked"]).abs().max()),
    }
    return result


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cpu")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--captions", type=int, default=500)
    p.add_argument("--module", default="SGR", choices=["SGR", "SAF"])
    p.add_argument("--img-block", type=int, default=None, help="default: the model's (SGRAF 128)")
    p.add_argument("--txt-block", type=int, default=None, help="default: the model's (SGRAF 512)")
    p.add_argument("--chunk-size", type=int, default=None, help="SGRAF.chunk_size (default: per device)")
    p.add_argument("--strategies", default="official,loop",
                   help="compared with blocked, comma-separated: official, loop (our kernels per caption)")
    p.add_argument("--precision", default="fp32", help="comma-separated fp32,tf32,bf16: blocked also timed in each")
    p.add_argument("--repeats", type=int, default=MIN_REPEATS, help="interleaved rounds (>= 3)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parser().parse_args(argv)
    if args.repeats < MIN_REPEATS:
        raise SystemExit(f"bench_eval: --repeats must be >= {MIN_REPEATS} (min/median/max need it)")
    args.strategies = [s for s in args.strategies.split(",") if s]
    args.precision = [s for s in args.precision.split(",") if s]
    args.command = "python scripts/bench_eval.py " + " ".join(argv if argv is not None else __import__("sys").argv[1:])
    result = run(args)
    threads = result["cpu_threads"] if result["device_type"] == "cpu" else result["device"].replace(" ", "_")
    out = args.out or Path("experiments/benchmarks") / (
        f"eval_{result['device_type']}_{args.images}x{args.captions}_{args.module.lower()}_t{threads}.json")
    write_json(out, result)
    ratios = ", ".join(f"{k} {v:.2f}x" for k, v in result["speedup_median"].items())
    print(f"blocked {result['cases']['blocked']['pairs_per_s_median']:.0f} pairs/s (median); time ratio "
          f"other/blocked: {ratios}; publishable={result['publishable']} (load {result['load_average_before']} -> "
          f"{result['load_average_after']}) -> {out}")
    return result
