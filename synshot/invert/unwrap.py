"""Texture unwrapping: the input images projected onto the head model's UV atlas (E_id's ``tex`` input).

The paper does not say how ``x_tex`` is formed for a real subject (its inversion section). Here:
each atlas texel's posed 3D position is projected into every image; a texel takes a frame's colour
when it passes a depth test against a point z-buffer of all texels (so the nose hides the far
cheek), lies inside the foreground mask, and is weighted by |cos| between its normal and the
viewing ray. Texels no image sees keep a mean texture, colour-matched to the observed texels.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _axis_derivative(p: Tensor, v: Tensor, dim: int) -> Tensor:
    """Mean of the forward and backward differences along ``dim`` that stay inside the atlas."""
    n = p.shape[dim]
    diff = p.narrow(dim, 1, n - 1) - p.narrow(dim, 0, n - 1)
    ok = (v.narrow(dim - 1, 1, n - 1) * v.narrow(dim - 1, 0, n - 1)).unsqueeze(0)
    diff = diff * ok
    pad_shape = list(p.shape)
    pad_shape[dim] = 1
    zeros, zeros_ok = p.new_zeros(pad_shape), ok.new_zeros([1] + pad_shape[1:])
    fwd, fwd_ok = torch.cat([diff, zeros], dim), torch.cat([ok, zeros_ok], dim)
    bwd, bwd_ok = torch.cat([zeros, diff], dim), torch.cat([zeros_ok, ok], dim)
    return (fwd + bwd) / (fwd_ok + bwd_ok).clamp_min(1)


def uv_normals(pos: Tensor, valid: Tensor) -> Tensor:
    """Unit normals (3,S,S) of a position map from finite differences inside the atlas (0 if isolated)."""
    v = valid.to(pos.dtype)
    du = _axis_derivative(pos, v, 2)
    dv = _axis_derivative(pos, v, 1)
    return F.normalize(torch.cross(du, dv, dim=0), dim=0, eps=1e-12)


def zbuffer_visibility(pix: Tensor, z: Tensor, width: int, height: int, K: Tensor) -> Tensor:
    """Which points (pix (P,2), depth z (P,)) are the nearest surface at their pixel.

    Each point writes its depth into its pixel and the 8 neighbours (closing gaps between texels);
    a point is visible when its depth is within a tolerance (5 mm + 2 pixel footprints) of the minimum.
    """
    inside = (z > 1e-4) & (pix[:, 0] >= 0) & (pix[:, 0] < width) & (pix[:, 1] >= 0) & (pix[:, 1] < height)
    visible = torch.zeros_like(inside)
    if not inside.any():
        return visible
    px = pix[inside].floor().long()
    zi = z[inside]
    zbuf = torch.full((height * width,), float("inf"), dtype=z.dtype, device=z.device)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            x = (px[:, 0] + dx).clamp(0, width - 1)
            y = (px[:, 1] + dy).clamp(0, height - 1)
            zbuf.scatter_reduce_(0, y * width + x, zi, reduce="amin")
    tol = 0.005 + 2.0 * zi / K[0, 0]
    visible[inside] = zi <= zbuf[px[:, 1] * width + px[:, 0]] + tol
    return visible


def posed_uv_positions(verts: Tensor, exp: Tensor, head_pose: Tensor) -> Tensor:
    """(N,3,S,S) world position of every texel: neutral ``verts`` (3,S,S) plus each frame's expression
    offsets ``exp`` (N,3,S,S), moved by its head pose (N,4,4)."""
    n, _, s, _ = exp.shape
    pos = (verts[None] + exp).reshape(n, 3, s * s).transpose(1, 2)           # (N,P,3), as synshot.camera.pose_points
    world = pos @ head_pose[:, :3, :3].transpose(1, 2) + head_pose[:, None, :3, 3]
    return world.transpose(1, 2).reshape(n, 3, s, s)


@torch.no_grad()
def unwrap_texture(pos_world: Tensor, valid: Tensor, rgb: Tensor, mask: Tensor, K: Tensor, w2c: Tensor,
                   fill: Tensor, *, full_weight: float = 0.3, mask_threshold: float = 0.5
                   ) -> tuple[Tensor, Tensor]:
    """Blend the images into UV.

    pos_world (N,3,S,S) posed texel positions per frame, valid (S,S) atlas, rgb (N,3,H,W),
    mask (N,1,H,W), K (N,3,3), w2c (N,4,4), fill (3,S,S) mean texture.
    Returns ``tex`` (3,S,S) in [0,1] (0 outside the atlas) and ``coverage`` (S,S) in [0,1].
    """
    n, _, s, _ = pos_world.shape
    h, w = rgb.shape[-2:]
    flat_valid = valid.reshape(-1)
    acc = torch.zeros(3, s * s, dtype=rgb.dtype, device=rgb.device)
    wsum = torch.zeros(s * s, dtype=rgb.dtype, device=rgb.device)
    for i in range(n):
        pts = pos_world[i].reshape(3, -1).T[flat_valid]  # (P,3)
        normals = uv_normals(pos_world[i], valid).reshape(3, -1).T[flat_valid]
        cam = pts @ w2c[i, :3, :3].T + w2c[i, :3, 3]
        z = cam[:, 2]
        pix = (cam[:, :2] / z.clamp_min(1e-6)[:, None]) @ K[i, :2, :2].T + K[i, :2, 2]
        vis = zbuffer_visibility(pix, z, w, h, K[i])
        centre_cam = -w2c[i, :3, :3].T @ w2c[i, :3, 3]
        ray = F.normalize(pts - centre_cam, dim=1)
        cos = (normals * ray).sum(1).abs()
        grid = torch.stack([2 * pix[:, 0] / w - 1, 2 * pix[:, 1] / h - 1], -1)[None, None]
        colour = F.grid_sample(rgb[i:i + 1], grid, mode="bilinear", align_corners=False)[0, :, 0]  # (3,P)
        m = F.grid_sample(mask[i:i + 1], grid, mode="bilinear", align_corners=False)[0, 0, 0]
        wt = cos * vis.to(cos.dtype) * (m > mask_threshold).to(cos.dtype)
        idx = flat_valid.nonzero()[:, 0]
        acc[:, idx] += colour * wt
        wsum[idx] += wt
    observed = acc / wsum.clamp_min(1e-8)
    coverage = (wsum / full_weight).clamp(0, 1)
    fill = fill.reshape(3, -1).to(rgb)
    seen = (coverage > 0.5) & flat_valid
    if seen.sum() > 10:  # colour-match the fill to what the images show (lighting, skin tone)
        gain = (observed[:, seen].mean(1) / fill[:, seen].mean(1).clamp_min(1e-3)).clamp(0.25, 4.0)
        fill = (fill * gain[:, None]).clamp(0, 1)
    tex = coverage * observed + (1 - coverage) * fill
    tex = tex * flat_valid.to(tex.dtype)
    return tex.reshape(3, s, s).clamp(0, 1), (coverage * flat_valid.to(coverage.dtype)).reshape(s, s)
