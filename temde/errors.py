"""The one exception type for bad input, so every entry point can print it as a single actionable line.

Raised where bad input enters (data files, vocabularies, checkpoints, configs); entry points catch it and print
``temde: error: <file>: <what was expected>`` with exit code 2 (the full traceback with ``HYDRA_FULL_ERROR=1``;
see :mod:`temde.cli`).
"""

from __future__ import annotations

from pathlib import Path

EXIT_BAD_INPUT = 2  # conventional exit status for a usage / input error


class InputError(ValueError):
    """Bad input: names the file (or option) and what was expected there."""

    def __init__(self, where: str | Path | None, expected: str) -> None:
        self.where = str(where) if where is not None else None
        self.expected = expected
        super().__init__(f"{self.where}: {expected}" if self.where else expected)

    def one_line(self) -> str:
        """The message as printed by the entry points: one line, no traceback."""
        return "temde: error: " + " ".join(str(self).split())

