"""Read the official VSRN vocabulary pickles (``vocab/<data_name>_vocab.pkl``) without running pickled code.

The files are Python-2 pickles (protocol 2) of ``__main__.Vocabulary`` with attributes ``word2idx``,
``idx2word`` and ``idx`` (docs/vsrn.md, "Vocabulary pickle"). A plain ``pickle.load`` would import whatever the stream names;
here :class:`RestrictedUnpickler` resolves exactly one global, ``Vocabulary`` (mapped to an inert stand-in
that only receives the attribute dict), plus a few plain builtin container types. Any other global, e.g.
``os.system`` or ``builtins.eval``, is refused before anything runs.
"""

from __future__ import annotations

import builtins
import io
import pickle
from pathlib import Path
from typing import Any

from temde.errors import InputError

# Module names under which the official scripts pickled their Vocabulary class (``__main__`` in the released
# files; ``vocab`` if pickled after ``from vocab import Vocabulary``).
VOCAB_MODULES = ("__main__", "vocab")
VOCAB_CLASS = "Vocabulary"
# Builtin types a well-formed vocabulary pickle may name (Python 2 ``__builtin__`` or Python 3 ``builtins``).
SAFE_BUILTINS = frozenset({"dict", "list", "tuple", "set", "frozenset", "str", "unicode", "bytes", "int",
                           "long", "float", "bool", "object"})


class _PickledVocabulary:
    """Inert target for ``__main__.Vocabulary``: accepts its state, has no behaviour."""

    def __setstate__(self, state: Any) -> None:
        self.state = state


class UnsafePickleError(InputError, pickle.UnpicklingError):
    """The pickle names a global outside the allow-list (refused before anything is resolved)."""


class RestrictedUnpickler(pickle.Unpickler):
    """Unpickler that resolves only ``Vocabulary`` and plain builtin types."""

    def __init__(self, file: io.BufferedIOBase, source: str) -> None:
        super().__init__(file, encoding="utf-8")  # Python-2 str -> text (the specials are ASCII)
        self.source = source

    def find_class(self, module: str, name: str) -> Any:
        if module in VOCAB_MODULES and name == VOCAB_CLASS:
            return _PickledVocabulary
        if module in ("builtins", "__builtin__") and name in SAFE_BUILTINS:
            return getattr(builtins, {"unicode": "str", "long": "int"}.get(name, name))
        raise UnsafePickleError(
            self.source, f"refusing to unpickle global {module}.{name}; a VSRN vocabulary pickle may only "
            f"reference {VOCAB_MODULES[0]}.{VOCAB_CLASS} and plain builtin types"
        )


def read_vsrn_vocab_pickle(path: str | Path) -> dict[str, int]:
    """word2idx of an official VSRN vocabulary pickle, validated (contiguous ids 0..N-1)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found (expected an official VSRN vocabulary pickle, vocab/<data_name>_vocab.pkl)")
    with open(path, "rb") as f:
        try:
            obj = RestrictedUnpickler(f, str(path)).load()
        except UnsafePickleError:
            raise
        except Exception as err:  # noqa: BLE001 - any parse failure is reported with the file name
            raise InputError(path, f"truncated or not a VSRN vocabulary pickle ({err.__class__.__name__}: {err})") from err
    state = getattr(obj, "state", None)
    if not isinstance(obj, _PickledVocabulary) or not isinstance(state, dict) or "word2idx" not in state:
        raise InputError(path, f"expected a pickled Vocabulary with a 'word2idx' dict, found {type(obj).__name__}")
    raw = state["word2idx"]
    if not isinstance(raw, dict):
        raise InputError(path, f"Vocabulary.word2idx is a {type(raw).__name__}, expected a dict")
    word2idx = {}
    for word, idx in raw.items():
        if isinstance(word, bytes):
            word = word.decode("utf-8")
        if not isinstance(word, str) or not isinstance(idx, int):
            raise InputError(path, f"Vocabulary.word2idx must map str -> int, found {word!r} -> {idx!r}")
        word2idx[word] = idx
    if sorted(word2idx.values()) != list(range(len(word2idx))):
        raise InputError(path, f"vocabulary ids are not the contiguous range 0..{len(word2idx) - 1}")
    return word2idx
