"""Clean stops on SIGTERM / SIGINT (``timeout``, SLURM pre-emption, ``docker stop``, Ctrl-C).

The first signal asks training to stop at the next batch boundary: ``last.ckpt`` then holds the last finished
epoch, and resuming from it replays exactly what an uninterrupted run does (the interrupted epoch restarts). A
second signal stops at once. The entry point exits with the conventional 128 + signal number, so wrappers never
read an interrupted run as a success.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

import pytorch_lightning as pl

log = logging.getLogger(__name__)

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopRequested(Exception):
    """Training was stopped by a signal; ``exit_code`` is 128 + the signal number."""

    def __init__(self, signum: int, resume_hint: str = "") -> None:
        self.signum = signum
        self.resume_hint = resume_hint
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name}" + (f"; {resume_hint}" if resume_hint else ""))

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class GracefulStop(pl.Callback):
    """Turns a signal into :class:`StopRequested` at the next batch boundary (at once outside ``fit``)."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self.deferred = False  # True while fit runs: stop between batches, never inside a checkpoint write

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        if self.signum is None and self.deferred:
            self.signum = signum
            log.warning("received %s: stopping after the current batch", signal.Signals(signum).name)
            return
        raise StopRequested(signum)

    @contextmanager
    def installed(self) -> Iterator[GracefulStop]:
        """Handle SIGTERM/SIGINT inside the block (main thread only; elsewhere signals keep their handlers)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        try:
            yield self
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)

    def check(self) -> None:
        if self.signum is not None:
            raise StopRequested(self.signum)

    def on_train_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.check()

    def on_validation_batch_end(self, *args: Any, **kwargs: Any) -> None:
        self.check()
