"""Exit codes of ``python -m train`` and the errors that map to them.

The SLURM scripts branch on these: PREEMPTED means "a checkpoint was written on a signal, requeue
me"; everything else non-zero is a real failure that a requeue would only repeat.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_ERROR = 1  # unexpected exception (traceback printed)
EXIT_CONFIG = 2  # bad config / command line (message names the file and key)
EXIT_CHECKPOINT = 3  # checkpoint missing, truncated, corrupt or incompatible with the config
EXIT_NONFINITE = 4  # too many non-finite losses in a row
EXIT_DATA = 5  # dataset missing, inconsistent with the config, or too corrupt
EXIT_PREEMPTED = 75  # SIGUSR1/SIGTERM: checkpoint written, requeue to resume (EX_TEMPFAIL)


from synshot.cli import CheckpointFileError, NonFiniteError


class CheckpointError(CheckpointFileError, RuntimeError):
    """A checkpoint cannot be used; the message names the path and what to do (exit 3)."""


class NonFiniteLossError(NonFiniteError, RuntimeError):
    """The loss was NaN/inf for too many steps in a row (exit 4)."""
