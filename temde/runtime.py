"""Process settings applied before any work: the number of CPU threads torch uses.

Why: torch starts one OpenMP thread per core. On a small machine a neighbour process that takes a core makes the
threads wait on each other (the previous release's two threads fell to 0.44 it/s beside a neighbour; with one
thread `make train` takes 4 min 14 s beside a CPU-bound neighbour vs 4 min 9 s idle, README). ``threads: auto``
picks one thread on a machine with at most two cores or when the load average says the cores are busy.
"""

from __future__ import annotations

import logging
import os

import torch

from temde.errors import InputError

log = logging.getLogger(__name__)


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def auto_threads(ncpu: int, load1: float, omp_env: str | None = None) -> int:
    """The ``auto`` rule: ``OMP_NUM_THREADS`` if set; 1 thread with <= 2 cores; else the cores the 1-minute load
    average leaves free (at least 1)."""
    if omp_env and omp_env.strip().isdigit() and int(omp_env) > 0:
        return int(omp_env)
    if ncpu <= 2:
        return 1
    return max(1, min(ncpu, int(ncpu - load1)))


def resolve_threads(setting: int | str | None) -> int:
    """``auto`` (see :func:`auto_threads`) or a positive integer; anything else is an :class:`InputError`."""
    if setting is None or str(setting) == "auto":
        return auto_threads(available_cpus(), os.getloadavg()[0], os.environ.get("OMP_NUM_THREADS"))
    if isinstance(setting, bool) or not str(setting).isdigit() or int(setting) < 1:
        raise InputError("threads", f"'auto' or a positive integer (got {setting!r})")
    return int(setting)


def apply_threads(setting: int | str | None) -> int:
    """Set torch's intra-op thread count for this process; returns it."""
    n = resolve_threads(setting)
    torch.set_num_threads(n)
    log.info("torch threads: %d (threads=%s, %d CPUs, load %.1f)", n, setting, available_cpus(), os.getloadavg()[0])
    return n
