"""One-shot GPU check (``make bench-gpu``): every speed figure a GPU day needs, within a fixed time budget.

Parts, each with its own time limit (a part that runs out says so in its JSON and in its printed line):

* ``scoring``: SGR and SAF at full Flickr30K-test size (1000 x 5000, random weights), blocked
  (:func:`temde.retrieval.blocked_similarity`) in fp32 / TF32 / bf16 vs the official per-caption strategy
  (:mod:`temde.bench.official`; timed on a leading fraction and extrapolated when the whole would not fit);
* ``recall``: the Recall change of TF32 / bf16 scoring against fp32 on a model trained on the synthetic data
  (``--ckpt`` + ``--data-root``, or a small SGR trained here for ``--train-steps`` steps);
* ``pooling``: T-EMDE vs SGRAF self-attention vs multi-head self-attention latency at the paper's shapes,
  fp32 and bf16 (:func:`temde.bench.latency.bench_paper`);
* ``training``: images/s and peak memory at batch 128 for SGR, SAF and VSRN, each with and without T-EMDE, in
  fp32 and bf16-mixed (models built from the paper-row experiment configs).

Writes ``experiments/benchmarks/gpu_<device name>.json`` and ``.md``. ``--smoke`` runs the same code on the CPU
at tiny sizes in well under a minute (what the test suite checks).

Goals to check on an H100/H200-class card: Flickr30K-test SGR scoring < 30 s, COCO-5K (25x the pairs) < 10 min,
bf16-mixed training >= 1.8x the fp32 images/s.
"""

from __future__ import annotations

import argparse
import re
import tempfile
import time
from pathlib import Path
from typing import Any

import hydra
import torch
from hydra import compose, initialize_config_dir
from omegaconf import OmegaConf
from tqdm.auto import tqdm

from temde.bench.cases import PAPER_ROWS as LATENCY_ROWS
from temde.bench.cases import Row, Shape
from temde.bench.eval_speed import random_gallery, random_sgraf, recall_change
from temde.bench.latency import bench_paper
from temde.bench.official import official_scores
from temde.bench.timing import environment, interleaved, load_average, sync, write_json, write_text
from temde.checkpoint import build_model, load_model
from temde.data.precomp import PrecompDataset
from temde.data.vocab import Vocabulary
from temde.evaluation import retrieval_metrics
from temde.losses import ContrastiveLoss
from temde.repr import slice_repr
from temde.retrieval import PRECISIONS, blocked_similarity, split_similarity

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
BUDGET_S = {"scoring": 200.0, "recall": 100.0, "pooling": 50.0, "training": 110.0}  # 460 s < 8 min
F30K_VOCAB = 8481
SMOKE_MODEL = {"sgraf": ["model.embed_size=32", "model.word_dim=16", "model.sim_dim=16", "model.img_dim=64"],
               "vsrn": ["model.embed_size=32", "model.word_dim=16", "model.img_dim=64", "model.dim_hidden=16",
                        "model.dim_word=16"]}
TRAIN_ROWS = ("f30k_sgr", "f30k_sgr_temde", "f30k_saf", "f30k_saf_temde", "f30k_vsrn", "f30k_vsrn_temde")


class Part:
    """A time-limited part: ``left()`` seconds remain; ``cut(why)`` records that it stopped early."""

    def __init__(self, name: str, budget: float) -> None:
        self.name, self.budget, self.start, self.cut_reasons = name, budget, time.monotonic(), []

    def left(self) -> float:
        return self.budget - (time.monotonic() - self.start)

    def deadline(self, share: float = 1.0) -> float:
        return time.monotonic() + max(0.0, self.left() * share)

    def cut(self, why: str) -> None:
        self.cut_reasons.append(why)
        print(f"[{self.name}] cut short: {why}", flush=True)

    def report(self) -> dict[str, Any]:
        return {"budget_s": self.budget, "used_s": round(time.monotonic() - self.start, 2),
                "cut_short": bool(self.cut_reasons), "cut_reasons": self.cut_reasons}


