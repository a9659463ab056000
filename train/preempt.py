"""SIGUSR1/SIGTERM -> "checkpoint at the next step boundary, then exit for requeue".

Why a flag and not work in the handler: a handler runs between two bytecodes of whatever the
main thread is doing (maybe inside a collective); the loop polls the flag at a step boundary and
all-reduces it so every rank checkpoints at the same step even if only one got the signal.
"""

from __future__ import annotations

import signal
import sys
from typing import Iterable

from train.errors import EXIT_PREEMPTED

PREEMPT_EXIT_CODE = EXIT_PREEMPTED  # read by slurm/train.sbatch: "checkpoint written, requeue me"


class StopRequest:
    """Remembers the first stop signal received; restores the previous handlers on ``close``."""

    def __init__(self, signals: Iterable[int] = (signal.SIGUSR1, signal.SIGTERM)) -> None:
        self.signals = tuple(signals)
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:  # noqa: ARG002 - signal API
        if self.signum is None:
            self.signum = signum
            sys.stderr.write(f"[train] got {signal.Signals(signum).name}: checkpointing at the next step\n")

    def install(self) -> "StopRequest":
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handler)
        return self

    def close(self) -> None:
        for s, h in self._previous.items():
            signal.signal(s, h)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.close()
