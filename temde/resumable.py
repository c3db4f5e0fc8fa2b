"""Resumable, atomically published ``.npy`` outputs (feature extraction): never half-written, never zero-filled.

Why: extracting features for 100k images takes hours and gets interrupted. Rows are written into memory-mapped
*partial* files (``<out>.partial``) next to a progress marker; only when every row is on disk are the partial
files renamed to their final names, after a manifest (``<out>.manifest.json``: settings, shapes, byte sizes)
was written. On a re-run:

- a final output is reused only if its manifest matches the settings and every file has exactly the size the
  manifest gives (a truncated or foreign file is refused, never extended: numpy's ``r+`` memmap would silently
  zero-fill a short file);
- partial files continue from the marker when settings and sizes match; a truncated or foreign partial file is
  rebuilt from row 0; other settings are refused (``--overwrite`` starts over).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

MARKER_SUFFIX = ".progress.json"
MANIFEST_SUFFIX = ".manifest.json"
PARTIAL_SUFFIX = ".partial"


class OutputError(ValueError):
    """An existing output that cannot be reused; the message names the file and what to do."""


def marker_path(out_path: str | Path) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + MARKER_SUFFIX)


def manifest_path(out_path: str | Path) -> Path:
    out_path = Path(out_path)
    return out_path.with_name(out_path.name + MANIFEST_SUFFIX)


def partial_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + PARTIAL_SUFFIX)


def write_json_atomic(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(payload, indent=1))
    os.replace(tmp, path)


def npy_state(path: Path) -> tuple[tuple[int, ...], str, bool] | None:
    """(shape, dtype, complete) from a ``.npy`` header; complete = the file holds every byte the header
    promises. ``None`` when the header is unreadable."""
    try:
        with open(path, "rb") as f:
            version = np.lib.format.read_magic(f)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(f)
            offset = f.tell()
    except (OSError, ValueError, EOFError):
        return None
    expected = offset + int(np.prod(shape)) * dtype.itemsize
    return tuple(shape), dtype.str, os.path.getsize(path) == expected and not fortran


class ResumableArrays:
    """Row-aligned output arrays (name -> (final path, shape, dtype)) filled batch by batch.

    ``arrays[first]`` names the output (marker and manifest sit beside it). Use :attr:`start`, :meth:`open`,
    :meth:`advance` after every flushed batch, :meth:`publish` at the end.
    """

    def __init__(self, arrays: dict[str, tuple[Path, tuple[int, ...], str]], config: dict[str, Any],
                 overwrite: bool = False) -> None:
        self.arrays = {k: (Path(p), tuple(int(x) for x in shape), np.dtype(dt).str)
                       for k, (p, shape, dt) in arrays.items()}
        self.out = next(iter(self.arrays.values()))[0]
        self.n_rows = next(iter(self.arrays.values()))[1][0]
        self.config = {**config, "arrays": {k: {"file": p.name, "shape": list(s), "dtype": d}
                                            for k, (p, s, d) in self.arrays.items()}}
        self.marker, self.manifest = marker_path(self.out), manifest_path(self.out)
        self.complete = False
        self.start = 0
        if overwrite:
            self._remove_all()
        elif any(p.exists() for p, _, _ in self.arrays.values()):
            self._check_final()
            self.complete = True
        else:
            self.start = self._resumable_rows()

    def _remove_all(self) -> None:
        for path, _, _ in self.arrays.values():
            for p in (path, partial_path(path)):
                p.unlink(missing_ok=True)
        self.marker.unlink(missing_ok=True)
        self.manifest.unlink(missing_ok=True)

    def _check_final(self) -> None:
        if not self.manifest.is_file():
            raise OutputError(f"{self.out} exists without its manifest {self.manifest.name} (not written by this "
                              "tool, or interrupted while publishing): pass --overwrite to rebuild it")
        old = json.loads(self.manifest.read_text())
        diff = {k: (old.get(k), v) for k, v in self.config.items() if old.get(k) != v}
        if diff:
            raise OutputError(f"{self.out}: settings differ from {self.manifest.name} (old, new): {diff}; "
                              "pass --overwrite to rebuild")
        for path, shape, dtype in self.arrays.values():
            state = npy_state(path)
            if state is None or state != (shape, dtype, True):
                raise OutputError(f"{path}: truncated or not the array its manifest describes ({shape} {dtype}); "
                                  "pass --overwrite to rebuild it")

    def _resumable_rows(self) -> int:
        if not self.marker.is_file():
            return 0
        try:
            state = json.loads(self.marker.read_text())
        except json.JSONDecodeError:
            return 0
        if state.get("config") != self.config:
            raise OutputError(f"{self.out}: cannot resume, settings differ from {self.marker.name} (old, new): "
                              f"{ {k: (state.get('config', {}).get(k), v) for k, v in self.config.items()} }; "
                              "pass --overwrite to start over")
        for path, shape, dtype in self.arrays.values():
            if npy_state(partial_path(path)) != (shape, dtype, True):
                return 0  # a truncated or foreign partial file: rebuild from row 0, never zero-fill it
        return max(0, min(int(state.get("done", 0)), self.n_rows))

    def open(self) -> dict[str, np.memmap]:
        """Memory-mapped partial arrays (created at full size when starting from row 0)."""
        out = {}
        for name, (path, shape, dtype) in self.arrays.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            mode = "r+" if self.start > 0 else "w+"
            kwargs = {} if mode == "r+" else {"dtype": dtype, "shape": shape}
            out[name] = np.lib.format.open_memmap(partial_path(path), mode=mode, **kwargs)
        if self.start == 0:
            self.advance(out, 0)
        return out

    def advance(self, arrays: dict[str, np.memmap], done: int) -> None:
        """Flush the rows to disk, then record that rows ``[0, done)`` are written."""
        for a in arrays.values():
            a.flush()
        write_json_atomic(self.marker, {"config": self.config, "done": done})

    def publish(self, arrays: dict[str, np.memmap]) -> None:
        """Every row written: manifest first, then rename each partial file to its final name."""
        for a in arrays.values():
            a.flush()
        arrays.clear()
        write_json_atomic(self.manifest, {**self.config, "complete": True})
        for path, _, _ in self.arrays.values():
            os.replace(partial_path(path), path)
        self.marker.unlink(missing_ok=True)
        self.complete = True
