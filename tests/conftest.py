"""Shared fixtures: a tiny synthetic SCAN-format dataset written once per test session."""

from __future__ import annotations

import gzip
import shutil
from pathlib import Path

import pytest
import torch

from temde.data.synthetic import SyntheticSpec, write_synthetic_dataset

REPO = Path(__file__).resolve().parents[1]
TEST_DATA = REPO / "tests" / "data"
REFERENCE = TEST_DATA / "reference"  # small public reference files (published result tables)

# Small enough for seconds-long CPU tests, same on-disk format as the real thing.
TINY_SPEC = SyntheticSpec(n_train=80, n_dev=20, n_test=20, n_testall=50, n_regions=12, feature_dim=48,
                          difficulty="easy", seed=3)

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture(scope="session")
def tiny_data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_synthetic_dataset(root, "synthetic_precomp", TINY_SPEC, progress=False)
    return root


@pytest.fixture(scope="session")
def reference_vocab_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The released SCAN / VSRN vocabularies (tests/data/vocab/*.gz, gzip only to keep the repository small),
    unpacked once per session: the loaders under test read the files exactly as released."""
    out = tmp_path_factory.mktemp("vocab")
    for packed in sorted((TEST_DATA / "vocab").glob("*.gz")):
        with gzip.open(packed, "rb") as src, open(out / packed.stem, "wb") as dst:
            shutil.copyfileobj(src, dst)
    return out


@pytest.fixture(scope="module")
def single_thread():
    """Tiny tensors: one intra-op thread avoids OpenMP spin-wait stalls on a busy 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
