"""Layer the shared third-party environment and this checkout into a checkout-local venv (used by `make venv`).

Two ``.pth`` files in the local venv's site-packages: one adds the shared environment's site-packages (processing
its own ``.pth`` files), one adds the checkout root, so ``import temde`` always resolves to the checkout that owns
the venv. Standard library only: it runs before anything is importable.
"""

from __future__ import annotations

import sys
import sysconfig
from pathlib import Path


def main(shared_venv: str, checkout: str) -> None:
    shared = Path(shared_venv).resolve()
    candidates = sorted(shared.glob("lib/python*/site-packages"))
    if not candidates:
        sys.exit(f"temde: error: {shared}: expected a virtual environment with lib/python*/site-packages")
    site_packages = Path(sysconfig.get_paths()["purelib"])
    site_packages.mkdir(parents=True, exist_ok=True)
    (site_packages / "_temde_shared.pth").write_text(f"import site; site.addsitedir({str(candidates[0])!r})\n")
    (site_packages / "_temde_checkout.pth").write_text(f"{Path(checkout).resolve()}\n")


if __name__ == "__main__":
    main(*sys.argv[1:3])
