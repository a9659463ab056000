"""Small differentiable geometry helpers of the prior: TBN frames, UV-map derivatives (rotations: synshot.camera)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def tbn_frame(du: Tensor, dv: Tensor, eps: float = 1e-12) -> Tensor:
    """Orthonormal right-handed frame ``[t, b, n]`` (columns) from position-map gradients.

    ``t = du / |du|``, ``n = t x dv`` normalised, ``b = n x t`` (Gram-Schmidt). Degenerate gradients
    (zero or parallel, e.g. outside the atlas) fall back to a frame built from a coordinate axis.
    """
    ex = torch.tensor([1.0, 0.0, 0.0], device=du.device, dtype=du.dtype).expand_as(du)
    ok_t = du.norm(dim=-1, keepdim=True) > eps
    t = F.normalize(torch.where(ok_t, du, ex), dim=-1)
    n = torch.cross(t, dv, dim=-1)
    # fallback normal: t x (the coordinate axis least aligned with t)
    axes = torch.eye(3, device=du.device, dtype=du.dtype)
    least = t.abs().argmin(-1)
    n_alt = torch.cross(t, axes[least], dim=-1)
    ok_n = n.norm(dim=-1, keepdim=True) > eps * (dv.norm(dim=-1, keepdim=True) + eps)
    n = F.normalize(torch.where(ok_n, n, n_alt), dim=-1)
    b = torch.cross(n, t, dim=-1)
    return torch.stack([t, b, n], -1)


def uv_derivatives(pos: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """d pos / du and d pos / dv (per UV unit) of ``(B, 3, S, S)``, using only in-atlas neighbours.

    Central differences where both neighbours are inside ``mask`` (S, S), one-sided at island
    borders, zero where neither neighbour is inside (the sampler's dilation fills those).
    """
    m = mask.to(pos.dtype)
    s_h, s_w = pos.shape[-2:]

    def along(dim: int, size: int) -> Tensor:
        d = pos.diff(dim=dim)
        vm = m.narrow(dim, 1, size - 1) * m.narrow(dim, 0, size - 1)
        pad_f = (0, 1) if dim == -1 else (0, 0, 0, 1)
        pad_b = (1, 0) if dim == -1 else (0, 0, 1, 0)
        num = F.pad(d * vm, pad_f) + F.pad(d * vm, pad_b)
        den = F.pad(vm, pad_f) + F.pad(vm, pad_b)
        return num / den.clamp_min(1) * size

    return along(-1, s_w), along(-2, s_h)


def dilate(maps: Tensor, mask: Tensor, iters: int) -> Tensor:
    """Fill texels outside ``mask`` with the mean of in-mask 3x3 neighbours, ``iters`` rings deep.

    Bilinear samples near island borders then blend with plausible values instead of zeros.
    """
    if iters <= 0:
        return maps
    m = mask.to(maps.dtype)[None, None]
    x = maps * m
    for _ in range(iters):
        num = F.avg_pool2d(x, 3, 1, 1, count_include_pad=False)
        den = F.avg_pool2d(m, 3, 1, 1, count_include_pad=False)
        fill = num / den.clamp_min(1e-8)
        grow = (den > 0).to(maps.dtype) * (1 - m)
        x = x + fill * grow
        m = m + grow
    return x
