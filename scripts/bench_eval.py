"""SGRAF evaluation speed: our blocked, vectorized similarity vs the official per-caption loop.

Both sides use the *same* model and the same encoded galleries (regions and words are encoded once; encoding
time is reported separately). The baseline is the official evaluation strategy (``shard_attn_scores``): shards
of 100 images, and for every shard a Python loop over captions, each caption (cut to its own length) scored
against the 100 images at once. Ours: ``temde.retrieval.blocked_similarity`` (image x caption blocks) with
``SGRAF.similarity`` scoring all pairs of a block vectorized, in length-sorted chunks of bounded size.

Shapes are Flickr30K test (1000 images x 5000 captions, 36 x 2048 regions, SCAN vocabulary) with caption
lengths drawn like Flickr30K's (mean ~14.3 tokens incl. <start>/<end>); on CPU a stated fraction of it is run
(default 100 images x 500 captions: 1% of the pairs). Weights are random (official init, randomized BatchNorm
statistics), which does not change the cost. FLOPs are counted analytically per pair from the actual caption
lengths; the device's matmul peak is measured with a large fp32 matmul.

    python scripts/bench_eval.py                       # CPU, ~5 min on 2 cores -> experiments/benchmarks/eval_cpu.json
    python scripts/bench_eval.py --device cuda --images 1000 --captions 5000 --lowp   # GPU, bf16/TF32 too
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import threading
import time
from pathlib import Path

import torch

from temde.evaluation import retrieval_metrics
from temde.models.base import Repr, slice_repr
from temde.models.sgraf import SGRAF
from temde.retrieval import blocked_similarity, encode_images, encode_texts

F30K_VOCAB = 8481
F30K_TEST = (1000, 5000)
OFFICIAL_SHARD = 100  # official shard_attn_scores(shard_size=100)


# ---------------------------------------------------------------------------------------------------------------
# FLOPs
# ---------------------------------------------------------------------------------------------------------------
def flops_per_pair(length: int, d: int, m: int, g: int, regions: int, steps: int, module: str) -> dict[str, int]:
    """Multiply-adds x 2 of one (image, caption) pair; ``executed`` = what our code runs (last SGR step on
    node 0 only), ``official`` = the official computation."""
    n = length + 1
    common = 2 * regions * length * d * 2 + 2 * length * d * m + 2 * g * m + 2 * m  # attention, loc, glo, head
    if module == "SGR":
        full_step = 2 * n * m * (3 * m) + 4 * n * n * m
        last_step = 2 * m * m + 2 * n * m * m + 4 * n * m + 2 * m * m
        executed = common + (steps - 1) * full_step + last_step
        official = common + steps * full_step
    else:
        executed = official = common + 4 * n * m
    return {"executed": executed, "official": official}


def total_flops(lengths: torch.Tensor, n_img: int, model: SGRAF, steps: int = 3) -> dict[str, float]:
    d = model.embed_size
    m = model.sim_enc.sim_eval_w.in_features
    g = model.sim_enc.sim_tranglo_w.in_features
    out = {"executed": 0.0, "official": 0.0}
    for length, count in zip(*torch.unique(lengths, return_counts=True)):
        f = flops_per_pair(int(length), d, m, g, 36, steps, model.module_name)
        for key in out:
            out[key] += f[key] * int(count) * n_img
    return out


def matmul_peak(device: torch.device, size: int = 4096, reps: int = 5) -> float:
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(2):
        a @ b
    _sync(device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        _sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


# ---------------------------------------------------------------------------------------------------------------
# memory
# ---------------------------------------------------------------------------------------------------------------
def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class PeakMemory:
    """Peak extra memory of a code block: CUDA allocator peak on GPU, sampled RSS (every 5 ms) on CPU."""

    def __init__(self, device: torch.device) -> None:
        self.device = device
        self.peak_bytes = 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._rss()
            self._max = self._base
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._rss())
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._max, self._rss()) - self._base


# ---------------------------------------------------------------------------------------------------------------
# the two strategies
# ---------------------------------------------------------------------------------------------------------------
@torch.no_grad()
def per_caption_loop(model: SGRAF, img: Repr, txt: Repr, device: torch.device, shard: int = OFFICIAL_SHARD) -> torch.Tensor:
    """The official strategy: 100-image shards, a Python loop over captions, each cut to its own length."""
    n_img, n_cap = img["regions"].shape[0], txt["words"].shape[0]
    sims = torch.empty(n_img, n_cap, device=device)
    lengths = txt["words_mask"].sum(1).tolist()
    img = {k: v.to(device) for k, v in img.items()}
    txt = {k: v.to(device) for k, v in txt.items()}
    for i in range(0, n_img, shard):
        img_s = slice_repr(img, i, i + shard)
        for j in range(n_cap):
            length = int(lengths[j])
            cap = {"words": txt["words"][j : j + 1, :length], "words_mask": txt["words_mask"][j : j + 1, :length],
                   "global": txt["global"][j : j + 1]}
            sims[i : i + shard, j] = model.similarity(img_s, cap)[:, 0].float()
    return sims.cpu()


def timed(fn, device: torch.device) -> tuple[float, torch.Tensor, int]:
    """(wall seconds, result, peak extra bytes) of one run."""
    _sync(device)
    with PeakMemory(device) as mem:
        t = time.perf_counter()
        result = fn()
        _sync(device)
        elapsed = time.perf_counter() - t
    return elapsed, result, mem.peak_bytes


def f30k_like_lengths(n: int, generator: torch.Generator) -> torch.Tensor:
    """Caption lengths incl. <start>/<end>: 4 + Poisson(10.3), clipped to 82 (Flickr30K mean ~12.3 words)."""
    return (4 + torch.poisson(torch.full((n,), 10.3), generator=generator)).long().clamp(max=82)


def randomize_bn(model: torch.nn.Module, generator: torch.Generator) -> None:
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm1d):
            mod.running_mean.normal_(0, 0.2, generator=generator)
            mod.running_var.uniform_(0.5, 1.5, generator=generator)


def coco5k_memory(model: SGRAF, working_set_bytes: int, max_len: int) -> dict[str, float]:
    """Estimated peak memory (GiB) of a COCO-5K evaluation (5000 images x 25000 captions)."""
    d, g = model.embed_size, model.sim_enc.sim_tranglo_w.in_features
    n_img, n_cap, gib = 5000, 25000, 2.0**30
    images = n_img * 36 * (d * 4 + 1) + n_img * g * 4
    texts = n_cap * max_len * (d * 4 + 1) + n_cap * g * 4
    sims = n_img * n_cap * 4
    ours = images + texts + sims + working_set_bytes
    official = n_cap * 36 * d * 8 + n_cap * max_len * d * 8 + n_img * n_cap * 8  # float64 per-caption caches
    return {
        "assumed_max_caption_len": max_len,
        "image_gallery_gib": images / gib,
        "caption_gallery_gib": texts / gib,
        "sims_matrix_gib": sims / gib,
        "scoring_working_set_gib": working_set_bytes / gib,
        "ours_total_gib": ours / gib,
        "official_caches_gib": official / gib,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--captions", type=int, default=500)
    parser.add_argument("--module", default="SGR", choices=["SGR", "SAF"])
    parser.add_argument("--img-block", type=int, default=128)
    parser.add_argument("--txt-block", type=int, default=512)
    parser.add_argument("--chunk-size", type=int, default=None, help="SGRAF.chunk_size (default: model's)")
    parser.add_argument("--reps", type=int, default=1, help="interleaved timing repetitions (min is reported)")
    parser.add_argument("--lowp", action="store_true", help="also time bf16 autocast and TF32 (CUDA only)")
    parser.add_argument("--coco-max-len", type=int, default=50,
                        help="assumed longest COCO testall caption (tokens) for the memory estimate")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    device = torch.device(args.device)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    out_path = args.out or Path("experiments/benchmarks") / f"eval_{device.type}.json"
    g = torch.Generator().manual_seed(args.seed)
    torch.manual_seed(args.seed)
    model = SGRAF(vocab_size=F30K_VOCAB, module_name=args.module)
    if args.chunk_size:
        model.chunk_size = args.chunk_size
    randomize_bn(model, g)
    model.eval().to(device)
    n_img, n_cap = args.images, args.captions
    images = torch.rand(n_img, 36, 2048, generator=g) * 2
    lengths = f30k_like_lengths(n_cap, g)
    tokens = torch.randint(4, F30K_VOCAB, (n_cap, int(lengths.max())), generator=g)
    tokens[torch.arange(tokens.shape[1])[None] >= lengths[:, None]] = 0

    print(f"device {device}, threads {torch.get_num_threads()}: measuring matmul peak ...", flush=True)
    peak = matmul_peak(device)
    t0 = time.perf_counter()
    img = encode_images(model, images, 128, device)
    txt = encode_texts(model, tokens, lengths, 128, device)
    _sync(device)
    encode_s = time.perf_counter() - t0
    flops = total_flops(lengths, n_img, model)
    pairs = n_img * n_cap
    print(f"{n_img} images x {n_cap} captions ({pairs} pairs, {flops['executed'] / pairs / 1e6:.1f} MFLOP/pair "
          f"executed), encode {encode_s:.1f}s; blocked ...", flush=True)

    def ours() -> torch.Tensor:
        return blocked_similarity(model, img, txt, args.img_block, args.txt_block, device, progress=False)

    t_ours = t_base = float("inf")
    mem_ours = mem_base = 0
    for rep in range(args.reps):  # interleaved, min kept: the machine may be shared
        t, s_ours, mem = timed(ours, device)
        t_ours, mem_ours = min(t_ours, t), max(mem_ours, mem)
        print(f"  [{rep}] blocked: {t:.1f}s ({pairs / t:.0f} pairs/s); per-caption loop ...", flush=True)
        t, s_base, mem = timed(lambda: per_caption_loop(model, img, txt, device), device)
        t_base, mem_base = min(t_base, t), max(mem_base, mem)
        print(f"  [{rep}] per-caption: {t:.1f}s ({pairs / t:.0f} pairs/s)", flush=True)
    diff = float((s_ours - s_base).abs().max())

    def stats(seconds: float, mem: int | None) -> dict[str, float | None]:
        return {
            "time_s": seconds,
            "pairs_per_s": pairs / seconds,
            "achieved_flops_per_s_executed": flops["executed"] / seconds,
            "achieved_flops_per_s_official_equivalent": flops["official"] / seconds,
            "fraction_of_matmul_peak": flops["executed"] / seconds / peak,
            "peak_extra_memory_mib": mem / 2**20 if mem is not None else None,
        }

    result = {
        "command": "python " + " ".join(sys.argv),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "device_type": device.type,
        "torch": torch.__version__,
        "cpu_threads": torch.get_num_threads(),
        "load_average_1min": os.getloadavg()[0],
        "model": {"module_name": args.module, "embed_size": model.embed_size, "sim_dim": 256, "sgr_step": 3,
                  "weights": "random (official init), randomized BatchNorm statistics", "chunk_size": model.chunk_size},
        "shapes": {"n_images": n_img, "n_captions": n_cap, "fraction_of_f30k_test_pairs": pairs / (F30K_TEST[0] * F30K_TEST[1]),
                   "mean_caption_len": float(lengths.float().mean()), "max_caption_len": int(lengths.max())},
        "flops_per_pair_mean": {"executed": flops["executed"] / pairs, "official": flops["official"] / pairs},
        "matmul_peak_flops_per_s": peak,
        "encode_time_s": encode_s,
        "blocked": {**stats(t_ours, mem_ours), "img_block": args.img_block, "txt_block": args.txt_block},
        # on CPU the RSS high-water mark is only meaningful for the first strategy timed (freed memory stays mapped)
        "per_caption_baseline": {**stats(t_base, mem_base if device.type == "cuda" else None), "shard": OFFICIAL_SHARD},
        "speedup": t_base / t_ours,
        "max_abs_diff": diff,
        "projected_full_f30k_test_s": {"blocked": t_ours * F30K_TEST[0] * F30K_TEST[1] / pairs,
                                       "per_caption": t_base * F30K_TEST[0] * F30K_TEST[1] / pairs},
        "coco5k_memory_estimate": coco5k_memory(model, mem_ours, args.coco_max_len),
        "max_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }
    if args.lowp and device.type == "cuda" and n_cap == 5 * n_img:
        ref_metrics = retrieval_metrics(s_ours.numpy())
        result["lowp"] = {"fp32_rsum": ref_metrics["rsum"],
                          "note": "random weights: recall differences only measure ranking stability"}
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        t_tf32, s_tf32, _ = timed(ours, device)
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False

        def bf16() -> torch.Tensor:
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return ours()

        t_bf16, s_bf16, _ = timed(bf16, device)
        for name, t, s in (("tf32", t_tf32, s_tf32), ("bf16_autocast", t_bf16, s_bf16)):
            m = retrieval_metrics(s.numpy())
            result["lowp"][name] = {"time_s": t, "speedup_vs_fp32": t_ours / t, "max_abs_diff": float((s - s_ours).abs().max()),
                                    "rsum": m["rsum"], "rsum_diff": m["rsum"] - ref_metrics["rsum"],
                                    "recall_diffs": {k: m[k] - ref_metrics[k] for k in ref_metrics if "_r" in k and "meanr" not in k and "medr" not in k}}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("speedup", "max_abs_diff")}, indent=None))
    print(f"blocked {pairs / t_ours:.0f} pairs/s ({result['blocked']['fraction_of_matmul_peak']:.0%} of matmul peak "
          f"{peak / 1e9:.0f} GFLOP/s), per-caption {pairs / t_base:.0f} pairs/s -> {out_path}")


if __name__ == "__main__":
    main()
