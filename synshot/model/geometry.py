"""Small differentiable geometry helpers: quaternions (wxyz), TBN frames, UV-map derivatives."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def quat_multiply(a: Tensor, b: Tensor) -> Tensor:
    """Hamilton product of wxyz quaternions (broadcasting): rotation ``a`` after ``b``."""
    aw, ax, ay, az = a.unbind(-1)
    bw, bx, by, bz = b.unbind(-1)
    return torch.stack(
        [
            aw * bw - ax * bx - ay * by - az * bz,
            aw * bx + ax * bw + ay * bz - az * by,
            aw * by - ax * bz + ay * bw + az * bx,
            aw * bz + ax * by - ay * bx + az * bw,
        ],
        -1,
    )


def quat_to_matrix(q: Tensor) -> Tensor:
    """Unit-normalised wxyz quaternions ``(..., 4)`` -> rotation matrices ``(..., 3, 3)``."""
    w, x, y, z = F.normalize(q, dim=-1).unbind(-1)
    return torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        -1,
    ).reshape(q.shape[:-1] + (3, 3))


def matrix_to_quat(m: Tensor) -> Tensor:
    """Rotation matrices ``(..., 3, 3)`` -> unit wxyz quaternions with w >= 0 (Shepperd's method)."""
    m00, m01, m02 = m[..., 0, 0], m[..., 0, 1], m[..., 0, 2]
    m10, m11, m12 = m[..., 1, 0], m[..., 1, 1], m[..., 1, 2]
    m20, m21, m22 = m[..., 2, 0], m[..., 2, 1], m[..., 2, 2]
    q_abs = torch.sqrt(
        torch.stack(
            [1 + m00 + m11 + m22, 1 + m00 - m11 - m22, 1 - m00 + m11 - m22, 1 - m00 - m11 + m22], -1
        ).clamp_min(0)
    )
    cand = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m21 - m12, m02 - m20, m10 - m01], -1),
            torch.stack([m21 - m12, q_abs[..., 1] ** 2, m10 + m01, m02 + m20], -1),
            torch.stack([m02 - m20, m10 + m01, q_abs[..., 2] ** 2, m12 + m21], -1),
            torch.stack([m10 - m01, m20 + m02, m21 + m12, q_abs[..., 3] ** 2], -1),
        ],
        -2,
    ) / (2 * q_abs[..., None].clamp_min(0.1))
    best = q_abs.argmax(-1)
    q = torch.gather(cand, -2, best[..., None, None].expand(best.shape + (1, 4))).squeeze(-2)
    q = F.normalize(q, dim=-1)
    return torch.where(q[..., :1] < 0, -q, q)


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
