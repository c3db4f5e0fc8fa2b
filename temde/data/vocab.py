"""Word vocabularies in the SCAN JSON format (the ids index the embedding rows of official checkpoints).

VSRN's pickled vocabularies are read by :mod:`temde.data.vsrn_vocab` (restricted unpickler, word2idx only) and
wrapped here, so the dependency runs one way: vocab -> vsrn_vocab.

Build one for your own data (bring-your-own-data, docs/byod.md)::

    python -m temde.data.vocab build data/own_precomp/train_caps.txt --out data/vocab/own_precomp_vocab.json
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from temde.data.tokenize import tokenize
from temde.data.vsrn_vocab import read_vsrn_vocab_pickle
from temde.errors import InputError

# Special tokens and their fixed ids (SCAN/SGRAF/VSRN vocab.py).
PAD, START, END, UNK = "<pad>", "<start>", "<end>", "<unk>"
SPECIAL_TOKENS = (PAD, START, END, UNK)
# Minimum train-caption count for a word to enter a built vocabulary (official vocab.py threshold=4).
MIN_WORD_COUNT = 4


class Vocabulary:
    """word <-> id map; unknown words map to ``<unk>``."""

    def __init__(self, word2idx: dict[str, int]) -> None:
        self.word2idx = dict(word2idx)
        self.idx2word = {i: w for w, i in self.word2idx.items()}
        if len(self.idx2word) != len(self.word2idx):
            raise ValueError("vocabulary maps two words to the same id")
        missing = [t for t in SPECIAL_TOKENS if t not in self.word2idx]
        if missing:
            raise ValueError(f"vocabulary lacks the special tokens {missing}")
        self.unk_id = self.word2idx[UNK]

    def __call__(self, word: str) -> int:
        return self.word2idx.get(word, self.unk_id)

    def __len__(self) -> int:
        return len(self.word2idx)

    def __contains__(self, word: str) -> bool:
        return word in self.word2idx

    def encode(self, caption: str | bytes) -> list[int]:
        """Token ids of one caption with ``<start>``/``<end>`` around it, as the official loaders build them."""
        return [self.word2idx[START], *(self(t) for t in tokenize(caption)), self.word2idx[END]]

    def save_json(self, path: str | Path) -> Path:
        """Write the SCAN JSON layout ``{"word2idx", "idx2word" (string keys), "idx"}``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "word2idx": self.word2idx,
            "idx2word": {str(i): w for i, w in sorted(self.idx2word.items())},
            "idx": len(self),
        }
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(payload), encoding="utf-8")
        tmp.replace(path)  # atomic: a concurrent reader never sees half a vocabulary
        return path


def load_json_vocab(path: str | Path) -> Vocabulary:
    """Read a SCAN JSON vocabulary exactly (ids as stored)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "vocabulary file not found: put the SCAN vocab JSON there (see data/README.md) "
                               "or leave data.vocab_path empty to build one from the train captions")
    try:
        payload = json.loads(path.read_text(encoding="utf-8"))
        word2idx = {str(w): _int_id(i) for w, i in payload["word2idx"].items()}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as err:
        raise InputError(
            path, f"is not a SCAN vocabulary JSON (expected {{'word2idx': {{word: id}}, 'idx2word', 'idx'}}): {err}"
        ) from err
    return vocabulary_from(word2idx, path)


def _int_id(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"ids must be integers, found {value!r}")
    return value


def vocabulary_from(word2idx: dict[str, int], path: str | Path) -> Vocabulary:
    """A :class:`Vocabulary` whose problems (duplicate ids, missing specials) are reported against ``path``."""
    try:
        return Vocabulary(word2idx)
    except ValueError as err:
        raise InputError(path, f"{err}; expected a SCAN-style vocabulary") from err


def load_vocab(path: str | Path) -> Vocabulary:
    """Load a vocabulary by file type: SCAN ``.json`` or VSRN ``.pkl`` (restricted unpickler)."""
    path = Path(path)
    if path.suffix == ".pkl":
        return load_vsrn_vocab(path)
    return load_json_vocab(path)


def load_vsrn_vocab(path: str | Path) -> Vocabulary:
    """Official VSRN vocabulary pickle -> :class:`Vocabulary` (same ids)."""
    return vocabulary_from(read_vsrn_vocab_pickle(path), path)


def build_vocab(captions: Iterable[str | bytes], min_count: int = MIN_WORD_COUNT) -> Vocabulary:
    """Vocabulary of words seen at least ``min_count`` times, specials first.

    Unlike the official builder (Counter iteration order), words are ordered by decreasing count then
    alphabetically, so the same captions always give the same ids.
    """
    counts = Counter(tok for caption in captions for tok in tokenize(caption))
    words = sorted((w for w, c in counts.items() if c >= min_count and w not in SPECIAL_TOKENS),
                   key=lambda w: (-counts[w], w))
    return Vocabulary({w: i for i, w in enumerate([*SPECIAL_TOKENS, *words])})


def main(argv: list[str] | None = None) -> int:
    """``python -m temde.data.vocab build <caps.txt>... --out <vocab.json> [--min-count 4]``."""
    parser = argparse.ArgumentParser(prog="python -m temde.data.vocab", description="SCAN JSON vocabularies")
    sub = parser.add_subparsers(dest="command", required=True)
    build = sub.add_parser("build", help="words seen >= --min-count times in the caption files (train captions)")
    build.add_argument("captions", nargs="+", help="<split>_caps.txt files, one caption per line")
    build.add_argument("--out", required=True, help="output JSON, e.g. data/vocab/<name>_vocab.json")
    build.add_argument("--min-count", type=int, default=MIN_WORD_COUNT, help="official threshold: 4")
    args = parser.parse_args(argv)
    captions: list[bytes] = []
    for name in args.captions:
        path = Path(name)
        if not path.is_file():
            print(f"temde: error: {path}: caption file not found (expected one caption per line)", file=sys.stderr)
            return 2
        captions += [line.strip() for line in path.read_bytes().splitlines() if line.strip()]
    try:
        vocab = build_vocab(captions, args.min_count)
    except UnicodeDecodeError as err:
        print(f"temde: error: {args.captions}: captions must be UTF-8 ({err})", file=sys.stderr)
        return 2
    vocab.save_json(args.out)
    print(f"{args.out}: {len(vocab)} words ({len(captions)} captions, min count {args.min_count})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
