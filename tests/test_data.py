"""Data layer: tokenizer vs SCAN tokenizations, vocab files, precomp layouts, collate, errors, synthetic world."""

from __future__ import annotations

import json
import re
from collections import Counter

import numpy as np
import pytest
import torch

from temde.data.precomp import DataError, PrecompDataset, collate
from temde.data.tokenize import tokenize
from temde.data.vocab import MIN_WORD_COUNT, Vocabulary, build_vocab, load_json_vocab, load_vocab
from temde.errors import InputError
from tests.conftest import TINY_SPEC


# Known outputs of the official nltk.word_tokenize(caption.lower()) (Punkt + NLTK Treebank) on SCAN captions.
@pytest.mark.parametrize(
    ("caption", "tokens"),
    [
        ("A man's dog jumps over a log.", ["a", "man", "'s", "dog", "jumps", "over", "a", "log", "."]),
        ("Two men, one in red, are playing.", ["two", "men", ",", "one", "in", "red", ",", "are", "playing", "."]),
        ('A sign reads "STOP".', ["a", "sign", "reads", "``", "stop", "''", "."]),
        ("A dog can't swim", ["a", "dog", "ca", "n't", "swim"]),
        ("A boy in a T-shirt (blue) & jeans", ["a", "boy", "in", "a", "t-shirt", "(", "blue", ")", "&", "jeans"]),
        ("People at the U.S. embassy. They wait.", ["people", "at", "the", "u.s.", "embassy", ".", "they", "wait", "."]),
        ("Mr. Smith sits on St. Mark's steps", ["mr.", "smith", "sits", "on", "st.", "mark", "'s", "steps"]),
        (b"A Caf\xc3\xa9 in PARIS .", ["a", "café", "in", "paris", "."]),
    ],
)
def test_tokenize_matches_scan(caption, tokens):
    assert tokenize(caption) == tokens


def test_tokenize_lowercases_ascii_only():
    # The official code lowercases bytes before decoding: non-ASCII capitals are kept.
    assert tokenize("ÉCOLE Dog") == ["École", "dog"]


def test_f30k_vocab_ids_match_file(reference_vocab_dir):
    F30K_VOCAB = reference_vocab_dir / "f30k_precomp_vocab.json"
    vocab = load_json_vocab(F30K_VOCAB)
    raw = json.loads(F30K_VOCAB.read_text())
    assert len(vocab) == 8481 == raw["idx"]
    assert vocab.word2idx == raw["word2idx"]
    assert all(vocab.idx2word[int(i)] == w for i, w in raw["idx2word"].items())
    assert [vocab(t) for t in ("<pad>", "<start>", "<end>", "<unk>")] == [0, 1, 2, 3]
    assert (vocab("."), vocab(","), vocab("'s"), vocab("``")) == (348, 4313, 515, 614)
    assert vocab("zzzz-not-a-word") == 3
    # Tokens our tokenizer produces for mid-caption sentence ends / abbreviations are SCAN's.
    assert "ca" in vocab and "n't" in vocab and "mr." in vocab and "dog." not in vocab


def test_coco_vocab_size_and_vsrn_style_load(reference_vocab_dir):
    assert len(load_vocab(reference_vocab_dir / "coco_precomp_vocab.json")) == 11353


def test_encode_adds_start_end(reference_vocab_dir):
    vocab = load_json_vocab(reference_vocab_dir / "f30k_precomp_vocab.json")
    ids = vocab.encode("A dog .")
    assert ids[0] == 1 and ids[-1] == 2 and ids[1:-1] == [vocab("a"), vocab("dog"), vocab(".")]


def test_build_vocab_threshold_order_and_roundtrip(tmp_path):
    captions = ["a dog runs"] * 4 + ["a cat"] * 3 + ["the dog"]
    vocab = build_vocab(captions)
    # counts: a=7, dog=5, runs=4, cat=3 (<4), the=1 (<4)
    assert list(vocab.word2idx) == ["<pad>", "<start>", "<end>", "<unk>", "a", "dog", "runs"]
    path = vocab.save_json(tmp_path / "v.json")
    raw = json.loads(path.read_text())
    assert raw["idx"] == 7 and raw["idx2word"]["5"] == "dog"
    assert load_json_vocab(path).word2idx == vocab.word2idx


def test_bad_vocab_file_errors(tmp_path):
    bad = tmp_path / "broken.json"
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="broken.json.*SCAN vocabulary JSON"):
        load_json_vocab(bad)
    with pytest.raises(InputError, match="missing.json.*not found"):
        load_json_vocab(tmp_path / "missing.json")
    with pytest.raises(ValueError, match="special tokens"):
        Vocabulary({"a": 0})


