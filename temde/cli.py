"""What every entry point does with our own errors: one line, exit code 2 (128 + signal when stopped).

Hydra would print "Error executing job" and a stack for any exception; for bad input that hides the one line
that matters. ``HYDRA_FULL_ERROR=1`` (or ``TEMDE_DEBUG=1``) re-raises for the full traceback.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Callable, Iterable
from typing import TypeVar

from temde.errors import EXIT_BAD_INPUT, InputError
from temde.interrupt import StopRequested

T = TypeVar("T")
BAD_INPUT = (InputError, FileNotFoundError)  # DataError and every other input error subclass InputError


def _debug() -> bool:
    return any(os.environ.get(k, "") not in ("", "0") for k in ("HYDRA_FULL_ERROR", "TEMDE_DEBUG"))


def bad_input(err: BaseException) -> BaseException | None:
    """Our bad-input error behind ``err`` (Hydra's instantiate wraps the exceptions of constructors)."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, BAD_INPUT):
            return err
        err = err.__cause__ or err.__context__
        seen += 1
    return None


def one_line(err: BaseException) -> str:
    if isinstance(err, InputError):
        return err.one_line()
    if isinstance(err, FileNotFoundError) and err.filename:
        return f"temde: error: {err.filename}: an existing file ({err.strerror or 'not found'})"
    return "temde: error: " + " ".join(str(err).split())


def resume_command(module: str, overrides: Iterable[str], ckpt: str) -> str:
    kept = [o for o in overrides if not o.startswith(("ckpt_path=", "+ckpt_path="))]
    return " ".join(["python", "-m", module, *map(shlex.quote, kept), shlex.quote(f"ckpt_path={ckpt}")])


def run_reporting_errors(fn: Callable[[], T], module: str = "temde.train", overrides: Iterable[str] = ()) -> T:
    """Call ``fn``; bad input -> one line on stderr and exit 2, a stopping signal -> exit 128 + signal."""
    try:
        return fn()
    except StopRequested as stop:
        hint = stop.resume_hint
        if hint.startswith("ckpt_path="):
            hint = "resume with: " + resume_command(module, overrides, hint[len("ckpt_path="):])
        print(f"temde: {stop.args[0].split(';')[0]}; {hint}", file=sys.stderr, flush=True)
        sys.exit(stop.exit_code)
    except Exception as err:
        found = bad_input(err)
        if found is None or _debug():
            raise
        print(one_line(found), file=sys.stderr, flush=True)
        sys.exit(EXIT_BAD_INPUT)
