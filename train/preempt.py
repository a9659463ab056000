"""SIGUSR1/SIGTERM -> "checkpoint at the next step boundary, then exit for requeue".

Why a flag and not work in the handler: a handler runs between two bytecodes of whatever the
main thread is doing (maybe inside a collective); the loop polls the flag at a step boundary and
all-reduces it so every rank checkpoints at the same step even if only one got the signal.

Why later signals are ignored for good: one preemption sends several (SLURM signals every task of
the step, submitit's ``_interrupt`` sends SIGTERM then USR2, which the wrapper forwards as USR1).
The default action of both is to die, so a second one that arrives while the stopped trainer is
saving or exiting -- after ``close`` restored a default handler, or during interpreter shutdown,
which resets every Python handler to SIG_DFL -- would turn "checkpointed, exit 75, requeue me"
into "killed by signal" (exit -10) and fail the job. Once a stop was requested, the stop signals
are therefore only logged while the handler is installed and SIG_IGN afterwards (SIG_IGN survives
interpreter shutdown).
"""

from __future__ import annotations

import atexit
import os
import signal
from typing import Iterable

from train.errors import EXIT_PREEMPTED

PREEMPT_EXIT_CODE = EXIT_PREEMPTED  # read by slurm/train.sbatch: "checkpoint written, requeue me"


def _say(text: str) -> None:
    """Straight to fd 2: sys.stderr.write from a handler can raise "reentrant call" mid-print."""
    try:
        os.write(2, text.encode())
    except OSError:
        pass


def ignore_signals(signals: Iterable[int]) -> None:
    """SIG_IGN for ``signals``: a process on its way out after a stop must not die of a second one."""
    for s in signals:
        signal.signal(s, signal.SIG_IGN)


class StopRequest:
    """Remembers the first stop signal received; restores the previous handlers on ``close``.

    After a stop, ``close`` restores a previous *default* disposition as SIG_IGN instead (see the
    module docstring), and the stop signals are ignored during interpreter shutdown too.
    """

    def __init__(self, signals: Iterable[int] = (signal.SIGUSR1, signal.SIGTERM)) -> None:
        self.signals = tuple(signals)
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handler(self, signum, frame) -> None:  # noqa: ARG002 - signal API
        name = signal.Signals(signum).name
        if self.signum is not None:
            _say(f"[train] got {name} while already stopping: ignored\n")
            return
        self.signum = signum
        atexit.register(ignore_signals, self.signals)  # runs before shutdown resets handlers to SIG_DFL
        _say(f"[train] got {name}: checkpointing at the next step\n")

    def install(self) -> "StopRequest":
        for s in self.signals:
            self._previous[s] = signal.signal(s, self._handler)
        return self

    def close(self) -> None:
        for s, h in self._previous.items():
            if h is None:  # not set from Python: treat as the default
                h = signal.SIG_DFL
            if self.requested and h == signal.SIG_DFL:
                h = signal.SIG_IGN  # stopped: a late signal must not kill the exiting process
            signal.signal(s, h)
        self._previous.clear()

    @property
    def requested(self) -> bool:
        return self.signum is not None

    def __enter__(self) -> "StopRequest":
        return self.install()

    def __exit__(self, *exc) -> None:
        self.close()