FIGURES: list[str] = []  # this run's printed figures, also written to the markdown summary


def figure(line: str) -> None:
    FIGURES.append(line)
    print(line, flush=True)


def model_config(experiment: str, smoke: bool, vocab_size: int) -> dict[str, Any]:
    """The resolved ``model`` config of a paper-row experiment (tiny widths with ``smoke``)."""
    family = "vsrn" if "vsrn" in experiment else "sgraf"
    overrides = [f"experiment={experiment}", *(SMOKE_MODEL[family] if smoke else [])]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=overrides)
    config = OmegaConf.to_container(cfg.model, resolve=True)
    config["vocab_size"] = vocab_size
    return config


# ------------------------------------------------------------------------------------------------- scoring
def part_scoring(device: torch.device, smoke: bool, part: Part) -> dict[str, Any]:
    n_img, n_cap = (8, 40) if smoke else (1000, 5000)
    small = {"vocab_size": 100, "embed_size": 32, "word_dim": 16, "sim_dim": 16, "img_dim": 64} if smoke else {}
    out: dict[str, Any] = {"n_images": n_img, "n_captions": n_cap}
    for k, module in enumerate(("SGR", "SAF")):
        sub = Part(f"scoring/{module}", part.left() / (2 - k))
        model = random_sgraf(module, **small).to(device)
        img, txt, _, _ = random_gallery(model, n_img, n_cap, 0, device)
        fns = _blocked_by_precision(model, img, txt, device)
        timings, protocol = interleaved(fns, repeats=3, warmup=1, device=device, deadline=sub.deadline(0.6))
        if protocol["cut_short"]:
            sub.cut(f"{protocol['rounds']} of 3 rounds of blocked scoring")
        fp32 = timings["fp32"]["result"]
        res: dict[str, Any] = {}
        for p in PRECISIONS:
            t = timings[p]
            res[f"blocked_{p}"] = {k2: t[k2] for k2 in ("min_s", "median_s", "max_s", "runs_s")}
            res[f"blocked_{p}"]["max_abs_diff_vs_fp32"] = float((t["result"] - fp32).abs().max())
            res[f"blocked_{p}"]["recall_change_vs_fp32_random_weights"] = recall_change(t["result"], fp32)
            figure(f"scoring {module} {n_img}x{n_cap} blocked {p}: {t['median_s']:.2f} s (min {t['min_s']:.2f}, "
                   f"max {t['max_s']:.2f})")
        res["official"] = _official(model, img, txt, device, fp32, sub)
        figure(f"scoring {module} {n_img}x{n_cap} official per-caption: {res['official']['time_s']:.2f} s"
               f"{' (extrapolated from ' + format(res['official']['fraction'], '.1%') + ')' if res['official']['fraction'] < 1 else ''}"
               f"; blocked fp32 is {res['official']['time_s'] / res['blocked_fp32']['median_s']:.1f}x faster")
        res["coco5k_projection_s"] = {p: res[f"blocked_{p}"]["median_s"] * 25 for p in PRECISIONS}
        figure(f"scoring {module} COCO-5K projection (25x the pairs) blocked bf16: "
               f"{res['coco5k_projection_s']['bf16']:.0f} s, fp32 {res['coco5k_projection_s']['fp32']:.0f} s")
        res["part"] = sub.report()
        out[module] = res
    return out


def _blocked_by_precision(model: Any, img: dict, txt: dict, device: torch.device) -> dict[str, Any]:
    return {p: (lambda p=p: blocked_similarity(model, img, txt, device=device, progress=False, precision=p))
            for p in PRECISIONS}


