"""The training loop: batch -> task (model, render, loss) -> DeepSpeed backward/step, plus the
bookkeeping around it (non-finite policy, stop signals, logging cadence, checkpoints, validation).

The loop knows nothing about the prior: a *task* turns a batch into a loss (``StepOutput``), so the
same loop is tested with a small module and runs the real prior (``train.task.PriorTask``).

Non-finite policy: the loss is checked on every rank before backward and the verdict all-reduced,
so all ranks skip together (no rank can hang in a collective). A skipped step does no backward and
no optimizer/scheduler step, and module buffers (the VQ codebook EMA, updated in forward) are
restored to their pre-step values, so it leaves no trace in the weights. With ``grad_accum > 1`` one
non-finite micro-batch on any rank skips the whole optimizer step on all ranks: the window's remaining
micro-batches are read (the data position stays that of an unbroken run) but not computed, and the
keys of the non-finite samples are logged. After
``max_nonfinite`` bad steps in a row the run aborts (:class:`NonFiniteLossError`).
"""

from __future__ import annotations

import math
import sys
from pathlib import Path
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable, Protocol

import torch
import torch.distributed as dist

from train.checkpoint import CheckpointManager
from train.engine import grad_norm
from train.errors import EXIT_OK, EXIT_PREEMPTED, NonFiniteLossError
from train.preempt import StopRequest
from train.state import capture_rng, restore_rng
from train.tb import TBLogger, image_grid, memory_stats
from train.telemetry import PhaseTimer, StepProfiler


@dataclass
class StepOutput:
    loss: torch.Tensor  # scalar, differentiable
    terms: dict[str, torch.Tensor] = field(default_factory=dict)  # logged as loss/<name>
    stats: dict[str, torch.Tensor] = field(default_factory=dict)  # logged as-is (e.g. vq/perplexity_id)
    images: tuple[torch.Tensor, torch.Tensor] | None = None  # (gt, render), each (V,3,H,W), first sample
    num_samples: int = 0
    num_images: int = 0  # rendered views


class Task(Protocol):
    def training_step(self, engine, batch: dict, want_images: bool) -> StepOutput: ...


@dataclass
class LoopSettings:
    max_steps: int
    grad_accum: int = 1
    max_nonfinite: int = 10
    ckpt_every: int = 500
    log_every: int = 10
    image_every: int = 200
    image_views: int = 2
    val_every: int = 500
    progress: bool = False
    profile_steps: tuple[int, int] | None = None  # torch.profiler window (inclusive), traces under the TB dir


def _all_reduce(t: torch.Tensor, op=None) -> torch.Tensor:
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        dist.all_reduce(t, op=op or dist.ReduceOp.SUM)
    return t


def _any_rank(flag: bool, device: str) -> bool:
    t = torch.tensor([1.0 if flag else 0.0], device=device)
    return bool(_all_reduce(t, dist.ReduceOp.MAX).item() > 0)


