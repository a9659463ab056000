"""Training loss of the prior: L = L_color + L_geom + L_reg + L_vq (paper §3; weights are ours).

Images are compared in full, with the ground truth composited over the same background colour the
Gaussians are rendered on (``LossConfig.background``; render with it). This keeps the silhouette
in the loss (a Gaussian that leaks outside the head is penalised) without a separate mask term.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
from pydantic import Field
from torch import Tensor, nn

from synshot.config import ConfigBase
from synshot.losses.lpips import LPIPS
from synshot.losses.metrics import ssim

_WARNED: set[str] = set()  # LPIPS-off warnings already given in this process (one per distinct message)


class LossConfig(ConfigBase):
    """Loss weights (alpha, beta, gamma, delta of the paper) and the LPIPS source."""

    l1: float = Field(0.8, ge=0)  # alpha
    ssim: float = Field(0.2, ge=0)  # beta, on (1 - SSIM)
    lpips: float = Field(0.1, ge=0)  # gamma
    geom: float = Field(1.0, ge=0)  # delta, on the L1 of decoded tex / verts / exp maps
    reg_position: float = Field(0.1, ge=0)  # L2 on R_gauss position corrections (units of max_offset)
    reg_scale: float = Field(0.01, ge=0)  # L2 on R_gauss log-scale corrections
    vq: float = Field(1.0, ge=0)  # commitment loss of the quantisers
    # geometry maps are compared in network units: metres / unit (match ModelConfig.verts_unit/exp_unit)
    verts_unit: float = Field(0.1, gt=0)
    exp_unit: float = Field(0.01, gt=0)
    background: list[float] = Field(default_factory=lambda: [1.0, 1.0, 1.0], min_length=3, max_length=3)
    lpips_backbone: str | None = None  # local torchvision state dict (alexnet-owt-7be5be79.pth / vgg16-397923af.pth)
    lpips_net: str = Field("alex", pattern="^(alex|vgg)$")
    lpips_heads: str | None = None  # default: weights/v0.1/{net}.pth of the installed lpips wheel
    lpips_max_size: int = Field(256, ge=32)  # images larger than this are area-downsampled for LPIPS


class PriorLoss(nn.Module):
    """``PriorLoss(cfg)(output, rendered_rgb, batch) -> (total, terms)``; see the module docstring."""

    TERMS = ("l1", "ssim", "lpips", "geom", "reg", "vq")

    def __init__(self, cfg: LossConfig | None = None) -> None:
        super().__init__()
        self.cfg = cfg = cfg or LossConfig()
        self.lpips_net: LPIPS | None = None
        if cfg.lpips > 0:
            if cfg.lpips_backbone is None:
                msg = ("LPIPS term is OFF: no lpips_backbone file configured (set loss.lpips_backbone to a local "
                       f"torchvision {cfg.lpips_net} state dict, e.g. alexnet-owt-7be5be79.pth); nothing is downloaded")
                if msg not in _WARNED:  # once per process, however many PriorLoss objects are built
                    _WARNED.add(msg)
                    warnings.warn(msg, UserWarning, stacklevel=2)
            else:
                self.lpips_net = LPIPS(Path(cfg.lpips_backbone), cfg.lpips_net, cfg.lpips_heads)
        self.register_buffer("bg", torch.tensor(cfg.background).view(3, 1, 1), persistent=False)

    @property
    def lpips_enabled(self) -> bool:
        return self.lpips_net is not None

    def composite_target(self, batch: dict) -> Tensor:
        """Ground-truth images over the loss background: rgb * mask + bg * (1 - mask)."""
        rgb, mask = batch["rgb"], batch["mask"]
        return rgb * mask + self.bg.to(rgb) * (1 - mask)

    def forward(self, output, rendered_rgb: Tensor, batch: dict) -> tuple[Tensor, dict[str, Tensor]]:
        cfg = self.cfg
        target = self.composite_target(batch)
        if rendered_rgb.shape != target.shape:
            raise ValueError(f"rendered_rgb {tuple(rendered_rgb.shape)} vs batch rgb {tuple(target.shape)}: "
                             "render at the batch's image size and views")
        pred = rendered_rgb
        terms: dict[str, Tensor] = {}
        terms["l1"] = (pred - target).abs().mean()
        terms["ssim"] = 1 - ssim(pred, target)
        if self.lpips_net is not None:
            p, t = pred.flatten(0, 1), target.flatten(0, 1)
            if max(p.shape[-2:]) > cfg.lpips_max_size:
                f = cfg.lpips_max_size / max(p.shape[-2:])
                p = nn.functional.interpolate(p, scale_factor=f, mode="area")
                t = nn.functional.interpolate(t, scale_factor=f, mode="area")
            terms["lpips"] = self.lpips_net(p, t).mean()
        else:
            terms["lpips"] = pred.new_zeros(())
        terms["geom"] = self.geom_loss(output.decoded, batch)
        g = output.gaussians
        terms["reg"] = cfg.reg_position * g.delta_position.pow(2).mean() + cfg.reg_scale * g.delta_log_scale.pow(2).mean()
        terms["vq"] = output.quantized.loss
        total = (cfg.l1 * terms["l1"] + cfg.ssim * terms["ssim"] + cfg.lpips * terms["lpips"]
                 + cfg.geom * terms["geom"] + terms["reg"] + cfg.vq * terms["vq"])
        return total, terms

    def geom_loss(self, decoded, batch: dict) -> Tensor:
        """L1 on tex + verts/verts_unit + exp/exp_unit inside the atlas (texels where GT verts != 0)."""
        atlas = (batch["verts"].abs().sum(1, keepdim=True) > 0).to(decoded.tex)
        denom = atlas.sum().clamp_min(1) * 3
        l_tex = ((decoded.tex - batch["tex"]).abs() * atlas).sum() / denom
        l_verts = ((decoded.verts - batch["verts"]).abs() * atlas).sum() / denom / self.cfg.verts_unit
        l_exp = ((decoded.exp - batch["exp"]).abs() * atlas).sum() / denom / self.cfg.exp_unit
        return l_tex + l_verts + l_exp
