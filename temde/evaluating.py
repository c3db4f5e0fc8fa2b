"""Evaluation as a library function: ``evaluate(cfg, out_dir)`` scores checkpoints on the test splits.

Callable without Hydra's global state (``python -m temde.evaluate`` is a thin shell over it). Several
checkpoints form an ensemble: their similarity matrices are averaged with equal weight (SGRAF = SGR + SAF;
VSRN* = two VSRN runs), exactly as the authors did offline. Each test split of the data config is evaluated
(Flickr30K 1K test; COCO 5K and 1K = 5 folds of testall); ``metrics.json`` and a Recall table are written to
``out_dir``. (:mod:`temde.evaluation` holds the metrics themselves.)
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Any

import hydra
import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf
from torch import Tensor, nn

from temde.checkpoint import checkpoint_vocabulary, load_model
from temde.data.datamodule import PrecompDataModule
from temde.data.hf_tokenizer import caption_encoder_for
from temde.data.precomp import PrecompDataset
from temde.data.validate import validate_eval_inputs
from temde.data.vocab import Vocabulary, load_vocab
from temde.errors import InputError
from temde.evaluation import ensemble_similarities, format_metrics_table, retrieval_metrics
from temde.preflight import check_eval_options
from temde.retrieval import split_similarity
from temde.runtime import apply_threads

log = logging.getLogger(__name__)

CKPT_USAGE = "a checkpoint to evaluate: python -m temde.evaluate ckpt=<path> (or ckpt=[a,b] for an ensemble)"


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def evaluate_models(
    models: list[tuple[nn.Module, Vocabulary]],
    datamodule: PrecompDataModule,
    test_splits: dict[str, dict[str, Any]],
    img_block: int | None = None,
    txt_block: int | None = None,
    batch_size: int = 128,
    device: torch.device | str = "cpu",
    save_dir: Path | None = None,
    precision: str = "fp32",
) -> dict[str, dict[str, float]]:
    """Metrics per test-split label for one model or the average of several (an ensemble). Block sizes ``None``
    = each model's ``similarity_defaults``; ``precision``: fp32 | tf32 | bf16 scoring."""
    cache: dict[str, Tensor] = {}  # one matrix per split: COCO 5K and 1K share the testall matrix
    results = {}
    for label, spec in test_splits.items():
        split = spec["split"]
        if split not in cache:
            sims, images = [], None
            for model, vocab in models:
                dataset = PrecompDataset(datamodule.root, datamodule.name, split, vocab)
                tokens, lengths = dataset.caption_tokens()
                if images is None:  # the same for every ensemble member (only the vocabulary differs)
                    images = dataset.image_features()
                # a bar only on a terminal: redirected to a file, tqdm's redraws pile up into one unreadable line
                sims.append(split_similarity(model, images, tokens, lengths, img_block, txt_block,
                                             batch_size, device, precision, progress=sys.stderr.isatty()))
            cache[split] = ensemble_similarities(sims) if len(sims) > 1 else sims[0]
            if save_dir is not None:
                path = save_dir / f"sims_{split}.npy"
                tmp = save_dir / f".sims_{split}.tmp.npy"
                np.save(tmp, np.asarray(cache[split], dtype=np.float32))
                tmp.replace(path)
        results[label] = retrieval_metrics(cache[split], fold5=bool(spec.get("fold5", False)))
    return results


def write_metrics(results: dict[str, dict[str, float]], out_dir: Path, extra: dict[str, Any] | None = None) -> Path:
    """``metrics.json`` (written atomically) and the Recall table on stdout."""
    path = out_dir / "metrics.json"
    payload = {**results, **({"_meta": extra} if extra else {})}
    tmp = out_dir / ".metrics.json.tmp"
    tmp.write_text(json.dumps(payload, indent=2))
    tmp.replace(path)
    if results:
        print(format_metrics_table(results))
    return path


def checkpoint_paths(ckpt: Any) -> list[Path]:
    """``ckpt=`` as a list of existing files (one path or a list for an ensemble)."""
    if ckpt is None:
        raise InputError("ckpt", CKPT_USAGE)
    paths = [ckpt] if isinstance(ckpt, (str, Path)) else list(ckpt)
    if not paths or any(p is None or str(p) == "" for p in paths):
        raise InputError("ckpt", CKPT_USAGE)
    for p in paths:
        if not Path(p).is_file():
            raise InputError(p, "a checkpoint file (model_best.ckpt, a Lightning .ckpt or a converted one)")
    return [Path(p) for p in paths]


def evaluate(cfg: DictConfig, out_dir: str | Path) -> dict[str, dict[str, float]]:
    """Evaluate ``cfg.ckpt`` (one checkpoint or an ensemble) on ``cfg.data``'s test splits into ``out_dir``."""
    out_dir = Path(out_dir)
    paths = checkpoint_paths(cfg.ckpt)
    check_eval_options(cfg)
    apply_threads(cfg.get("threads", "auto"))
    out_dir.mkdir(parents=True, exist_ok=True)
    datamodule = hydra.utils.instantiate(cfg.data)
    explicit = load_vocab(cfg.vocab).word2idx if cfg.get("vocab") else None
    models, checks = [], []
    for path in paths:
        model, payload = load_model(path)
        tokenizer = caption_encoder_for(payload["model_config"], None)  # a transformer's own tokenizer
        if tokenizer is not None:
            models.append((model, tokenizer))
            checks.append((payload["model_config"], tokenizer.id_map()))
            continue
        word2idx = checkpoint_vocabulary(path, payload, explicit, cfg.get("vocab"))
        models.append((model, Vocabulary(word2idx)))
        checks.append((payload["model_config"], word2idx))
    validate_eval_inputs(datamodule, checks)  # every test split, before any encoding
    test_splits = OmegaConf.to_container(cfg.data.test_splits, resolve=True)
    results = evaluate_models(models, datamodule, test_splits, cfg.eval.img_block, cfg.eval.txt_block,
                              cfg.data.eval_batch_size, resolve_device(cfg.eval.device),
                              out_dir if cfg.save_sims else None, cfg.eval.get("precision", "fp32"))
    path = write_metrics(results, out_dir, {"checkpoints": [str(p) for p in paths], "data": cfg.data.name})
    print(f"wrote {path}" + (f" and sims_<split>.npy in {out_dir}" if cfg.save_sims else ""), flush=True)
    return results
