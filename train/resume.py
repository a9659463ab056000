"""What may change when a run is resumed, and making the allowed changes take effect.

A checkpoint records the config it was trained with. On resume the new config is compared key by key:

- *schedule* keys (:data:`SCHEDULE_KEYS`: ``max_steps``, ``optim.lr``, ``optim.min_lr``,
  ``optim.warmup_steps``) may change. The restored LR scheduler would otherwise keep the old
  total and base LR (its state is part of the checkpoint), so :func:`rebuild_schedule` re-derives
  it from the restored step: extending a finished run continues the cosine to the *new* ``max_steps``
  instead of training every extra step at the old minimum LR.
- *operational* keys (:data:`OPERATIONAL_PREFIXES`: logging, checkpoint cadence/retention, timeouts,
  worker counts, where the run lives) do not change the trained function and may change freely.
- everything else (model, loss, data content, batch, seed, optimizer betas, ...) changes what a step
  computes, so mixing it into a half-trained run is refused (:class:`~train.errors.CheckpointError`,
  exit 3) with the differing keys named; start a new run for such a change.

Every change that is applied is reported (one log line per key, old -> new).
"""

from __future__ import annotations

from typing import Any, Iterable

from train.config import diff_keys
from train.engine import WarmupCosine
from train.errors import CheckpointError

SCHEDULE_KEYS = ("max_steps", "optim.lr", "optim.min_lr", "optim.warmup_steps")
OPERATIONAL_PREFIXES = (
    "name", "out_dir", "logging", "checkpoint.every_n_steps", "checkpoint.keep_last", "checkpoint.dir",
    "distributed.timeout_minutes", "max_nonfinite_steps", "data.num_workers", "data.prefetch_factor",
    "data.pin_memory", "data.corrupt_log_interval_s", "data.storage_options",
    # telemetry and memory switches: what is measured or recomputed, not what is trained
    "profile", "distributed.comm_timing", "distributed.activation_checkpointing",
)


def _get(tree: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(tree, dict) or part not in tree:
            return None
        tree = tree[part]
    return tree


def _allowed(key: str, prefixes: Iterable[str]) -> bool:
    return any(key == p or key.startswith(p + ".") for p in prefixes)


def classify_changes(saved: dict, new: dict) -> tuple[list[str], list[str], list[str]]:
    """Split the differing dotted keys of two configs into (schedule, operational, refused)."""
    schedule, operational, refused = [], [], []
    for key in diff_keys(saved, new):
        if _allowed(key, SCHEDULE_KEYS):
            schedule.append(key)
        elif _allowed(key, OPERATIONAL_PREFIXES):
            operational.append(key)
        else:
            refused.append(key)
    return schedule, operational, refused


def check_resume_config(path, saved: dict, new: dict) -> list[str]:
    """Refuse a resume whose config changes what training computes; returns report lines for the rest.

    ``saved``/``new`` are the public (JSON) configs. Raises :class:`CheckpointError` naming the keys.
    """
    schedule, operational, refused = classify_changes(saved, new)
    if refused:
        shown = ", ".join(f"{k} ({_get(saved, k)!r} -> {_get(new, k)!r})" for k in refused[:8])
        more = f" and {len(refused) - 8} more" if len(refused) > 8 else ""
        raise CheckpointError(
            f"{path}: the config differs from the checkpoint's in keys that change what training computes: "
            f"{shown}{more}. Resume with the checkpoint's values (its config is in {path}/trainer_meta.json), "
            f"or start a new run (another name/out_dir). Only {', '.join(SCHEDULE_KEYS)} and operational "
            f"settings (logging, checkpoint cadence, workers, paths) may change on resume")
    return [f"{k}: {_get(saved, k)!r} -> {_get(new, k)!r}" for k in schedule + operational]


def rebuild_schedule(engine, *, lr: float, min_lr: float, warmup_steps: int, max_steps: int) -> float:
    """Make the restored LR schedule follow the current config from the restored step; returns the LR now.

    The scheduler's step counter (``last_epoch``) stays as restored; its base LR and its warmup/cosine
    parameters are replaced, and the optimizer's current LR is set to what the new schedule gives at
    that step. With an unchanged config this reproduces the restored LR exactly (bit-identical resume).
    """
    sched = engine.lr_scheduler
    if sched is None or not hasattr(sched, "lr_lambdas"):
        raise CheckpointError("rebuild_schedule: the engine has no LambdaLR scheduler to rebuild")
    floor = min_lr / lr
    for fn in sched.lr_lambdas:
        if not isinstance(fn, WarmupCosine):
            raise CheckpointError(f"rebuild_schedule: unexpected LR schedule {type(fn).__name__}")
        fn.warmup, fn.total, fn.floor = int(warmup_steps), int(max_steps), float(floor)
    groups = sched.optimizer.param_groups
    sched.base_lrs = [float(lr) for _ in groups]
    step = sched.last_epoch
    for group, fn in zip(groups, sched.lr_lambdas):
        group["initial_lr"] = float(lr)
        group["lr"] = float(lr) * fn(step)
    sched._last_lr = [g["lr"] for g in groups]
    return groups[0]["lr"]
