"""Latency of T-EMDE pooling vs SGRAF's self-attention vs multi-head self-attention (``temde.bench.latency``).

    python scripts/bench_latency.py                 # CPU (always) + CUDA fp32/bf16 when available
    python scripts/bench_latency.py --device cpu --quick   # smoke run (tiny shapes, seconds)
"""

from temde.bench.latency import main

if __name__ == "__main__":
    main()
