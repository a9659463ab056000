"""Where a training step's time goes: phase timers, communication time, loader queue depth, profiler.

Phases per optimizer step (summed over its micro-batches, then averaged over the log window):
``data_wait`` (waiting for the loader), ``forward`` (prior + rasteriser + loss; ``render_forward`` is
the rasteriser's share of it), ``backward`` (autograd, including the gradient reductions DeepSpeed
runs inside it), ``optimizer`` (``engine.step``: ZeRO's reductions at the boundary, the update, the
parameter all-gather) and ``comm``, the time spent inside DeepSpeed's collectives (a subset of
backward + optimizer, measured by DeepSpeed's own comms logger, whose timers this module reads and
resets). On CUDA each phase boundary synchronises the device, so the split is the GPU's, not the
launch queue's. Every phase is also a ``torch.profiler.record_function`` range, so the on-demand
trace (``profile.steps=A-B``) shows the same names.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Iterator

import torch

PHASES = ("data_wait", "forward", "render_forward", "backward", "optimizer", "comm")


class PhaseTimer:
    """Accumulates wall time per phase while ``active`` (validation and checkpointing do not count)."""

    def __init__(self, device: str) -> None:
        self.cuda = device.startswith("cuda") and torch.cuda.is_available()
        self.totals = dict.fromkeys(PHASES, 0.0)
        self.active = True

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        if not self.active:
            yield
            return
        self._sync()
        t0 = time.perf_counter()
        with torch.profiler.record_function(f"synshot/{name}"):
            yield
        self._sync()
        self.totals[name] += time.perf_counter() - t0

    def take(self) -> dict[str, float]:
        """Totals since the last call (seconds), then reset; ``comm`` is read from DeepSpeed here."""
        self.totals["comm"] += comm_seconds()
        out, self.totals = self.totals, dict.fromkeys(PHASES, 0.0)
        return out


def comm_logger_config() -> dict:
    """DeepSpeed config section that makes every collective record its latency."""
    return {"comms_logger": {"enabled": True, "prof_all": True, "verbose": False, "debug": False}}


def comm_seconds() -> float:
    """Seconds spent in DeepSpeed collectives since the last call (0 when the comms logger is off).

    DeepSpeed's per-op records grow without bound and its timers accumulate; both are reset here.
    """
    try:
        from deepspeed.comm import comm as ds_comm
    except ImportError:  # pragma: no cover - deepspeed is a dependency
        return 0.0
    if not ds_comm.comms_logger.enabled:
        return 0.0
    total_ms = sum(t.elapsed(reset=True) for t in ds_comm.timers.timers.values())
    ds_comm.comms_logger.reset_data()
    return total_ms / 1000.0


def parse_steps(spec: str | None) -> tuple[int, int] | None:
    """``"A-B"`` (or ``"A"``) -> inclusive step window; None -> no profiling."""
    if spec is None or str(spec).strip() == "":
        return None
    text = str(spec).strip()
    lo, _, hi = text.partition("-")
    try:
        a, b = int(lo), int(hi or lo)
    except ValueError:
        raise ValueError(f"profile.steps={spec!r}: expected A-B (e.g. 20-24) or a single step") from None
    if a < 1 or b < a:
        raise ValueError(f"profile.steps={spec!r}: need 1 <= A <= B")
    return a, b


class StepProfiler:
    """torch.profiler over steps ``A..B`` (inclusive), traces written for TensorBoard's profiler plugin.

    Traces go to ``<tb dir>/profile/<rank>.<time>.pt.trace.json`` (``tensorboard --logdir <tb dir>``,
    PYTORCH_PROFILER tab, needs the torch-tb-profiler package).
    """

    def __init__(self, window: tuple[int, int] | None, out_dir: Path, rank: int, cuda: bool) -> None:
        self.window, self.out_dir, self.rank, self.cuda = window, Path(out_dir), rank, cuda
        self.prof = None
        self.trace_dir: Path | None = None

    def before_step(self, step: int) -> None:
        if self.window is None or self.prof is not None or step != self.window[0]:
            return
        from torch.profiler import ProfilerActivity, profile, tensorboard_trace_handler

        self.trace_dir = self.out_dir / "profile"
        self.trace_dir.mkdir(parents=True, exist_ok=True)
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if self.cuda else [])
        self.prof = profile(activities=activities, record_shapes=True, profile_memory=True,
                            on_trace_ready=tensorboard_trace_handler(str(self.trace_dir), worker_name=f"rank{self.rank}"))
        self.prof.__enter__()

    def after_step(self, step: int) -> bool:
        """Stops after the window's last step; True when a trace was written now."""
        if self.prof is None or step < self.window[1]:
            return False
        self.prof.__exit__(None, None, None)
        self.prof = None
        return True

    def close(self) -> None:
        if self.prof is not None:  # the run ended inside the window: write what was recorded
            self.prof.__exit__(None, None, None)
            self.prof = None
