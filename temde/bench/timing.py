"""How every benchmark measures: interleaved repetitions, min/median/max, load average before and after.

A figure taken while other processes compete for the CPU measures the scheduler as much as the code, and
penalises some strategies more than others (many small kernels suffer more than one large GEMM). So every
benchmark here runs the compared cases in interleaved rounds (load hits all cases alike), repeats each at least
three times, stores min/median/max and the 1-minute load average before and after, and marks the result
``"publishable": false`` when either load average exceeds :data:`MAX_PUBLISHABLE_LOAD`: such a figure is never
copied to the README.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

MAX_PUBLISHABLE_LOAD = 1.5  # 1-min load average above which a CPU figure is flagged (2-core reference machine)
MIN_REPEATS = 3


def load_average() -> list[float] | None:
    """The 1/5/15-minute load averages, or None where the OS has none."""
    return list(os.getloadavg()) if hasattr(os, "getloadavg") else None


def publishable(before: list[float] | None, after: list[float] | None, device_type: str = "cpu",
                own_threads: int = 0) -> bool:
    """A CPU figure is publishable only when the machine was idle: 1-min load <= :data:`MAX_PUBLISHABLE_LOAD` before.

    The load average *after* includes the benchmark's own busy threads (a 2-thread run lifts it towards 2 by
    itself), so only the excess over ``own_threads`` counts there: another process joining mid-run still flags it.
    """
    if device_type != "cpu":
        return True
    if before is None or after is None:
        return False
    return before[0] <= MAX_PUBLISHABLE_LOAD and after[0] <= MAX_PUBLISHABLE_LOAD + own_threads


def sync(device: torch.device | str) -> None:
    if torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def summarize(seconds: list[float]) -> dict[str, Any]:
    """min / median / max (seconds) and every run."""
    return {"min_s": min(seconds), "median_s": statistics.median(seconds), "max_s": max(seconds),
            "runs_s": [round(s, 6) for s in seconds]}


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int = MIN_REPEATS, warmup: int = 1,
                device: torch.device | str = "cpu", deadline: float | None = None,
                on_run: Callable[[str, int, float], None] | None = None) -> tuple[dict[str, dict], dict[str, Any]]:
    """Time every function ``repeats`` times in rounds (round r runs each once, in order).

    Returns ({name: :func:`summarize` + ``"result"`` of the last call}, {"rounds": done, "cut_short": bool}).
    ``deadline`` (a ``time.monotonic()`` value) stops after the round in progress once passed; at least one
    round always completes. ``on_run(name, round, seconds)`` is called after each run (progress lines)."""
    results: dict[str, Any] = {}
    for _ in range(warmup):
        for name, fn in fns.items():
            results[name] = fn()
        sync(device)
    times: dict[str, list[float]] = {k: [] for k in fns}
    rounds, cut = 0, False
    for r in range(repeats):
        if r > 0 and deadline is not None and time.monotonic() > deadline:
            cut = True
            break
        for name, fn in fns.items():
            sync(device)
            t0 = time.perf_counter()
            results[name] = fn()
            sync(device)
            times[name].append(time.perf_counter() - t0)
            if on_run is not None:
                on_run(name, r, times[name][-1])
        rounds += 1
    out = {name: {**summarize(times[name]), "result": results.get(name)} for name in fns}
    return out, {"rounds": rounds, "cut_short": cut}


class PeakMemory:
    """Peak extra memory of a code block: CUDA allocator peak on GPU, sampled RSS (every 5 ms) on CPU."""

    def __init__(self, device: torch.device | str) -> None:
        self.device = torch.device(device)
        self.peak_bytes = 0

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    def __enter__(self) -> PeakMemory:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            torch.cuda.reset_peak_memory_stats(self.device)
            self._base = torch.cuda.memory_allocated(self.device)
        else:
            self._base = self._max = self._rss()
            self._stop = threading.Event()
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.is_set():
            self._max = max(self._max, self._rss())
            time.sleep(0.005)

    def __exit__(self, *exc: object) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
            self.peak_bytes = torch.cuda.max_memory_allocated(self.device) - self._base
        else:
            self._stop.set()
            self._thread.join()
            self.peak_bytes = max(self._max, self._rss()) - self._base


def matmul_peak(device: torch.device | str, size: int = 4096, reps: int = 5) -> float:
    """FLOP/s of a large fp32 matmul (best of ``reps``): the device's practical GEMM peak."""
    a = torch.randn(size, size, device=device)
    b = torch.randn(size, size, device=device)
    for _ in range(2):
        a @ b
    sync(device)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        a @ b
        sync(device)
        best = min(best, time.perf_counter() - t)
    return 2 * size**3 / best


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_name(device: torch.device | str) -> str:
    device = torch.device(device)
    return torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()


def environment(device: torch.device | str) -> dict[str, Any]:
    """What a reader needs to compare a figure: device, threads, torch version, core count."""
    device = torch.device(device)
    return {"device_type": device.type, "device": device_name(device), "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(), "cpu_count": os.cpu_count()}


def write_json(path: Path, payload: dict[str, Any]) -> Path:
    """Atomic write (temporary name, then rename): a killed run never leaves half a JSON."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(json.dumps(payload, indent=1, default=str) + "\n")
    os.replace(tmp, path)
    return path


def write_text(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
