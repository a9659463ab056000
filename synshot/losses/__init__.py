"""Losses and image metrics: PriorLoss (L_color + L_geom + L_reg + VQ), SSIM, PSNR, vendored LPIPS."""

from synshot.losses.lpips import LPIPS, LPIPSError
from synshot.losses.metrics import psnr, ssim
from synshot.losses.prior_loss import LossConfig, PriorLoss

__all__ = ["LPIPS", "LPIPSError", "LossConfig", "PriorLoss", "psnr", "ssim"]