def _official(model: Any, img: dict, txt: dict, device: torch.device, reference: torch.Tensor,
              part: Part) -> dict[str, Any]:
    """Time the official strategy on all captions, or on the leading captions that fit, then extrapolate."""
    n_cap = txt["words"].shape[0]
    probe = min(n_cap, 100)
    sync(device)
    t0 = time.perf_counter()
    official_scores(model, img, slice_repr(txt, 0, probe), device)
    sync(device)
    per_caption = (time.perf_counter() - t0) / probe
    fit = int(max(part.left() - 5, 0) / max(per_caption, 1e-9))
    n = max(probe, min(n_cap, fit))
    t0 = time.perf_counter()
    sims = official_scores(model, img, slice_repr(txt, 0, n), device)
    sync(device)
    measured = time.perf_counter() - t0
    if n < n_cap:
        part.cut(f"official loop timed on {n} of {n_cap} captions, extrapolated")
    return {"time_s": measured * n_cap / n, "measured_s": measured, "fraction": n / n_cap,
            "max_abs_diff_blocked_fp32": float((sims - reference[:, :n]).abs().max())}


# -------------------------------------------------------------------------------------------------- recall
def part_recall(device: torch.device, smoke: bool, part: Part, args: argparse.Namespace) -> dict[str, Any]:
    with tempfile.TemporaryDirectory() as tmp:
        if args.ckpt:
            model, payload = load_model(args.ckpt)
            dataset = PrecompDataset(args.data_root, args.data_name, "test", Vocabulary(payload["word2idx"]))
            source = str(args.ckpt)
        else:
            model, dataset, source = _train_synthetic(device, smoke, Path(tmp), part, args.train_steps)
        images = dataset.image_features()
        tokens, lengths = dataset.caption_tokens()
        sims = {p: split_similarity(model, images, tokens, lengths, device=device, precision=p) for p in PRECISIONS}
    fp32 = retrieval_metrics(sims["fp32"].numpy())
    out: dict[str, Any] = {"model": source, "fp32_rsum": fp32["rsum"]}
    for p in PRECISIONS[1:]:
        out[p] = {"recall_change": recall_change(sims[p], sims["fp32"]),
                  "max_abs_diff": float((sims[p] - sims["fp32"]).abs().max())}
        change = out[p]["recall_change"]["rsum"]
        figure(f"recall {p} vs fp32 on {source}: rsum {fp32['rsum']:.1f} -> {fp32['rsum'] + change:.1f} "
               f"({change:+.2f}), max |score diff| {out[p]['max_abs_diff']:.1e}")
    out["part"] = part.report()
    return out


def _train_synthetic(device: torch.device, smoke: bool, root: Path, part: Part, steps: int
                     ) -> tuple[torch.nn.Module, PrecompDataset, str]:
    """A small SGR (the ``synthetic_sgr`` experiment) trained on the synthetic data for ``steps`` steps."""
    overrides = ["experiment=synthetic_sgr", f"data.root={root}", "data.num_workers=0"]
    if smoke:
        overrides += ["data.synthetic.n_train=64", "data.synthetic.n_dev=10", "data.synthetic.n_test=10",
                      "data.synthetic.n_testall=10", "data.synthetic.feature_dim=64", *SMOKE_MODEL["sgraf"]]
    with initialize_config_dir(version_base="1.3", config_dir=str(CONFIG_DIR)):
        cfg = compose(config_name="train", overrides=overrides)
    datamodule = hydra.utils.instantiate(cfg.data)
    datamodule.setup("fit")
    config = OmegaConf.to_container(cfg.model, resolve=True)
    config["vocab_size"] = len(datamodule.vocab)
    model = build_model(config).to(device).train()
    loss_fn = ContrastiveLoss(max_violation=False)
    optimizer = torch.optim.Adam(model.parameters(), lr=float(cfg.optim.lr))
    done, deadline = 0, part.deadline(0.7)
    while done < steps:
        for batch in datamodule.train_dataloader():
            if done >= steps or time.monotonic() > deadline:
                break
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            img = model.encode_images(batch["images"], batch["regions_mask"])
            txt = model.encode_texts(batch["tokens"], batch["lengths"])
            loss = loss_fn(model.similarity(img, txt))
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            done += 1
        if done < steps and time.monotonic() > deadline:
            part.cut(f"training stopped after {done} of {steps} steps")
            break
    vocab = datamodule.vocab
    return model.eval(), PrecompDataset(root, cfg.data.name, "test", vocab), f"synthetic_sgr trained {done} steps"


