"""Two-stage retrieval benchmark (``scripts/two_stage.py``): FAISS shortlist by global vectors, full-model re-ranking, recall vs k.

    python scripts/two_stage.py --ckpt outputs/train/synthetic_sgr_temde/<run>/model_best.ckpt \
        [--data-root data --data-name synthetic_precomp --split test] [--ks 5,10,20,50] \
        [--out experiments/benchmarks/two_stage_cpu.json]

Loads one of our checkpoints (``temde.checkpoint.load_model``; official ones are converted first with
``python -m temde.convert``), encodes the split once, computes the full similarity matrix (the reference) and,
for every k, the two-stage result: distinct pairs re-scored, recall of the shortlist alone and R@K / rsum after
re-ranking, next to the full evaluation and the global-vector-only ranking.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from temde.bench.timing import write_json
from temde.checkpoint import checkpoint_vocabulary, load_model
from temde.data.precomp import PrecompDataset
from temde.data.vocab import Vocabulary
from temde.evaluation import retrieval_metrics
from temde.retrieval import blocked_similarity, encode_images, encode_texts
from temde.two_stage import global_only_metrics, two_stage_evaluate


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ckpt", type=Path, required=True, help="our checkpoint (model_best.ckpt)")
    parser.add_argument("--data-root", default="data")
    parser.add_argument("--data-name", default="synthetic_precomp")
    parser.add_argument("--split", default="test")
    parser.add_argument("--ks", default="5,10,20,50")
    parser.add_argument("--index", default="flat", choices=["flat", "ivf"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    model, payload = load_model(args.ckpt)
    model.to(args.device)
    vocab = Vocabulary(checkpoint_vocabulary(args.ckpt, payload))
    dataset = PrecompDataset(args.data_root, args.data_name, args.split, vocab)
    images = dataset.image_features()
    tokens, lengths = dataset.caption_tokens()

    t0 = time.perf_counter()
    img = encode_images(model, images, 128, args.device)
    txt = encode_texts(model, tokens, lengths, 128, args.device)
    encode_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    sims = blocked_similarity(model, img, txt, device=args.device, progress=False)
    full_s = time.perf_counter() - t0
    full = retrieval_metrics(sims.numpy())
    rows = []
    for k in (int(x) for x in args.ks.split(",")):
        t0 = time.perf_counter()
        res = two_stage_evaluate(model, img, txt, k, index_kind=args.index, device=args.device)
        row = {**res.as_dict(), "time_s": time.perf_counter() - t0,
               "pair_fraction": res.pairs_scored / res.pairs_full,
               "rsum_minus_full": res.metrics["rsum"] - full["rsum"]}
        rows.append(row)
        print(f"k={k:4d}: {res.pairs_scored:7d} pairs ({row['pair_fraction']:.1%}), shortlist recall "
              f"i2t {res.shortlist_recall_i2t:.1f} t2i {res.shortlist_recall_t2i:.1f}, rsum {res.metrics['rsum']:.1f} "
              f"(full {full['rsum']:.1f}), {row['time_s']:.1f}s", flush=True)
    result = {
        "command": "python scripts/two_stage.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "checkpoint": str(args.ckpt),
        "model_config": payload["model_config"],
        "data": {"root": args.data_root, "name": args.data_name, "split": args.split, "n_images": len(images),
                 "n_captions": int(tokens.shape[0])},
        "index": args.index,
        "encode_time_s": encode_s,
        "full": {"time_s": full_s, "pairs": sims.numel(), "metrics": full},
        "global_only": global_only_metrics(img, txt),
        "two_stage": rows,
    }
    out = args.out or Path("experiments/benchmarks") / f"two_stage_{torch.device(args.device).type}.json"
    write_json(out, result)
    print(f"-> {out}")
    return result
