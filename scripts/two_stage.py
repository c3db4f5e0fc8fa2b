"""Two-stage retrieval benchmark (FAISS shortlist + full-model re-ranking); see ``temde.bench.two_stage``.

    python scripts/two_stage.py --ckpt outputs/train/synthetic_sgr_temde/<run>/model_best.ckpt [--ks 5,10,20,50]
"""

from temde.bench.two_stage import main

if __name__ == "__main__":
    main()
