"""Hyper-parameter sweep: ``python scripts/sweep.py sweeps/<name>.yaml [--count N] [--offline] [-- overrides]``.

A thin shell over :func:`temde.sweeps.main` (wandb sweep with a login, else the Optuna/grid Hydra multirun).
"""

import sys

from temde.sweeps import main

if __name__ == "__main__":
    sys.exit(main())
