"""How informative are a trained model's T-EMDE sketches? Mean per-depth entropy of the set histograms.

A sketch row is a distribution over W buckets: entropy log W means uniform (uninformative), 0 means one bucket.
Writes ``experiments/benchmarks/sketch_entropy_<data>.json``::

    python scripts/sketch_entropy.py <run>/model_best.ckpt --data-root data --data-name synthetic_precomp
"""

from temde.bench.sketch_entropy import main

if __name__ == "__main__":
    main()
