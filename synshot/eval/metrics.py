"""Evaluation metrics on a stack of frames: L1, PSNR, SSIM, LPIPS and identity cosine when available.

One function for every method (baselines, the full method, ablations), so a table compares
like with like. PSNR and SSIM are computed per frame and averaged (the usual protocol), not on
the pooled MSE.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor

from synshot.losses import psnr, ssim


@torch.no_grad()
def image_metrics(pred: Tensor, target: Tensor, *, lpips: Callable[[Tensor, Tensor], Tensor] | None = None,
                  identity_cosine: Callable[[Tensor, Tensor], Tensor] | None = None) -> dict[str, float]:
    """Mean per-frame metrics of ``pred`` vs ``target``, both ``(N,3,H,W)`` in [0, 1]."""
    if pred.shape != target.shape or pred.dim() != 4 or pred.shape[1] != 3:
        raise ValueError(f"image_metrics: expected two (N,3,H,W) stacks of one shape, got "
                         f"{tuple(pred.shape)} and {tuple(target.shape)}")
    pred, target = pred.float().clamp(0, 1), target.float()
    out = {
        "l1": float((pred - target).abs().mean()),
        "psnr": float(psnr(pred, target, reduce=False).mean()),
        "ssim": float(ssim(pred, target, reduce=False).mean()),
        "num_frames": int(pred.shape[0]),
    }
    if lpips is not None:
        out["lpips"] = float(lpips(pred, target).mean())
    if identity_cosine is not None:
        out["id_cosine"] = float(identity_cosine(pred, target).mean())
    return out


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Average of the numeric metrics over subjects (keys present in every row)."""
    if not rows:
        return {}
    keys = [k for k in rows[0] if all(k in r for r in rows) and k != "num_frames"]
    return {k: sum(float(r[k]) for r in rows) / len(rows) for k in keys}
