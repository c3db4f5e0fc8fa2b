"""SGRAF scoring speed: blocked vs the official per-caption strategy (``temde.bench.eval_speed``).

    python scripts/bench_eval.py --threads 1 --images 100 --captions 500
    python scripts/bench_eval.py --device cuda --images 1000 --captions 5000 --precision fp32,tf32,bf16
"""

from temde.bench.eval_speed import main

if __name__ == "__main__":
    main()
