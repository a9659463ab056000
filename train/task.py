"""The prior's training step: batch -> SynShotPrior -> render_gaussians -> PriorLoss.

Mixed precision: with bf16 on, the prior's forward runs under ``torch.autocast(bfloat16)`` and its
outputs are cast back to fp32 before rasterisation and the loss, so the renderer (alpha
compositing over hundreds of Gaussians) and the SSIM statistics stay in fp32.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

import torch

from synshot.losses import PriorLoss
from synshot.model import render_gaussians
from synshot.render.config import RenderConfig
from train.encoder_input import EncoderInput
from train.loop import StepOutput

TENSOR_KEYS = ("tex", "verts", "exp", "rgb", "mask", "K", "w2c", "head_pose", "expression_coeffs")


def to_float(obj: Any) -> Any:
    """fp32 copies of every floating tensor in (nested) dataclasses/dicts; other values unchanged."""
    if isinstance(obj, torch.Tensor):
        return obj.float() if obj.is_floating_point() and obj.dtype != torch.float32 else obj
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return dataclasses.replace(obj, **{f.name: to_float(getattr(obj, f.name)) for f in dataclasses.fields(obj)
                                           if f.init})
    if isinstance(obj, dict):
        return {k: to_float(v) for k, v in obj.items()}
    return obj


class PriorTask:
    """Runs one micro-batch through the prior; also used (without grad) by validation."""

    def __init__(self, loss: PriorLoss, render: RenderConfig, device: str, bf16: bool,
                 encoder_input: EncoderInput | None = None) -> None:
        self.loss, self.render, self.device, self.bf16 = loss, render, device, bf16
        self.encoder_input = encoder_input  # rewrites batch["tex"] (train.encoder_input)
        self.timer = None  # a train.telemetry.PhaseTimer set by the Trainer: times the rasteriser forward

    def _phase(self, name: str):
        return self.timer.phase(name) if self.timer is not None else contextlib.nullcontext()

    def to_device(self, batch: dict) -> dict:
        out = dict(batch)
        for k in TENSOR_KEYS:
            if k in out:
                out[k] = out[k].to(self.device, non_blocking=True)
        return self.encoder_input(out) if self.encoder_input is not None else out

    def _autocast(self):
        if not self.bf16:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.split(":")[0], dtype=torch.bfloat16)

    def forward(self, module, batch: dict):
        """``(output, rendered_rgb (B,V,3,H,W))`` for a batch already on the device."""
        with self._autocast():
            output = module(batch["tex"], batch["verts"], batch["exp"], batch["head_pose"])
        output = to_float(output)
        h, w = batch["rgb"].shape[-2:]
        with self._phase("render_forward"):
            rgb, _ = render_gaussians(output.gaussians, batch["K"], batch["w2c"], h, w,
                                      background=self.loss.cfg.background, backend=self.render.backend)
        return output, rgb

    def training_step(self, engine, batch: dict, want_images: bool) -> StepOutput:
        batch = self.to_device(batch)
        output, rgb = self.forward(engine, batch)
        total, terms = self.loss(output, rgb, batch)
        logged = {k: v.detach() for k, v in terms.items()}
        logged["total"] = total.detach()
        stats = {f"vq/{k}": v.detach() for k, v in output.quantized.stats.items()}
        stats["model/num_gaussians"] = torch.tensor(float(output.gaussians.num_gaussians))
        images = None
        if want_images:
            images = (self.loss.composite_target(batch)[0].detach(), rgb[0].detach())
        b, v = batch["rgb"].shape[:2]
        return StepOutput(loss=total, terms=logged, stats=stats, images=images, num_samples=b, num_images=b * v)
