"""Caption tokenization equal to the official ``nltk.word_tokenize(caption.lower())`` without downloaded data.

The official code (SCAN, SGRAF python3.6, VSRN) runs Punkt sentence splitting (needs the ``punkt_tab``
download, unavailable offline) and then NLTK's improved Treebank word tokenizer on each sentence. Captions are
almost always one sentence, where the two agree exactly. For several sentences we split on a period followed
by whitespace unless the word before it looks like an abbreviation or initial (contains another period, or is
a single letter): Punkt's own rule for words it does not know as abbreviations. This is our approximation,
tested against known SCAN tokenizations in ``tests/test_data.py``.
"""

from __future__ import annotations

import re

from nltk.tokenize import NLTKWordTokenizer

_WORD_TOKENIZER = NLTKWordTokenizer()
_WORD_THEN_SPACE = re.compile(r"\S+\s*")
# Common English abbreviations Punkt's English model knows; a period after them does not end a sentence.
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "no", "mt", "ft", "co", "inc"})


def lower_ascii(text: str) -> str:
    """Lowercase ASCII letters only, as the official ``bytes.lower()`` before decoding does."""
    return text.encode("utf-8").lower().decode("utf-8")


def _ends_sentence(word: str) -> bool:
    if not word.endswith(".") or word.endswith(".."):
        return False
    stem = word[:-1]
    return len(stem) > 1 and "." not in stem and stem.lower() not in _ABBREVIATIONS


def split_sentences(text: str) -> list[str]:
    """Split after "word." unless the word is an abbreviation or initial (see module docstring)."""
    sentences, current = [], ""
    for match in _WORD_THEN_SPACE.finditer(text):
        current += match.group(0)
        if _ends_sentence(match.group(0).strip()):
            sentences.append(current.strip())
            current = ""
    if current.strip():
        sentences.append(current.strip())
    return sentences


def tokenize(caption: str | bytes) -> list[str]:
    """Official SCAN tokenization of one caption (no <start>/<end>)."""
    if isinstance(caption, bytes):
        caption = caption.lower().decode("utf-8")
    else:
        caption = lower_ascii(caption)
    return [tok for sentence in split_sentences(caption.strip()) for tok in _WORD_TOKENIZER.tokenize(sentence)]
