"""Exit codes of ``synshot train`` (``python -m train``) and the errors that map to them.

The codes are the families of :mod:`synshot.cli` (one table for every command). The SLURM scripts
branch on them: PREEMPTED means "a checkpoint was written on a signal, requeue me"; everything else
non-zero is a real failure that a requeue would only repeat.
"""

from __future__ import annotations

from synshot.cli import (
    EXIT_BUG as EXIT_ERROR,
    EXIT_CHECKPOINT,
    EXIT_DATA,
    EXIT_NONFINITE,
    EXIT_OK,
    EXIT_PREEMPTED,
    EXIT_USAGE as EXIT_CONFIG,
    CheckpointFileError,
    NonFiniteError,
)

__all__ = ["EXIT_OK", "EXIT_ERROR", "EXIT_CONFIG", "EXIT_CHECKPOINT", "EXIT_NONFINITE", "EXIT_DATA",
           "EXIT_PREEMPTED", "CheckpointError", "NonFiniteLossError"]


class CheckpointError(CheckpointFileError, RuntimeError):
    """A checkpoint cannot be used; the message names the path and what to do (exit 3)."""


class NonFiniteLossError(NonFiniteError, RuntimeError):
    """The loss was NaN/inf for too many steps in a row (exit 4)."""