# ------------------------------------------------------------------------------------------------- pooling
def part_pooling(device: torch.device, smoke: bool, part: Part) -> dict[str, Any]:
    rows = [r for r in LATENCY_ROWS if r.name in ("image", "text")]
    if smoke:
        rows = [Row(r.name, Shape(4, r.shape.tokens, 64, r.shape.lengths), r.cases, r.baseline) for r in rows]
    out: dict[str, Any] = {}
    for dtype in (torch.float32, torch.bfloat16):
        if part.left() <= 0:
            part.cut(f"no time left for {dtype}")
            break
        with tqdm(disable=True) as bar:
            res = bench_paper(device, dtype, 1, 3 if smoke else 10, bar, rows)
        name = str(dtype).split(".")[-1]
        out[name] = res
        for row, r in res.items():
            ms = ", ".join(f"{c} {v['fwd']['median_ms']:.3f} ms" for c, v in r["cases"].items())
            figure(f"pooling {name} {row} (batch {rows[0].shape.batch}) fwd: {ms}")
    out["part"] = part.report()
    return out


# ------------------------------------------------------------------------------------------------ training
def part_training(device: torch.device, smoke: bool, part: Part) -> dict[str, Any]:
    batch_size, steps = (4, 2) if smoke else (128, 5)
    vocab = 100 if smoke else F30K_VOCAB
    out: dict[str, Any] = {"batch_size": batch_size}
    runs = [(row, mode) for row in TRAIN_ROWS for mode in ("fp32", "bf16-mixed")]
    for k, (row, mode) in enumerate(runs):
        share = part.left() / (len(runs) - k)
        if share <= 0:
            part.cut(f"no time left for {row} {mode}")
            break
        out[f"{row}/{mode}"] = res = _train_throughput(row, mode, device, smoke, batch_size, steps, vocab, share)
        mem = f", peak {res['peak_memory_gib']:.2f} GiB" if res["peak_memory_gib"] is not None else ""
        figure(f"training {row} {mode} batch {batch_size}: {res['images_per_s']:.1f} images/s{mem}"
               f"{' (cut short)' if res['cut_short'] else ''}")
    for row in TRAIN_ROWS:
        a, b = out.get(f"{row}/fp32"), out.get(f"{row}/bf16-mixed")
        if a and b:
            out[f"{row}/bf16_speedup"] = b["images_per_s"] / a["images_per_s"]
            figure(f"training {row} bf16-mixed / fp32 images/s: {out[f'{row}/bf16_speedup']:.2f}x")
    out["part"] = part.report()
    return out


