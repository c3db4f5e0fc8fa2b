"""LightningDataModule over SCAN precomp splits (f30k_precomp, coco_precomp, synthetic_precomp)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, Dataset, Sampler

from temde.data.hf_tokenizer import HFTokenizer
from temde.data.precomp import CaptionSet, ImageSet, PrecompDataset, collate, collate_captions, collate_images
from temde.data.synthetic import SyntheticSpec, ensure_synthetic_dataset
from temde.data.vocab import Vocabulary, build_vocab, load_vocab

log = logging.getLogger(__name__)

# The official loaders truncate the dev split to its first 5000 captions (1000 images).
DEV_MAX_CAPTIONS = 5000


class PrecompDataModule(pl.LightningDataModule):
    """Train / dev / test loaders; the vocabulary is loaded (or built once from train captions and saved)."""

    def __init__(
        self,
        root: str,
        name: str,
        batch_size: int = 128,
        eval_batch_size: int = 100,
        num_workers: int = 0,
        vocab_path: str | None = None,
        train_split: str = "train",
        val_split: str = "dev",
        val_max_captions: int | None = DEV_MAX_CAPTIONS,
        test_splits: dict[str, dict[str, Any]] | None = None,
        sort_by_length: bool = True,
        synthetic: dict[str, Any] | None = None,
        seed: int = 0,
        validate: str = "full",
        tokenizer: str | None = None,
    ) -> None:
        super().__init__()
        self.root = Path(root)
        self.name = name
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size
        self.num_workers = num_workers
        self.vocab_path = Path(vocab_path) if vocab_path else self.root / "vocab" / f"{name}_vocab.json"
        self.train_split = train_split
        self.val_split = val_split
        self.val_max_captions = val_max_captions
        # {label: {"split": str, "fold5": bool}}, e.g. coco: {"1k": {split: testall, fold5: true}, "5k": ...}
        self.test_splits = test_splits or {"test": {"split": "test", "fold5": False}}
        self.sort_by_length = sort_by_length
        self.synthetic = SyntheticSpec(**synthetic) if synthetic is not None else None
        self.seed = seed  # shuffling order depends only on (seed, epoch)
        self.validate = validate  # up-front input check (temde.data.validate): full | shapes
        # A pretrained model's own tokenizer (text_encoder=transformer) replaces the SCAN vocabulary.
        self.tokenizer = tokenizer
        self._vocab: Vocabulary | HFTokenizer | None = None
        self._prepared = False

    def prepare_data(self) -> None:
        """Generate (or check the manifest of) the synthetic dataset, once per process: a run reaches this from
        the vocabulary, the input check and Lightning's fit, and each check re-hashes ~0.8 GB."""
        if self.synthetic is not None and not self._prepared:
            ensure_synthetic_dataset(self.root, self.name, self.synthetic)
        self._prepared = True

    @property
    def vocab(self) -> Vocabulary | HFTokenizer:
        if self._vocab is None:
            self.prepare_data()
            if self.tokenizer:
                self._vocab = HFTokenizer(self.tokenizer)
            elif self.vocab_path.is_file():
                self._vocab = load_vocab(self.vocab_path)
            else:
                log.warning("no vocabulary at %s: building one from %s captions", self.vocab_path, self.train_split)
                captions = PrecompDataset(self.root, self.name, self.train_split, _BOOTSTRAP_VOCAB).captions
                self._vocab = build_vocab(captions)
                self._vocab.save_json(self.vocab_path)
        return self._vocab

    def dataset(self, split: str, max_captions: int | None = None) -> PrecompDataset:
        return PrecompDataset(self.root, self.name, split, self.vocab, max_captions)

    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit"):
            self.train_set = self.dataset(self.train_split)
            self.val_set = self.dataset(self.val_split, self.val_max_captions)

    def _loader(self, dataset: Dataset, batch_size: int, collate_fn: Callable, sampler=None) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            num_workers=self.num_workers,
            collate_fn=collate_fn,
            persistent_workers=self.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        sampler = EpochShuffleSampler(len(self.train_set), self.seed)
        return self._loader(self.train_set, self.batch_size,
                            partial(collate, sort_by_length=self.sort_by_length), sampler)

    def eval_dataloaders(self, split: PrecompDataset) -> list[DataLoader]:
        """[distinct images, captions] loaders of a split: each item is encoded once."""
        return [
            self._loader(ImageSet(split), self.eval_batch_size, collate_images),
            self._loader(CaptionSet(split), self.eval_batch_size, collate_captions),
        ]

    def val_dataloader(self) -> list[DataLoader]:
        return self.eval_dataloaders(self.val_set)


class EpochShuffleSampler(Sampler[int]):
    """Random permutation that depends only on (seed, epoch), so resumed runs see the same batches.

    Lightning calls ``set_epoch`` before every epoch on samplers that have it.
    """

    def __init__(self, n: int, seed: int = 0) -> None:
        self.n, self.seed, self.epoch = n, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return self.n

    def __iter__(self) -> Iterator[int]:
        generator = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=generator).tolist())


# Placeholder vocabulary used only to read the raw train captions before a real vocabulary exists.
_BOOTSTRAP_VOCAB = Vocabulary({"<pad>": 0, "<start>": 1, "<end>": 2, "<unk>": 3})
