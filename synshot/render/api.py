"""``rasterize``: the renderer entry point (docs/DESIGN.md "Renderer"), gsplat semantics.

Backends: ``torch`` (this package, CPU or GPU, differentiable) and ``gsplat`` (CUDA kernels,
CUDA tensors only). ``auto`` picks gsplat for CUDA tensors and torch otherwise.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal, Optional

import torch
from torch import Tensor

from synshot.render.composite import composite
from synshot.render.project import eval_sh_colors, project
from synshot.render.tiles import DEFAULT_MAX_PAIRS, build_plan, choose_tile_size

Backend = Literal["auto", "torch", "gsplat"]


@dataclass
class RenderOutput:
    """Renderer output, layout as gsplat: channel-last images per camera."""

    rgb: Tensor  # (C, H, W, 3), background blended in
    alpha: Tensor  # (C, H, W, 1)
    depth: Tensor  # (C, H, W, 1) expected z-depth sum(w z) / alpha; 0 where alpha == 0


def _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds):
    N = means.shape[0] if means.dim() == 2 else -1
    problems = []
    if means.dim() != 2 or means.shape[1] != 3:
        problems.append(f"means must be (N,3), got {tuple(means.shape)}")
    if quats.shape != (N, 4):
        problems.append(f"quats must be (N,4) wxyz with N={N}, got {tuple(quats.shape)}")
    if scales.shape != (N, 3):
        problems.append(f"scales must be (N,3) linear, got {tuple(scales.shape)}")
    if opacities.shape != (N,):
        problems.append(f"opacities must be (N,), got {tuple(opacities.shape)}")
    if not (colors.dim() in (2, 3) and colors.shape[0] == N and colors.shape[-1] == 3):
        problems.append(f"colors must be (N,3) RGB or (N,K,3) SH, got {tuple(colors.shape)}")
    if viewmats.dim() != 3 or viewmats.shape[1:] != (4, 4):
        problems.append(f"viewmats must be (C,4,4) world-to-camera, got {tuple(viewmats.shape)}")
    C = viewmats.shape[0]
    if Ks.shape != (C, 3, 3):
        problems.append(f"Ks must be (C,3,3) with C={C}, got {tuple(Ks.shape)}")
    if backgrounds is not None and backgrounds.shape != (C, 3):
        problems.append(f"backgrounds must be (C,3), got {tuple(backgrounds.shape)}")
    if int(width) <= 0 or int(height) <= 0:
        problems.append(f"width/height must be positive, got {width}x{height}")
    if colors.dim() == 2 and sh_degree is not None:
        problems.append("sh_degree is set but colors is (N,3) RGB; pass SH coefficients (N,K,3) or sh_degree=None")
    if colors.dim() == 3:
        k = colors.shape[1]
        deg = sh_degree if sh_degree is not None else math.isqrt(k) - 1
        if sh_degree is None and math.isqrt(k) ** 2 != k:
            problems.append(f"colors has K={k} SH coefficients, not a square; pass sh_degree explicitly")
        elif not 0 <= deg <= 3 or (deg + 1) ** 2 > k:
            problems.append(f"sh_degree={deg} needs 0..3 and (deg+1)^2 <= K={k}")
    if problems:
        raise ValueError("rasterize: " + "; ".join(problems))


_GSPLAT_STATUS: Optional[tuple[bool, str]] = None


def gsplat_status() -> tuple[bool, str]:
    """(usable, reason): can gsplat's CUDA kernels be loaded? Cached; the first call may JIT-build them."""
    global _GSPLAT_STATUS
    if _GSPLAT_STATUS is None:
        try:
            from gsplat.cuda._backend import _C  # private, but the only way to ask without rendering

            _GSPLAT_STATUS = (_C is not None, "gsplat found no CUDA toolkit" if _C is None else "ok")
        except Exception as exc:  # a failed JIT build raises many kinds of errors
            _GSPLAT_STATUS = (False, f"{type(exc).__name__}: {exc}")
    return _GSPLAT_STATUS


def resolve_backend(backend: str, is_cuda: bool) -> str:
    """``auto`` -> gsplat on CUDA when its kernels load (else torch, with one warning), torch on CPU."""
    if backend not in ("auto", "torch", "gsplat"):
        raise ValueError(f"rasterize: backend must be 'auto', 'torch' or 'gsplat', got {backend!r}")
    if backend != "auto":
        return backend
    if not is_cuda:
        return "torch"
    usable, reason = gsplat_status()
    if not usable:
        global _WARNED_FALLBACK
        if not _WARNED_FALLBACK:
            warnings.warn(f"rasterize: gsplat CUDA kernels unavailable ({reason}); backend 'auto' uses the torch "
                          "backend on the GPU (slower). Pass backend='gsplat' to make this an error.", stacklevel=3)
            _WARNED_FALLBACK = True
        return "torch"
    return "gsplat"


_WARNED_FALLBACK = False


def _sh_degree(colors: Tensor, sh_degree: Optional[int]) -> Optional[int]:
    if colors.dim() == 2:
        return None
    return sh_degree if sh_degree is not None else math.isqrt(colors.shape[1]) - 1


