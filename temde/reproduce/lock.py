"""One process trains a run at a time: an advisory lock per run directory, so reproductions can share an out-root.

Why: ``make reproduce`` decides "finished or not" per run directory. Two processes on the same out-root (two
tables sharing runs, or one process per GPU / CPU core splitting a table) would otherwise both train a missing run
into the same directory. The lock is ``flock`` on ``<out_root>/.<run key>.lock``: the kernel drops it when its
holder exits, however it exits, so a crashed process never leaves a run locked.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def lock_path(run_dir: Path) -> Path:
    return run_dir.parent / f".{run_dir.name}.lock"


@contextmanager
def run_lock(run_dir: Path, block: bool) -> Iterator[bool]:
    """Hold the run's lock inside the block; yields False (without waiting) when another process holds it and
    ``block`` is False."""
    path = lock_path(run_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
