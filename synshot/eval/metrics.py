"""The one definition of every image metric SynShot reports (evaluation, inversion metrics.json).

Per frame, both images clamped to [0, 1], then averaged over frames (never the PSNR of a pooled
MSE). Each metric exists in two named variants:

- ``*_full``: the whole frame, prediction rendered on white and the ground truth composited on
  white with its mask (what a viewer sees; background errors count);
- ``*_head``: only the ground-truth head mask (soft mask = per-pixel weight), so the number is
  about the head, not about how much white background the frame has. SSIM's map ('valid'
  filtering) is weighted by the mask at each window's centre.

``lpips_full`` and ``id_distance`` are added when their networks are given; a report must say
plainly when they are absent (:func:`absent_metrics`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from synshot.losses.metrics import ssim_map

BASE_METRICS: tuple[str, ...] = ("psnr_full", "ssim_full", "l1_full", "psnr_head", "ssim_head", "l1_head")
OPTIONAL_METRICS: dict[str, str] = {
    "lpips_full": "LPIPS needs a local torchvision backbone file (`lpips_backbone`)",
    "id_distance": "the dlib face-descriptor distance needs synshot.faces with dlib and its face-recognition "
                   "weights installed",
}
HIGHER_IS_BETTER: dict[str, bool] = {"psnr_full": True, "ssim_full": True, "l1_full": False, "psnr_head": True,
                                     "ssim_head": True, "l1_head": False, "lpips_full": False, "id_distance": False}
SSIM_WINDOW = 11


def _psnr(mse: Tensor) -> Tensor:
    return 10 * torch.log10(1.0 / mse.clamp_min(1e-10))


@torch.no_grad()
def frame_metrics(pred: Tensor, target: Tensor, mask: Tensor, *,
                  lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
                  id_distance: Callable[[Tensor, Tensor], Tensor] | None = None) -> dict[str, list[float]]:
    """Per-frame metrics of ``pred`` vs ``target`` ``(N,3,H,W)`` with the head ``mask`` ``(N,1,H,W)``.

    ``target`` is the ground truth already composited on the same background as ``pred``.
    Returns ``{metric: [value of frame 0, frame 1, ...]}``.
    """
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"frame_metrics: expected two (N,3,H,W) stacks of one shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    if mask.shape != (pred.shape[0], 1, *pred.shape[2:]):
        raise ValueError(f"frame_metrics: mask {tuple(mask.shape)} must be (N,1,H,W) for images {tuple(pred.shape)}")
    pred, target = pred.float().clamp(0, 1), target.float().clamp(0, 1)
    m = mask.float().clamp(0, 1)
    area = m.flatten(1).sum(1)
    if bool((area <= 0).any()):
        raise ValueError("frame_metrics: a frame has an empty head mask; the head metrics are undefined for it")
    err = pred - target
    smap = ssim_map(pred, target, window=SSIM_WINDOW).mean(1)  # (N, H-10, W-10)
    r = SSIM_WINDOW // 2
    m_centre = m[:, 0, r:m.shape[2] - r, r:m.shape[3] - r]
    out = {
        "psnr_full": _psnr(err.pow(2).flatten(1).mean(1)),
        "ssim_full": smap.flatten(1).mean(1),
        "l1_full": err.abs().flatten(1).mean(1),
        "psnr_head": _psnr((err.pow(2) * m).flatten(1).sum(1) / (3 * area)),
        "ssim_head": (smap * m_centre).flatten(1).sum(1) / m_centre.flatten(1).sum(1).clamp_min(1e-6),
        "l1_head": (err.abs() * m).flatten(1).sum(1) / (3 * area),
    }
    if lpips is not None:
        out["lpips_full"] = lpips(pred, target).reshape(-1)
    if id_distance is not None:
        out["id_distance"] = torch.as_tensor(id_distance(pred, target)).reshape(-1)
    return {k: [float(x) for x in v.cpu()] for k, v in out.items()}


def mean_over_frames(per_frame: dict[str, list[float]]) -> dict[str, float]:
    """Mean of each metric over frames (the number a single run reports)."""
    return {k: sum(v) / len(v) for k, v in per_frame.items() if v}


def absent_metrics(present: set[str] | list[str]) -> dict[str, str]:
    """The optional metrics not computed, with the reason (for the report's plain statement)."""
    return {k: why for k, why in OPTIONAL_METRICS.items() if k not in present}