def rasterize(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    sh_degree: Optional[int] = None,
    backgrounds: Optional[Tensor] = None,
    backend: Backend = "auto",
    tile_size: Optional[int] = None,
    near_plane: float = 0.01,
    far_plane: float = 100.0,
) -> RenderOutput:
    """Render N 3D Gaussians into C pinhole cameras (3DGS EWA splatting, gsplat semantics).

    ``colors`` (N,3) are used as RGB as is; (N,K,3) are SH coefficients evaluated at degree
    ``sh_degree`` (default: sqrt(K)-1) from the camera centre, plus 0.5, clamped at 0.
    ``viewmats`` are OpenCV world-to-camera matrices, ``Ks`` pixel intrinsics (pixel centres at +0.5).
    ``tile_size`` only changes speed: None = the backend's choice (gsplat 16; torch picks 4, 8 or 16
    from the projected splat sizes, see ``choose_tile_size``).
    """
    if tile_size is not None and not 1 <= int(tile_size) <= 64:
        raise ValueError(f"rasterize: tile_size must be in 1..64 or None, got {tile_size}")
    _check_inputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds)
    backend = resolve_backend(backend, means.is_cuda)
    # Rendering runs in float32 (or float64) whatever the caller's autocast/bf16 setting: transmittance
    # products over hundreds of splats are not meaningful in 8-bit mantissas.
    f32 = lambda t: t.float() if t is not None and t.dtype in (torch.float16, torch.bfloat16) else t  # noqa: E731
    means, quats, scales, opacities, colors, viewmats, Ks, backgrounds = map(
        f32, (means, quats, scales, opacities, colors, viewmats, Ks, backgrounds)
    )
    with torch.autocast(device_type=means.device.type, enabled=False):
        return _dispatch(means, quats, scales, opacities, colors, viewmats, Ks, int(width), int(height), sh_degree,
                         backgrounds, backend, tile_size, near_plane, far_plane)


def _dispatch(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds, backend,
              tile_size, near_plane, far_plane) -> RenderOutput:
    if backend == "gsplat":
        return _rasterize_gsplat(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            _sh_degree(colors, sh_degree), backgrounds, tile_size or 16, near_plane, far_plane,
        )
    return rasterize_torch(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        sh_degree=_sh_degree(colors, sh_degree), backgrounds=backgrounds, tile_size=tile_size,
        near_plane=near_plane, far_plane=far_plane,
    )


def rasterize_torch(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, *, sh_degree=None,
    backgrounds=None, tile_size=None, near_plane=0.01, far_plane=100.0, max_pairs: int = DEFAULT_MAX_PAIRS,
) -> RenderOutput:
    """Pure-PyTorch backend (inputs already validated); ``max_pairs`` bounds memory per chunk."""
    C = viewmats.shape[0]
    sh_degree = _sh_degree(colors, sh_degree)
    viewmats = viewmats.to(means.dtype)
    Ks = Ks.to(means.dtype)
    p = project(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane, far_plane)
    if colors.dim() == 3:
        campos = torch.linalg.inv(viewmats)[:, :3, 3]
        rgb_rows = eval_sh_colors(sh_degree, colors[p.gid], means[p.gid], campos[p.cam])
    else:
        rgb_rows = colors[p.gid]
    feats = torch.cat([rgb_rows, p.depths[:, None]], -1)
    if tile_size is None:
        tile_size = choose_tile_size(p.means2d, p.radii, width, height)
    plan = build_plan(p.means2d, p.radii, p.depths, p.cam, p.conics, p.opacities, C, width, height, int(tile_size),
                      max_pairs)
    img = composite(p.means2d, p.conics, p.opacities, feats, plan)[:, :height, :width]
    rgb, depth_acc, alpha = img[..., :3], img[..., 3:4], img[..., 4:5]
    if backgrounds is not None:
        rgb = rgb + (1.0 - alpha) * backgrounds.to(rgb.dtype)[:, None, None, :]
    depth = depth_acc / alpha.clamp_min(1e-10)
    return RenderOutput(rgb=rgb, alpha=alpha, depth=depth)


def _rasterize_gsplat(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, backgrounds, tile_size,
    near_plane, far_plane,
) -> RenderOutput:
    """gsplat CUDA kernels; imported lazily because importing its CUDA backend on CPU raises."""
    if not means.is_cuda:
        raise ValueError(
            "rasterize: backend='gsplat' needs CUDA tensors (gsplat has no CPU kernels); "
            "use backend='torch' or 'auto' on CPU"
        )
    usable, reason = gsplat_status()
    if not usable:
        raise RuntimeError(f"rasterize: backend='gsplat' but its CUDA kernels do not load: {reason}; "
                           "use backend='torch' (or 'auto', which falls back)")
    import gsplat

    render, alphas, _meta = gsplat.rasterization(
        means, quats, scales, opacities, colors, viewmats, Ks, width, height,
        near_plane=near_plane, far_plane=far_plane, sh_degree=sh_degree, tile_size=tile_size,
        backgrounds=backgrounds, render_mode="RGB+ED", packed=False,
    )
    return RenderOutput(rgb=render[..., :3], alpha=alphas, depth=render[..., 3:4])
