"""TensorBoard logging (rank 0 only) and the small helpers that turn training state into summaries.

Tag layout (docs/training.md lists them all): ``loss/<term>``, ``opt/lr``, ``opt/grad_norm``,
``perf/*`` (throughput, data-wait fraction), ``mem/*``, ``vq/*`` (codebook usage/perplexity),
``train/nonfinite_*``, ``images/train`` and ``images/val`` (GT | render | error), ``val/*``.
"""

from __future__ import annotations

import resource
from pathlib import Path
from typing import Mapping

import torch


class TBLogger:
    """A SummaryWriter on rank 0; every method is a no-op on the other ranks."""

    def __init__(self, log_dir: str | Path, enabled: bool, purge_step: int | None = None) -> None:
        self.writer = None
        self.log_dir = Path(log_dir)  # also where every rank writes its profiler trace
        if enabled:
            from torch.utils.tensorboard import SummaryWriter

            Path(log_dir).mkdir(parents=True, exist_ok=True)
            self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalars(self, values: Mapping[str, float | torch.Tensor], step: int) -> None:
        if self.writer is None:
            return
        for tag, v in values.items():
            if v is None:
                continue
            self.writer.add_scalar(tag, float(v.detach().float()) if isinstance(v, torch.Tensor) else float(v), step)

    def image(self, tag: str, chw: torch.Tensor, step: int) -> None:
        if self.writer is not None:
            self.writer.add_image(tag, chw.detach().float().clamp(0, 1).cpu(), step)

    def text(self, tag: str, text: str, step: int = 0) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def flush(self) -> None:
        if self.writer is not None:
            self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def image_grid(gt: torch.Tensor, render: torch.Tensor, max_views: int) -> torch.Tensor:
    """``(V,3,H,W)`` GT and render -> one ``(3, V*H, 3*W)`` image: rows = views, GT | render | |error|.

    The error column is scaled x4 (clamped) so small residuals stay visible.
    """
    v = min(max_views, gt.shape[0])
    gt, render = gt[:v].detach().float().cpu().clamp(0, 1), render[:v].detach().float().cpu().clamp(0, 1)
    err = ((gt - render).abs().mean(1, keepdim=True) * 4).clamp(0, 1).expand_as(gt)
    rows = torch.cat([gt, render, err], dim=3)  # (v,3,H,3W)
    return torch.cat(list(rows), dim=1)  # (3, vH, 3W)


def memory_stats(device: str) -> dict[str, float]:
    """Process memory: current RSS and peak RSS (CPU), allocated/peak/reserved (GPU), in MB."""
    out: dict[str, float] = {}
    try:
        import psutil

        out["mem/cpu_rss_mb"] = psutil.Process().memory_info().rss / 2**20
    except ImportError:  # pragma: no cover - psutil comes with deepspeed
        pass
    out["mem/cpu_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda") and torch.cuda.is_available():
        out["mem/gpu_allocated_mb"] = torch.cuda.memory_allocated() / 2**20
        out["mem/gpu_peak_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["mem/gpu_reserved_mb"] = torch.cuda.memory_reserved() / 2**20
    return out
