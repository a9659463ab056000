"""The run layout: one folder per trained prior, and every stage's default path inside it.

::

    runs/<name>/                      synshot train  (name and out_dir from the training config)
        config.json                   the resolved training config
        checkpoints/step_*/, latest   DeepSpeed checkpoints (resume, export)
        tb/                           TensorBoard
        prior.safetensors             synshot export
        invert/<subject>/             synshot invert: avatar.safetensors, metrics.json, turntable.mp4, ...
            driven.mp4                synshot drive

Why one layout: ``synshot train``, ``export``, ``invert`` and ``drive`` chain with no path
arguments (``make train export invert drive``); each reads what the previous one wrote by default.
"""

from __future__ import annotations

from pathlib import Path

DEFAULT_RUN = "runs/tiny"  # configs/train/tiny.yaml: name tiny, out_dir runs
PRIOR_FILE = "prior.safetensors"
AVATAR_FILE = "avatar.safetensors"


def run_root(path: str | Path) -> Path:
    """The run folder of a run folder, its ``checkpoints/`` folder, or one ``step_*`` folder in it."""
    p = Path(path)
    if p.name.startswith("step_") or p.name.startswith(".tmp"):
        p = p.parent
    if p.name == "checkpoints":
        p = p.parent
    return p


def checkpoints_dir(run: str | Path) -> Path:
    return Path(run) / "checkpoints"


def tensorboard_dir(run: str | Path) -> Path:
    return Path(run) / "tb"


def prior_path(run: str | Path) -> Path:
    """Where ``synshot export`` writes the run's prior and ``synshot invert`` looks for it."""
    return Path(run) / PRIOR_FILE


def invert_dir(run: str | Path, subject: str | Path) -> Path:
    """The inversion outputs of one subject (named after its folder)."""
    return Path(run) / "invert" / Path(subject).resolve().name


def avatar_path(run: str | Path, subject: str | Path) -> Path:
    return invert_dir(run, subject) / AVATAR_FILE


def resolve_prior(prior: str | Path | None, run: str | Path) -> Path:
    """The prior an inversion uses: ``prior`` when given, else the run's exported prior, else (a
    run with no export, e.g. a fresh clone) the prior shipped in the package (synshot/priors/).

    This is the one place that picks a default prior, so invert, eval and the demo agree on it.
    When nothing exists the run's path is returned, so the error names what to produce.
    """
    if prior:
        return Path(prior)
    own = prior_path(run)
    if own.is_file():
        return own
    from synshot.priors import SHIPPED_PRIOR

    return SHIPPED_PRIOR if SHIPPED_PRIOR.is_file() else own
