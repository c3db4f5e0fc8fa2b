"""Two-stage retrieval benchmark: FAISS shortlist by global vectors, full-model re-ranking, recall vs k.

    python scripts/two_stage.py --ckpt outputs/train/synthetic_sgr_temde/<run>/model_best.ckpt \
        [--data-root data --data-name synthetic_precomp --split test] [--ks 5,10,20,50] \
        [--out experiments/benchmarks/two_stage_cpu.json]

Loads one of our checkpoints (``temde.checkpoint.load_model``; official ones are converted first with
``python -m temde.convert``), encodes the split once, computes the full similarity matrix (the reference) and,
for every k, the two-stage result: distinct pairs re-scored, recall of the shortlist alone and R@K / rsum after
re-ranking, next to the full evaluation and the global-vector-only ranking.
"""

from temde.bench.two_stage import main

if __name__ == "__main__":
    main()
