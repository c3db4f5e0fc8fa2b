"""How informative are a trained model's T-EMDE sketches? Mean per-depth entropy of the set histograms.

A sketch row is a distribution over W buckets: entropy log W means uniform (uninformative), 0 means one bucket.
Writes ``experiments/benchmarks/sketch_entropy_<data>.json``::

    python scripts/sketch_entropy.py <run>/model_best.ckpt --data-root data --data-name synthetic_precomp
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import torch

from temde.bench.timing import write_json
from temde.checkpoint import checkpoint_vocabulary, load_model
from temde.data.precomp import PrecompDataset
from temde.data.vocab import Vocabulary
from temde.modules.temde import TEMDE
from temde.retrieval import encode_images, encode_texts


def entropy(hist: torch.Tensor) -> float:
    p = hist.clamp_min(1e-12)
    return float(-(p * p.log()).sum(-1).mean())


@torch.no_grad()
def sketch_entropies(model: torch.nn.Module, dataset: PrecompDataset) -> dict[str, float]:
    """Entropy of the L1 histograms that the model's (first) TEMDE module builds for images and captions."""
    sketchers = [m for m in model.modules() if isinstance(m, TEMDE)]
    if not sketchers:
        raise SystemExit("this checkpoint has no T-EMDE module (its global pooling is not a T-EMDE kind)")
    model.eval()
    img = encode_images(model, dataset.image_features())
    tokens, lengths = dataset.caption_tokens()
    txt = encode_texts(model, tokens, lengths)
    sketcher, out = sketchers[0], {}
    configured = sketcher.normalize
    sketcher.normalize = "l1"  # the histogram itself, before the output normalization
    try:
        for name, rep, key in (("image", img, "regions"), ("text", txt, "words")):
            if key not in rep:
                raise SystemExit(f"the model's {name} representation has no '{key}' tokens to sketch")
            out[f"{name}_mean_per_depth_entropy"] = entropy(sketcher(rep[key], rep[f"{key}_mask"]))
    finally:
        sketcher.normalize = configured
    out["log_W"] = math.log(sketcher.width)
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path)
    p.add_argument("--data-root", type=Path, default=Path("data"))
    p.add_argument("--data-name", default="synthetic_precomp")
    p.add_argument("--split", default="test")
    p.add_argument("--out-dir", type=Path, default=Path("experiments/benchmarks"))
    args = p.parse_args(argv)
    model, payload = load_model(args.checkpoint)
    dataset = PrecompDataset(args.data_root, args.data_name, args.split, Vocabulary(checkpoint_vocabulary(args.checkpoint, payload)))
    result = {"checkpoint": str(args.checkpoint), "data": args.data_name, "split": args.split,
              "n_images": dataset.n_images, "n_captions": len(dataset), **sketch_entropies(model, dataset)}
    write_json(args.out_dir / f"sketch_entropy_{args.data_name.removesuffix('_precomp')}.json", result)
    print(json.dumps(result, indent=1))
    return result
