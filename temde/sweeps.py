"""Hyper-parameter sweeps: ``make sweep SWEEP=temde_bayes [ARGS="--count 20"]`` (``scripts/sweep.py`` is the shell).

With a wandb login (``wandb login`` / WANDB_API_KEY) the sweep file ``sweeps/<name>.yaml`` is created on
the server and an agent runs ``--count`` trials (each one ``python -m temde.train <param>=<value> ...``).
Without one, or with ``--offline``, the same search space runs as a Hydra multirun of
``configs/hparams_search/<name>.yaml`` (Optuna or grid), logged by wandb in offline mode under each trial's
directory (``wandb sync`` uploads them later). Extra Hydra overrides for every trial go after ``--``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

from temde.tracking import wandb_logged_in

REPO = Path(__file__).resolve().parents[1]
HPARAMS_DIR = REPO / "configs" / "hparams_search"


def load_sweep(path: Path) -> dict[str, Any]:
    if not path.is_file():
        known = ", ".join(sorted(p.stem for p in path.parent.glob("*.yaml")))
        raise SystemExit(f"{path}: no such sweep file (known: {known})")
    sweep = yaml.safe_load(path.read_text())
    if not isinstance(sweep, dict) or "parameters" not in sweep or "command" not in sweep:
        raise SystemExit(f"{path}: expected a wandb sweep definition with 'command' and 'parameters'")
    return sweep


def fixed_overrides(sweep: dict[str, Any]) -> list[str]:
    """``key: {value: v}`` parameters: the same for every trial (experiment, logger)."""
    return [f"{k}={v['value']}" for k, v in sweep["parameters"].items() if "value" in v]


def _fmt(value: Any) -> str:
    return "null" if value is None else str(value)


def hydra_search_param(spec: dict[str, Any]) -> str:
    """A wandb parameter spec as a Hydra sweeper override (the Optuna sweeper's grammar)."""
    if "values" in spec:
        return "choice(" + ", ".join(_fmt(v) for v in spec["values"]) + ")"
    dist = spec.get("distribution", "uniform")
    interval = f"interval({_fmt(spec['min'])}, {_fmt(spec['max'])})"
    if dist == "uniform":
        return interval
    if dist == "log_uniform_values":
        return f"tag(log, {interval})"
    if dist == "int_uniform":
        return f"int({interval})"
    raise ValueError(f"wandb distribution {dist!r} has no Hydra counterpart here (use values/uniform/"
                     "log_uniform_values/int_uniform)")


def search_space(sweep: dict[str, Any]) -> dict[str, str]:
    """The searched (non-fixed) parameters in Hydra grammar: what configs/hparams_search/<name>.yaml must hold."""
    return {k: hydra_search_param(v) for k, v in sweep["parameters"].items() if "value" not in v}


def run_offline(name: str, sweep: dict[str, Any], count: int | None, extra: list[str]) -> int:
    hparams = HPARAMS_DIR / f"{name}.yaml"
    if not hparams.is_file():
        raise SystemExit(f"{hparams}: no Hydra counterpart of sweep {name} (needed without a wandb server)")
    optuna = "optuna" in hparams.read_text()
    given = {e.split("=", 1)[0] for e in extra}
    fixed = [f for f in fixed_overrides(sweep) if f.split("=", 1)[0] not in given]  # the command line wins
    cmd = [sys.executable, "-m", "temde.train", "-m", f"hparams_search={name}", *fixed]
    if count is not None:
        if not optuna:
            raise SystemExit(f"--count applies to Optuna searches; {hparams} is a grid")
        cmd.append(f"hydra.sweeper.n_trials={count}")
    cmd += extra
    print("offline sweep:", " ".join(cmd), flush=True)
    return subprocess.run(cmd, env={**os.environ, "WANDB_MODE": "offline"}).returncode


def run_wandb(sweep: dict[str, Any], count: int | None, project: str, entity: str | None, extra: list[str]) -> int:
    import wandb

    sweep = dict(sweep)
    sweep["command"] = [*sweep["command"], *extra]
    sweep_id = wandb.sweep(sweep, project=project, entity=entity)
    path = "/".join(p for p in (entity, project, sweep_id) if p)
    cmd = [sys.executable, "-m", "wandb", "agent", *(["--count", str(count)] if count else []), path]
    print("wandb agent:", " ".join(cmd), flush=True)
    return subprocess.run(cmd).returncode


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    extra = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    p = argparse.ArgumentParser(prog="scripts/sweep.py", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("sweep", type=Path, help="sweeps/<name>.yaml")
    p.add_argument("--count", type=int, help="trials to run (agent count / Optuna n_trials)")
    p.add_argument("--project", default="temde")
    p.add_argument("--entity")
    p.add_argument("--offline", action="store_true", help="Hydra multirun + wandb offline, even when logged in")
    args = p.parse_args(argv)
    sweep = load_sweep(args.sweep)
    if args.offline or not wandb_logged_in():
        return run_offline(args.sweep.stem, sweep, args.count, extra)
    return run_wandb(sweep, args.count, args.project, args.entity, extra)


if __name__ == "__main__":
    sys.exit(main())
