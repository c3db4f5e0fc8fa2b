"""Run directories: never shared by two runs, and a resumed run continues in the directory it started in.

Hydra names a run directory by the second it started; two runs started in the same second (a job array, a
sweep script) would write into one directory and corrupt each other's logs and checkpoints. The
``temde_run_dir`` resolver (used by ``hydra.run.dir``) claims the directory atomically and adds a suffix on a
collision; given ``ckpt_path=<run>/checkpoints/last.ckpt`` it returns ``<run>`` so the resume is a continuation.
"""

from __future__ import annotations

import os
from pathlib import Path

from omegaconf import OmegaConf

RESOLVER = "temde_run_dir"
SUBDIR_RESOLVER = "temde_hydra_subdir"
_claimed: dict[str, str] = {}  # one claim per base name and process (Hydra may resolve run.dir more than once)


def claim_run_dir(base: str | Path) -> Path:
    """Create and return ``base`` or, if another run has it already, ``base_1``, ``base_2``, ... (atomic mkdir)."""
    base = Path(base)
    base.parent.mkdir(parents=True, exist_ok=True)
    for n in range(10_000):
        path = base if n == 0 else base.with_name(f"{base.name}_{n}")
        try:
            os.mkdir(path)
        except FileExistsError:
            continue
        return path
    raise RuntimeError(f"{base}: could not claim a fresh run directory")


def checkpoint_run_dir(ckpt_path: str | Path | None) -> Path | None:
    """``<run>`` for ``<run>/checkpoints/<name>.ckpt`` (a checkpoint written by our training), else None."""
    if not ckpt_path:
        return None
    path = Path(ckpt_path)
    if path.parent.name == "checkpoints" and path.parent.parent.is_dir():
        return path.parent.parent
    return None


def resolve_run_dir(ckpt_path: str | None, base: str) -> str:
    """The run directory: the resumed run's own, or a freshly claimed one under ``base``."""
    resumed = checkpoint_run_dir(ckpt_path)
    if resumed is not None:
        return str(resumed)
    if base not in _claimed:
        _claimed[base] = str(claim_run_dir(base))
    return _claimed[base]


def hydra_subdir(ckpt_path: str | None, stamp: str) -> str:
    """Where Hydra saves the composed config: ``.hydra``, or ``.hydra/resume_<stamp>`` for a resume into the same
    directory, so the original run's config and overrides are kept."""
    return ".hydra" if checkpoint_run_dir(ckpt_path) is None else f".hydra/resume_{stamp}"


def register_resolvers() -> None:
    if not OmegaConf.has_resolver(RESOLVER):
        OmegaConf.register_new_resolver(RESOLVER, resolve_run_dir)
    if not OmegaConf.has_resolver(SUBDIR_RESOLVER):
        OmegaConf.register_new_resolver(SUBDIR_RESOLVER, hydra_subdir)
