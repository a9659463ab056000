"""EWA projection of 3D Gaussians to the image plane and SH colour evaluation (pure torch).

The maths follows gsplat 1.5.3 (``gsplat/cuda/_torch_impl.py`` and the CUDA projection kernel),
copied rather than imported because gsplat's private modules are not a stable API: world-to-camera,
pinhole Jacobian with the 1.3x field-of-view clamp, ``eps2d`` blur, conic, opacity-aware radius
(``min(3.33, sqrt(2 ln(255 opacity)))`` sigmas), near/far and out-of-image culling.
Everything here is differentiable through plain autograd (it is O(N), cheap next to compositing).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from synshot.camera import quat_to_matrix

ALPHA_THRESHOLD = 1.0 / 255.0  # gsplat Common.h: alphas below this are skipped
EPS2D = 0.3  # gsplat default blur added to the 2D covariance (pixels^2)
MAX_EXTEND = 3.33  # gsplat bounding-box half-size in standard deviations

SH_C0 = 0.28209479177387814


@dataclass
class Projected:
    """Visible (camera, Gaussian) pairs, flattened to M rows; all float tensors keep autograd."""

    cam: Tensor  # (M,) long camera index
    gid: Tensor  # (M,) long Gaussian index
    means2d: Tensor  # (M, 2) pixels
    conics: Tensor  # (M, 3) (a, b, c): sigma = 0.5 (a dx^2 + c dy^2) + b dx dy
    depths: Tensor  # (M,) camera z
    opacities: Tensor  # (M,)
    radii: Tensor  # (M, 2) int pixels (non-differentiable bounding box half-size)


def project(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float,
    far_plane: float,
) -> Projected:
    """Project N Gaussians into C cameras and keep only the pairs that can touch a pixel."""
    # Culling decisions are made without autograd, then only visible pairs are recomputed with it,
    # so the differentiable part costs O(visible) instead of O(C*N).
    with torch.no_grad():
        Rw, tw = viewmats[:, :3, :3], viewmats[:, :3, 3]
        z_all = torch.einsum("cj,nj->cn", Rw[:, 2], means) + tw[:, 2:3]  # (C, N)
        keep = (z_all > near_plane) & (z_all < far_plane) & (opacities >= ALPHA_THRESHOLD)[None]
        cam, gid = keep.nonzero(as_tuple=True)
    return _project_pairs(means, quats, scales, opacities, viewmats, Ks, width, height, cam, gid)


def _project_pairs(means, quats, scales, opacities, viewmats, Ks, width, height, cam, gid) -> Projected:
    """Differentiable EWA projection of the (camera, Gaussian) pairs ``(cam, gid)``; drops off-image ones."""
    R = quat_to_matrix(quats[gid])  # (M,3,3)
    Mrs = R * scales[gid][:, None, :]  # R S, columns scaled
    Rw = viewmats[cam, :3, :3]
    tw = viewmats[cam, :3, 3]
    mc = (Rw @ means[gid][:, :, None])[..., 0] + tw  # (M,3) camera coords
    x, y, z = mc.unbind(-1)
    K = Ks[cam]
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    # Jacobian evaluated at a position clamped to 1.3x the field of view (gsplat / 3DGS).
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_xp = (width - cx) / fx + 0.3 * tan_fovx
    lim_xn = cx / fx + 0.3 * tan_fovx
    lim_yp = (height - cy) / fy + 0.3 * tan_fovy
    lim_yn = cy / fy + 0.3 * tan_fovy
    tx = z * torch.minimum(torch.maximum(x / z, -lim_xn), lim_xp)
    ty = z * torch.minimum(torch.maximum(y / z, -lim_yn), lim_yp)
    zero = torch.zeros_like(z)
    J = torch.stack([fx / z, zero, -fx * tx / (z * z), zero, fy / z, -fy * ty / (z * z)], -1).reshape(-1, 2, 3)
    A = J @ Rw @ Mrs  # (M,2,3); cov2d = A A^T
    cov = A @ A.transpose(1, 2)
    a = cov[:, 0, 0] + EPS2D
    b = cov[:, 0, 1]
    c = cov[:, 1, 1] + EPS2D
    det = (a * c - b * b).clamp_min(1e-10)
    conics = torch.stack([c / det, -b / det, a / det], -1)
    means2d = torch.stack([fx * x / z + cx, fy * y / z + cy], -1)
    op = opacities[gid]
    with torch.no_grad():
        extend = torch.sqrt(2.0 * torch.log(op / ALPHA_THRESHOLD).clamp_min(0.0)).clamp_max(MAX_EXTEND)
        radii = torch.stack([torch.ceil(extend * a.sqrt()), torch.ceil(extend * c.sqrt())], -1)
        mx, my = means2d[:, 0], means2d[:, 1]
        inside = (
            (mx + radii[:, 0] > 0) & (mx - radii[:, 0] < width) & (my + radii[:, 1] > 0) & (my - radii[:, 1] < height)
        )
        ok = inside & (radii > 0).all(-1) & (a * c - b * b > 0)
        sel = ok.nonzero(as_tuple=True)[0]
    if sel.numel() != cam.numel():
        return Projected(
            cam[sel], gid[sel], means2d[sel], conics[sel], z[sel], op[sel], radii[sel].to(torch.int64)
        )
    return Projected(cam, gid, means2d, conics, z, op, radii.to(torch.int64))


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Real SH basis (M, (degree+1)^2) at unit directions, gsplat/3DGS sign conventions (Sloan 2013)."""
    out = [torch.full_like(dirs[:, 0], SH_C0)]
    if degree >= 1:
        x, y, z = dirs.unbind(-1)
        f = -0.48860251190292
        out += [f * y, -f * z, f * x]
    if degree >= 2:
        z2 = z * z
        fB = -1.092548430592079 * z
        fA = 0.5462742152960395
        c1 = x * x - y * y
        s1 = 2 * x * y
        out += [fA * s1, fB * y, 0.9461746957575601 * z2 - 0.3153915652525201, fB * x, fA * c1]
    if degree >= 3:
        fC = -2.285228997322329 * z2 + 0.4570457994644658
        fB = 1.445305721320277 * z
        fA = -0.5900435899266435
        c2 = x * c1 - y * s1
        s2 = x * s1 + y * c1
        out += [
            fA * s2, fB * s1, fC * y, z * (1.865881662950577 * z2 - 1.119528997770346), fC * x, fB * c1, fA * c2,
        ]
    if degree > 3:
        raise ValueError(f"sh_degree={degree}: only SH degrees 0..3 are supported")
    return torch.stack(out, -1)


def eval_sh_colors(degree: int, coeffs: Tensor, means: Tensor, campos: Tensor) -> Tensor:
    """RGB (M,3) from SH coeffs (M,K,3) seen from camera centres campos (M,3): 3DGS +0.5, clamp at 0."""
    dirs = means - campos
    dirs = dirs / dirs.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    basis = sh_basis(degree, dirs)  # (M, B)
    nb = basis.shape[-1]
    rgb = (basis[:, :, None] * coeffs[:, :nb, :]).sum(1)
    return (rgb + 0.5).clamp_min(0.0)