class Trainer:
    """Runs steps ``start_step+1 .. max_steps``; ``run()`` returns an exit code (see train.errors)."""

    def __init__(
        self,
        *,
        engine,
        task: Task,
        loader: Iterable[dict],
        settings: LoopSettings,
        device: str,
        rank: int,
        world_size: int,
        ckpt: CheckpointManager,
        tb: TBLogger,
        stop: StopRequest,
        meta: dict[str, Any],
        validate: Callable[[int], dict[str, Any]] | None = None,
        start_step: int = 0,
        nonfinite_total: int = 0,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.engine, self.task, self.loader, self.s = engine, task, loader, settings
        self.device, self.rank, self.world_size = device, rank, world_size
        self.ckpt, self.tb, self.stop, self.meta, self.validate = ckpt, tb, stop, meta, validate
        self.step = start_step
        self.nonfinite_total = nonfinite_total
        self.nonfinite_streak = 0
        self.zero_stage = engine.zero_optimization_stage()
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True) if rank == 0 else None)
        self.last_loss: float | None = None
        self._saved_step = start_step if start_step > 0 else -1  # resumed: that checkpoint exists already
        self.timer = PhaseTimer(device)
        if hasattr(task, "timer"):
            task.timer = self.timer  # the task times its rasteriser forward (render_forward)
        self.profiler = StepProfiler(settings.profile_steps, tb.log_dir, rank,
                                     device.startswith("cuda"))

    # ------------------------------------------------------------------ helpers
    def _snapshot_buffers(self) -> list[torch.Tensor]:
        return [b.detach().clone() for b in self.engine.module.buffers()]

    def _restore_buffers(self, snap: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for b, s in zip(self.engine.module.buffers(), snap):
                b.copy_(s)

    def _zero_loss(self) -> torch.Tensor:
        """A finite zero loss touching every trainable parameter (keeps ZeRO's grad hooks in step)."""
        return sum((p * 0).sum() for p in self.engine.module.parameters() if p.requires_grad)

    def _poisoned_loss(self) -> torch.Tensor:
        """A loss whose gradient is NaN for every parameter: ZeRO's overflow check then discards the
        whole accumulated window on every rank (its all-reduced skip path, also used for fp16)."""
        return self._zero_loss() * float("nan")

    def _finish_micro(self, micro: int, skipped: bool) -> None:
        """``engine.step()`` for one micro-batch; at the boundary of a skipped window no update happens.

        ZeRO 1-3 skip by themselves (non-finite gradient norm -> ``overflow``: gradients cleared, no
        optimizer or LR step). Stage 0 steps the client optimizer directly, so there the boundary is
        booked the way DeepSpeed books an overflow step (counters advance, gradients dropped) without
        calling the optimizer or the LR scheduler.
        """
        boundary = micro == self.s.grad_accum - 1
        if not (skipped and boundary and self.zero_stage == 0):
            self.engine.step()
            return
        self.engine.zero_grad()
        self.engine.micro_steps += 1
        self.engine.global_steps += 1
        self.engine.skipped_steps += 1

    def _report_nonfinite(self, bad_keys: list[str], window_samples: int) -> None:
        """Log which samples made the step non-finite, gathered from every rank."""
        per_rank: list[Any] = [bad_keys]
        if dist.is_available() and dist.is_initialized() and self.world_size > 1:
            per_rank = [None] * self.world_size
            dist.all_gather_object(per_rank, bad_keys)
        culprits = "; ".join(f"rank {r}: {', '.join(k[:8])}{' ...' if len(k) > 8 else ''}"
                             for r, k in enumerate(per_rank) if k)
        total = _all_reduce(torch.tensor([float(window_samples)], device=self.device)).item()
        self.log(f"[train] step {self.step}: non-finite loss, optimizer step skipped on all ranks "
                 f"({int(total)} samples of the step discarded; non-finite samples: {culprits or 'unknown'}) "
                 f"({self.nonfinite_streak} in a row, {self.nonfinite_total} in total)")

    def _queue_depth(self) -> float:
        depth = getattr(self.loader, "queue_depth", None)
        return float(depth()) if callable(depth) else 0.0

    def _gather_rates(self, value: torch.Tensor) -> list[float]:
        """One number per rank (images/s), so a straggler shows up by rank."""
        if not (dist.is_available() and dist.is_initialized() and self.world_size > 1):
            return [float(value)]
        out = [torch.zeros_like(value.reshape(1)) for _ in range(self.world_size)]
        dist.all_gather(out, value.reshape(1).contiguous())
        return [float(t) for t in out]

    def rank_state(self) -> dict[str, Any]:
        state: dict[str, Any] = {"rng": capture_rng(), "nonfinite_total": self.nonfinite_total}
        if hasattr(self.loader, "state_dict"):
            state["loader"] = self.loader.state_dict()
        return state

    def save(self) -> None:
        path = self.ckpt.save(self.engine, self.step, self.rank_state(), self.meta)
        self._saved_step = self.step
        self.log(f"[train] step {self.step}: checkpoint {path}")

    def _next_batch(self, it):
        try:
            return next(it), it
        except StopIteration:
            it = iter(self.loader)  # a finite loader: start its next epoch
            try:
                return next(it), it
            except StopIteration:
                raise RuntimeError("the training loader yields no batches (empty split?)") from None

    # ------------------------------------------------------------------ main
    def run(self) -> int:
        s = self.s
        bar = None
        if s.progress and self.rank == 0:
            from tqdm import tqdm

            bar = tqdm(total=s.max_steps, initial=self.step, desc="train", dynamic_ncols=True)
        it = iter(self.loader)
        win_start = time.perf_counter()
        win_samples = win_images = win_steps = 0
        win_queue: list[float] = []
        self.timer.take()
        try:
            while self.step < s.max_steps:
                if _any_rank(self.stop.requested, self.device):
                    if self._saved_step != self.step:  # a periodic save may have just written this step
                        self.save()
                    self.log(f"[train] stopped by signal at step {self.step}; exit {EXIT_PREEMPTED} to requeue")
                    return EXIT_PREEMPTED
                next_step = self.step + 1
                self.profiler.before_step(next_step)
                is_log = next_step % s.log_every == 0 or next_step == 1 or next_step == s.max_steps
                want_images = next_step % s.image_every == 0
                lr = self.engine.get_lr()[0]
                gnorm: float | None = None
                bad = False
                out = None
                terms_acc: dict[str, float] = {}
                bad_keys: list[str] = []  # this rank's samples in non-finite micro-batches
                window_samples = 0
                snap = self._snapshot_buffers()  # forward updates buffers (VQ EMA): undone if the step is skipped
                for micro in range(s.grad_accum):
                    win_queue.append(self._queue_depth())
                    with self.timer.phase("data_wait"):
                        batch, it = self._next_batch(it)
                    keys = batch.get("key") if isinstance(batch, dict) else None
                    if bad:  # the step is already skipped: consume the window's data, keep DeepSpeed's count
                        window_samples += len(keys) if keys is not None else 0
                        self.engine.backward(self._zero_loss())
                        self._finish_micro(micro, skipped=True)
                        continue
                    with self.timer.phase("forward"):
                        out = self.task.training_step(self.engine, batch, want_images and micro == 0)
                    window_samples += out.num_samples
                    win_samples += out.num_samples
                    win_images += out.num_images
                    finite = bool(torch.isfinite(out.loss.detach()).all())
                    if _any_rank(not finite, self.device):
                        bad = True
                        if not finite:
                            bad_keys.extend([str(k) for k in keys] if keys is not None else [f"micro-batch {micro}"])
                        self._restore_buffers(snap)
                        if s.grad_accum == 1:
                            break  # skip: no backward, no optimizer step
                        self.engine.backward(self._poisoned_loss())
                        self._finish_micro(micro, skipped=True)
                        continue
                    for k, v in out.terms.items():
                        terms_acc[k] = terms_acc.get(k, 0.0) + float(v.detach()) / s.grad_accum
                    with self.timer.phase("backward"):
                        self.engine.backward(out.loss)
                    if micro == s.grad_accum - 1 and self.zero_stage == 0 and is_log:
                        gnorm = grad_norm(self.engine)
                    with self.timer.phase("optimizer"):
                        self._finish_micro(micro, skipped=False)
                self.step = next_step
                win_steps += 1
                if self.profiler.after_step(self.step):
                    self.log(f"[train] step {self.step}: profiler trace written to {self.profiler.trace_dir}")
                if bad:
                    self.nonfinite_total += 1
                    self.nonfinite_streak += 1
                    self._report_nonfinite(bad_keys, window_samples)
                    self.tb.scalars({"train/nonfinite_total": self.nonfinite_total,
                                     "train/nonfinite_streak": self.nonfinite_streak}, self.step)
                    if self.nonfinite_streak >= s.max_nonfinite:
                        raise NonFiniteLossError(
                            f"loss was NaN/inf for {self.nonfinite_streak} steps in a row (up to step {self.step}); "
                            f"aborting. Lower optim.lr, check the data, or resume from the last checkpoint "
                            f"in {self.ckpt.dir} (max_nonfinite_steps={s.max_nonfinite})"
                        )
                else:
                    self.nonfinite_streak = 0
                    self.last_loss = terms_acc.get("total", float(out.loss.detach()))
                if is_log:
                    if self.zero_stage != 0:
                        gnorm = self.engine.get_global_grad_norm()
                    elif bad:
                        gnorm = None
                    elapsed = max(time.perf_counter() - win_start, 1e-9)
                    rates = torch.tensor([win_samples / elapsed, win_images / elapsed], dtype=torch.float64,
                                         device=self.device)
                    per_gpu = rates.tolist()
                    images_per_rank = self._gather_rates(rates[1])
                    total = _all_reduce(rates).tolist()
                    split = {k: v / max(win_steps, 1) for k, v in self.timer.take().items()}
                    queue = sum(win_queue) / max(len(win_queue), 1)
                    if terms_acc:  # mean over ranks (all ranks have the same keys: they skip together)
                        keys = sorted(terms_acc)
                        t = torch.tensor([terms_acc[k] for k in keys], dtype=torch.float64, device=self.device)
                        terms_acc = dict(zip(keys, (_all_reduce(t) / self.world_size).tolist()))
                        self.last_loss = terms_acc.get("total", self.last_loss)
                    scalars: dict[str, Any] = {f"loss/{k}": v for k, v in terms_acc.items()}
                    scalars.update({
                        "opt/lr": lr,
                        "opt/grad_norm": gnorm if gnorm is not None and math.isfinite(gnorm) else None,
                        "perf/samples_per_s_per_gpu": per_gpu[0], "perf/images_per_s_per_gpu": per_gpu[1],
                        "perf/samples_per_s_total": total[0], "perf/images_per_s_total": total[1],
                        "perf/data_wait_fraction": split["data_wait"] * win_steps / elapsed,
                        "perf/step_s": elapsed / max(win_steps, 1),
                        "loader/queue_depth": queue,
                        "train/nonfinite_total": self.nonfinite_total,
                    })
                    scalars.update({f"time/{k}_s": v for k, v in split.items()})
                    scalars.update({f"perf/images_per_s_rank/{r}": v for r, v in enumerate(images_per_rank)})
                    if out is not None and not bad:
                        scalars.update({k: v for k, v in out.stats.items()})
                    mem = memory_stats(self.device)
                    scalars.update(mem)
                    self.tb.scalars(scalars, self.step)
                    if bar is None:
                        head = (f"[train] step {self.step}/{s.max_steps} loss {self.last_loss:.5f} lr {lr:.3g}"
                                if not bad else f"[train] step {self.step}/{s.max_steps} skipped")
                        peak = mem.get("mem/gpu_peak_allocated_mb", mem["mem/cpu_peak_rss_mb"])
                        self.log(f"{head} | {total[1]:.2f} img/s ({per_gpu[1]:.2f}/rank, slowest "
                                 f"{min(images_per_rank):.2f}) | step {elapsed / max(win_steps, 1):.3f} s: "
                                 f"data {split['data_wait']:.3f} fwd {split['forward']:.3f} "
                                 f"(render {split['render_forward']:.3f}) bwd {split['backward']:.3f} "
                                 f"opt {split['optimizer']:.3f} comm {split['comm']:.3f} | peak {peak:.0f} MB "
                                 f"| queue {queue:.1f}")
                    win_start, win_samples, win_images, win_steps = time.perf_counter(), 0, 0, 0
                    win_queue = []
                if want_images and out is not None and out.images is not None and not bad:
                    self.tb.image("images/train", image_grid(*out.images, s.image_views), self.step)
                if bar is not None:
                    bar.update(1)
                    if self.last_loss is not None:
                        bar.set_postfix(loss=f"{self.last_loss:.4f}")
                t_extra = time.perf_counter()
                self.timer.active = False
                if self.validate is not None and self.step % s.val_every == 0:
                    self._validate()
                if self.step % s.ckpt_every == 0 or self.step == s.max_steps:
                    self.save()
                    self.tb.flush()
                self.timer.active = True
                win_start += time.perf_counter() - t_extra  # throughput counts training time only
            return EXIT_OK
        finally:
            self.profiler.close()
            if bar is not None:
                bar.close()
            self.tb.flush()

    def _validate(self) -> None:
        """Validation must not perturb training: RNG streams are saved and restored around it."""
        rng = capture_rng()
        self.engine.module.eval()
        try:
            with torch.no_grad():
                result = self.validate(self.step)
        finally:
            self.engine.module.train()
            restore_rng(rng)
        images = result.pop("images", None)
        self.tb.scalars({f"val/{k}": v for k, v in result.items()}, self.step)
        if images is not None:
            self.tb.image("images/val", image_grid(*images, self.s.image_views), self.step)
        if result:
            self.log(f"[train] step {self.step}: validation " + " ".join(f"{k}={v:.4f}" for k, v in result.items()))
