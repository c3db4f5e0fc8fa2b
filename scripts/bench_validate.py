"""Rate of the up-front input check (``temde.data.validate.check_split``) on a synthetic split of a given size.

    python scripts/bench_validate.py --rows 2000 [--dir /tmp] [--regions 36 --dim 2048]

Writes ``bench_ims.npy`` (rows x regions x dim float32, one row per image) + captions into a temporary folder,
runs the full check (finite values chunk by chunk over the memory map) twice — the first read comes from disk
unless the file is still in the page cache, the second from the cache — and prints GB/s and the implied time at
Flickr30K and COCO size. The file is deleted afterwards.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from temde.data.precomp import CAPTIONS_PER_IMAGE
from temde.data.validate import check_split

# Bytes the check reads per dataset (float32, 36 x 2048 regions): train + dev + the evaluated test split.
SIZES_GB = {"Flickr30K (29000 + 5070 + 1000 rows)": 35070 * 36 * 2048 * 4 / 1e9,
            "COCO (113287 + 5000 + 5000 rows)": 123287 * 36 * 2048 * 4 / 1e9}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=2000)
    parser.add_argument("--regions", type=int, default=36)
    parser.add_argument("--dim", type=int, default=2048)
    parser.add_argument("--dir", type=Path, default=None, help="where to write the temporary split")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=args.dir) as tmp:
        folder = Path(tmp) / "bench_precomp"
        folder.mkdir()
        feats = np.lib.format.open_memmap(folder / "bench_ims.npy", mode="w+", dtype=np.float32,
                                          shape=(args.rows, args.regions, args.dim))
        rng = np.random.default_rng(0)
        for start in range(0, args.rows, 256):
            feats[start:start + 256] = rng.standard_normal(feats[start:start + 256].shape, dtype=np.float32)
        feats.flush()
        del feats
        (folder / "bench_caps.txt").write_text("a caption\n" * CAPTIONS_PER_IMAGE * args.rows)
        for label in ("first read", "cached read"):
            started = time.perf_counter()
            info = check_split(tmp, "bench_precomp", "bench", values=True)
            seconds = time.perf_counter() - started
            rate = info.gigabytes / seconds
            implied = ", ".join(f"{name}: {size / rate:.0f} s" for name, size in SIZES_GB.items())
            print(f"{label}: {info.gigabytes:.2f} GB in {seconds:.2f} s = {rate:.2f} GB/s -> {implied}")
    print("load average:", Path("/proc/loadavg").read_text().strip() if Path("/proc/loadavg").exists() else "?")


if __name__ == "__main__":
    main()