def _train_throughput(row: str, mode: str, device: torch.device, smoke: bool, batch_size: int, steps: int,
                      vocab: int, budget: float) -> dict[str, Any]:
    torch.manual_seed(0)
    config = model_config(row, smoke, vocab)
    model = build_model(config).to(device).train()
    img_dim = int(config["img_dim"])
    g = torch.Generator().manual_seed(0)
    lengths = (4 + torch.poisson(torch.full((batch_size,), 10.3), generator=g)).long().clamp(max=40)
    tokens = torch.randint(4, vocab, (batch_size, int(lengths.max())), generator=g)
    tokens[torch.arange(tokens.shape[1])[None] >= lengths[:, None]] = 0
    batch = {"images": torch.randn(batch_size, 36, img_dim, generator=g).to(device),
             "regions_mask": torch.ones(batch_size, 36, dtype=torch.bool, device=device),
             "tokens": tokens.to(device), "lengths": lengths.to(device)}
    params = model.optimizer_parameters() if hasattr(model, "optimizer_parameters") else list(model.parameters())
    optimizer = torch.optim.Adam(params, lr=2e-4, foreach=False if getattr(model, "duplicate_caption_parameters",
                                                                             False) else None)
    loss_fn = ContrastiveLoss()

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=mode == "bf16-mixed"):
            img = model.encode_images(batch["images"], batch["regions_mask"])
            txt = model.encode_texts(batch["tokens"], batch["lengths"])
            loss = loss_fn(model.similarity(img, txt).float())
            for value in getattr(model, "auxiliary_losses", lambda *a: {})(batch, img, txt).values():
                loss = loss + value
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    start = time.monotonic()
    step()  # warm-up (allocator, kernels)
    sync(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    done, t0 = 0, time.perf_counter()
    while done < steps and (done == 0 or time.monotonic() - start < budget):
        step()
        done += 1
    sync(device)
    elapsed = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
    return {"images_per_s": batch_size * done / elapsed, "steps": done, "seconds": elapsed,
            "peak_memory_gib": peak, "cut_short": done < steps}


# ---------------------------------------------------------------------------------------------------- main
def summary_markdown(result: dict[str, Any]) -> str:
    lines = [f"# GPU check: {result['device']}", "", f"torch {result['torch']}, smoke={result['smoke']}, "
             f"total {result['wall_s']:.0f} s (budget {result['budget_s']:.0f} s)", ""]
    lines += [f"- {line}" for line in result["figures"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--smoke", action="store_true", help="CPU, tiny sizes, < 1 minute (what the tests run)")
    p.add_argument("--device", default=None, help="default: cuda (cpu with --smoke)")
    p.add_argument("--parts", default="scoring,recall,pooling,training")
    p.add_argument("--ckpt", type=Path, default=None, help="trained checkpoint for the bf16 Recall change")
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--data-name", default="synthetic_precomp")
    p.add_argument("--train-steps", type=int, default=None, help="steps of the in-script synthetic SGR")
    p.add_argument("--out-dir", type=Path, default=None,
                   help="default experiments/benchmarks (outputs/bench with --smoke: a dry run is no figure)")
    args = p.parse_args(argv)
    device = torch.device(args.device or ("cpu" if args.smoke else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_gpu: no CUDA device (use --smoke for the CPU dry run)")
    args.train_steps = args.train_steps or (4 if args.smoke else 600)
    args.out_dir = args.out_dir or Path("outputs/bench" if args.smoke else "experiments/benchmarks")
    scale = 0.08 if args.smoke else 1.0  # smoke: ~37 s of budgets, so the whole run stays under a minute
    started = time.monotonic()
    FIGURES.clear()
    result: dict[str, Any] = {**environment(device), "smoke": args.smoke, "load_average_before": load_average(),
                              "budget_s": sum(BUDGET_S.values()) * scale}
    runners = {"scoring": lambda part: part_scoring(device, args.smoke, part),
               "recall": lambda part: part_recall(device, args.smoke, part, args),
               "pooling": lambda part: part_pooling(device, args.smoke, part),
               "training": lambda part: part_training(device, args.smoke, part)}
    for name in [s for s in args.parts.split(",") if s]:
        result[name] = runners[name](Part(name, BUDGET_S[name] * scale))
    result.update(load_average_after=load_average(), wall_s=time.monotonic() - started, figures=list(FIGURES))
    stem = "gpu_" + re.sub(r"[^A-Za-z0-9]+", "_", result["device"]).strip("_") + ("_smoke" if args.smoke else "")
    write_json(args.out_dir / f"{stem}.json", result)
    write_text(args.out_dir / f"{stem}.md", summary_markdown(result))
    print(f"-> {args.out_dir / stem}.json/.md ({result['wall_s']:.0f} s)")
    return result
