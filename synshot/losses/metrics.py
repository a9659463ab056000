"""Image metrics used as losses and for evaluation: SSIM (Gaussian window) and PSNR."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _gaussian_window(size: int, sigma: float, like: Tensor) -> Tensor:
    x = torch.arange(size, device=like.device, dtype=like.dtype) - (size - 1) / 2
    g = torch.exp(-(x**2) / (2 * sigma**2))
    return g / g.sum()


def ssim(
    x: Tensor, y: Tensor, *, window: int = 11, sigma: float = 1.5, data_range: float = 1.0, reduce: bool = True
) -> Tensor:
    """Structural similarity of ``(..., C, H, W)`` images (Wang et al. 2004), differentiable.

    Gaussian window ``window`` x ``window``, std ``sigma``, 'valid' filtering (no padding), constants
    K1 = 0.01, K2 = 0.03. ``reduce``: mean over everything, else one value per leading index.
    """
    s = ssim_map(x, y, window=window, sigma=sigma, data_range=data_range)
    if reduce:
        return s.mean()
    return s.flatten(1).mean(1).reshape(x.shape[:-3])


def ssim_map(x: Tensor, y: Tensor, *, window: int = 11, sigma: float = 1.5, data_range: float = 1.0) -> Tensor:
    """The per-pixel SSIM of :func:`ssim`: ``(B, C, H - window + 1, W - window + 1)`` with the leading
    dims flattened into B; pixel (i, j) of the map is centred on image pixel (i + window//2, j + window//2)."""
    if x.shape != y.shape:
        raise ValueError(f"ssim: shapes differ {tuple(x.shape)} vs {tuple(y.shape)}")
    if x.shape[-1] < window or x.shape[-2] < window:
        raise ValueError(f"ssim: images {tuple(x.shape[-2:])} smaller than the {window}x{window} window")
    c, h, w = x.shape[-3:]
    x = x.reshape(-1, c, h, w)
    y = y.reshape(-1, c, h, w)
    g = _gaussian_window(window, sigma, x)
    kx = g.view(1, 1, 1, -1).expand(c, 1, 1, window)
    ky = g.view(1, 1, -1, 1).expand(c, 1, window, 1)

    def blur(t: Tensor) -> Tensor:
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x**2
    syy = blur(y * y) - mu_y**2
    sxy = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x**2 + mu_y**2 + c1) * (sxx + syy + c2))


def psnr(x: Tensor, y: Tensor, *, data_range: float = 1.0, reduce: bool = True) -> Tensor:
    """Peak signal-to-noise ratio in dB of ``(..., C, H, W)`` images: 10 log10(range^2 / MSE).

    ``reduce``: PSNR of the whole batch's MSE (a scalar), else one value per image.
    """
    if x.shape != y.shape:
        raise ValueError(f"psnr: shapes differ {tuple(x.shape)} vs {tuple(y.shape)}")
    err = (x.float() - y.float()) ** 2
    mse = err.mean() if reduce else err.flatten(-3).mean(-1)
    return 10 * torch.log10(data_range**2 / mse.clamp_min(1e-12))
