"""Validation on held-out identities (the loader's ``val`` split): PSNR, SSIM, LPIPS, loss.

Why every rank reads the whole (small) val split in a fixed order and takes every W-th sample:
the numbers do not depend on the number of GPUs, and every rank runs the same number of forward
passes (ZeRO-3 gathers parameters collectively, so ranks must stay in lock-step).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.distributed as dist

from synshot.data import DataError, make_loader
from synshot.data.writer import read_manifest
from synshot.losses import psnr, ssim
from train.config import TrainConfig
from train.task import PriorTask


class Validator:
    def __init__(self, cfg: TrainConfig, task: PriorTask, rank: int, world_size: int) -> None:
        self.task, self.rank, self.world_size = task, rank, world_size
        self.samples = cfg.logging.val_samples
        self.data = cfg.data.model_copy(update=dict(
            split=cfg.logging.val_split, batch_size=1, num_workers=0, resampled=False, shuffle_shards=False,
            shuffle_buffer=0, epochs=1, drop_last=False,
        ))
        try:
            manifest = read_manifest(self.data.url, self.data.split, self.data.storage_options)
        except (DataError, ValueError, OSError) as exc:
            raise DataError(f"validation split '{self.data.split}' of {self.data.url} is unusable ({exc}); "
                            "generate it or set logging.val_samples=0") from None
        self.samples = min(self.samples, int(manifest["num_samples"]))
        self.module = None  # set by the caller (engine)

    def __call__(self, step: int) -> dict[str, Any]:  # noqa: ARG002 - step kept for the loop's callback API
        if self.samples == 0:
            return {}
        per_rank = math.ceil(self.samples / self.world_size)
        loss = self.task.loss
        sums = torch.zeros(5, dtype=torch.float64)  # psnr, ssim, lpips, loss, count
        images = None
        it = iter(make_loader(self.data, 0, 1))
        first = None
        for j in range(per_rank):
            mine = None
            for r in range(self.world_size):  # one round: W consecutive samples, rank r takes the r-th
                if j * self.world_size + r >= self.samples:
                    break
                b = next(it, None)
                if b is None:
                    break
                first = b if first is None else first
                if r == self.rank:
                    mine = b
            # a rank without a sample this round repeats one with weight 0 (keeps ranks in lock-step)
            weight = 1.0 if mine is not None else 0.0
            batch = mine if mine is not None else first
            if batch is None:
                break
            batch = self.task.to_device(batch)
            output, rgb = self.task.forward(self.module, batch)
            target = loss.composite_target(batch)
            total, _ = loss(output, rgb, batch)
            lp = loss.lpips_net(rgb.flatten(0, 1), target.flatten(0, 1)).mean() if loss.lpips_enabled else None
            # the evaluation's psnr_full / ssim_full definition (synshot.eval.metrics): per frame, clamped to [0, 1]
            shown, truth = rgb.clamp(0, 1), target.clamp(0, 1)
            vals = [psnr(shown, truth, reduce=False).mean(), ssim(shown, truth, reduce=False).mean(),
                    lp if lp is not None else 0.0, total]
            sums += weight * torch.tensor([float(v) for v in vals] + [1.0], dtype=torch.float64)
            if images is None and weight > 0:
                images = (target[0].detach(), rgb[0].detach())
        if dist.is_available() and dist.is_initialized() and self.world_size > 1:
            t = sums.to(self.task.device)
            dist.all_reduce(t)
            sums = t.cpu()
        n = max(sums[4].item(), 1.0)
        out: dict[str, Any] = {"psnr": sums[0].item() / n, "ssim": sums[1].item() / n, "loss": sums[3].item() / n}
        if loss.lpips_enabled:
            out["lpips"] = sums[2].item() / n
        if images is not None:
            out["images"] = images
        return out
