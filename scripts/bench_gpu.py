"""One-shot GPU check: scoring, Recall under bf16, pooling latency, training throughput (``temde.bench.gpu``).

    python scripts/bench_gpu.py            # one GPU, < 8 minutes -> experiments/benchmarks/gpu_<device>.json/.md
    python scripts/bench_gpu.py --smoke    # the same code on CPU at tiny sizes, < 1 minute
"""

from temde.bench.gpu import main

if __name__ == "__main__":
    main()