def _write_split(root, name, split, n_rows, n_caps, shape_tail=(3, 4), repeat=1):
    d = root / name
    d.mkdir(parents=True, exist_ok=True)
    feats = np.arange(n_rows * np.prod(shape_tail), dtype=np.float32).reshape(n_rows, *shape_tail)
    feats = feats[np.arange(n_rows) // repeat * repeat]  # repeat=5: one row per caption, rows 5k..5k+4 equal
    np.save(d / f"{split}_ims.npy", feats)
    (d / f"{split}_caps.txt").write_text("".join(f"caption number {i}\n" for i in range(n_caps)))
    return feats


def test_precomp_layouts_and_truncation(tmp_path):
    vocab = build_vocab(["caption number"] * 4)
    per_image = _write_split(tmp_path, "x", "test", 4, 20)
    per_caption = _write_split(tmp_path, "x", "dev", 20, 20, repeat=5)
    ds = PrecompDataset(tmp_path, "x", "test", vocab)
    assert ds.im_div == 5 and len(ds) == 20 and ds.n_images == 4
    image, tokens, cap_id, img_id = ds[13]
    assert torch.equal(image, torch.from_numpy(per_image[2])) and (cap_id, img_id) == (13, 2)
    assert tokens.tolist() == [1, vocab("caption"), vocab("number"), 3, 2]
    assert torch.equal(ds.image_features(), torch.from_numpy(per_image))
    dev = PrecompDataset(tmp_path, "x", "dev", vocab, max_captions=10)
    assert dev.im_div == 1 and len(dev) == 10 and dev.n_images == 2
    assert torch.equal(dev[7][0], torch.from_numpy(per_caption[7])) and torch.equal(dev[7][0], dev[5][0])
    # distinct images of a one-row-per-caption file are rows 0, 5, 10, ...
    assert torch.equal(dev.image_features(), torch.from_numpy(per_caption[[0, 5]]))
    assert isinstance(ds.features, np.memmap)  # memory-mapped, never read whole


def test_missing_features_names_the_file(tmp_path):
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "train_caps.txt").write_text("a\n" * 5)
    with pytest.raises(DataError) as err:
        PrecompDataset(tmp_path, "x", "train", build_vocab([]))
    message = str(err.value)
    assert str(tmp_path / "x" / "train_ims.npy") in message and "data/README.md" in message
    assert "\n" not in message


def test_missing_directory_and_count_mismatch_and_bad_shape(tmp_path):
    vocab = build_vocab([])
    with pytest.raises(DataError, match="does not exist"):
        PrecompDataset(tmp_path, "nope", "train", vocab)
    _write_split(tmp_path, "x", "train", 4, 19)
    with pytest.raises(DataError, match=r"19 captions.*4 feature rows.*expected 5 captions per row"):
        PrecompDataset(tmp_path, "x", "train", vocab)
    d = tmp_path / "y"
    d.mkdir()
    np.save(d / "train_ims.npy", np.zeros((5, 7), dtype=np.float32))
    (d / "train_caps.txt").write_text("a\n" * 5)
    with pytest.raises(DataError, match=r"train_ims.npy: has shape \(5, 7\).*expected float \(N, R, F\)"):
        PrecompDataset(tmp_path, "y", "train", vocab)
    (d / "train_ims.npy").write_bytes(b"garbage")
    with pytest.raises(DataError, match="not a readable .npy"):
        PrecompDataset(tmp_path, "y", "train", vocab)


def test_collate_sorts_and_keeps_pairs_aligned():
    samples = [(torch.full((2, 3), float(i)), torch.arange(1, 3 + i), i, i // 5) for i in range(4)]
    batch = collate(samples)
    assert batch["lengths"].tolist() == [5, 4, 3, 2]
    assert batch["caption_ids"].tolist() == [3, 2, 1, 0]
    # each image still sits next to its own caption
    assert batch["images"][:, 0, 0].tolist() == [3.0, 2.0, 1.0, 0.0]
    assert batch["tokens"][3].tolist() == [1, 2, 0, 0, 0] and batch["regions_mask"].all()
    unsorted = collate(samples, sort_by_length=False)
    assert unsorted["caption_ids"].tolist() == [0, 1, 2, 3]


def test_synthetic_dataset_is_in_scan_precomp_format(tiny_data_root):
    d = tiny_data_root / "synthetic_precomp"
    for split, n in TINY_SPEC.splits().items():
        feats = np.load(d / f"{split}_ims.npy", mmap_mode="r")
        assert feats.shape == (n, TINY_SPEC.n_regions, TINY_SPEC.feature_dim) and feats.dtype == np.float32
        assert len((d / f"{split}_caps.txt").read_text().splitlines()) == 5 * n
    vocab = load_json_vocab(tiny_data_root / "vocab" / "synthetic_precomp_vocab.json")
    counts = Counter(w for c in (d / "train_caps.txt").read_text().splitlines() for w in re.findall(r"[a-z]+", c.lower()))
    frequent = {w for w, n in counts.items() if n >= MIN_WORD_COUNT}
    assert len(frequent) > 20 and all(w in vocab for w in frequent)  # SCAN's rule: words seen >= 4 times ...
    assert not any(w in vocab for w, n in counts.items() if n < MIN_WORD_COUNT)  # ... and only those
    # determinism, reuse, manifests and every designed property: tests/test_synthetic.py
