"""Rasterise a mesh in UV space: per texel, the covering triangle and barycentric weights.

Done once per (template, size) in vectorised numpy and cached; turning per-vertex attributes into
a UV map is then a differentiable gather ``sum_k bary_k * attr[face_k]``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch


@dataclass
class UVRaster:
    size: int
    tri: np.ndarray        # (S, S) int64 triangle index, -1 outside the atlas
    bary: np.ndarray       # (S, S, 3) float32 barycentric weights (0 outside)
    _torch: dict = field(default_factory=dict, repr=False)   # cached gather indices/weights

    @property
    def mask(self) -> np.ndarray:
        return self.tri >= 0


def rasterize_uv(uv: np.ndarray, faces: np.ndarray, size: int, chunk: int = 2_000_000) -> UVRaster:
    """Texel (i, j) has its centre at u=(j+0.5)/S, v=(i+0.5)/S (docs/DESIGN.md convention)."""
    if size < 4:
        raise ValueError(f"UV map size must be >= 4, got {size}")
    p = uv[faces] * size - 0.5                          # (F, 3, 2) in texel-centre coordinates (x=j, y=i)
    lo = np.ceil(p.min(1) - 1e-9).astype(np.int64)
    hi = np.floor(p.max(1) + 1e-9).astype(np.int64)
    lo = np.clip(lo, 0, size - 1)
    hi = np.clip(hi, -1, size - 1)
    w = np.maximum(hi[:, 0] - lo[:, 0] + 1, 0)
    h = np.maximum(hi[:, 1] - lo[:, 1] + 1, 0)
    counts = w * h
    tri = np.full((size, size), -1, dtype=np.int64)
    bary = np.zeros((size, size, 3), dtype=np.float32)
    # expand each triangle into the texels of its bounding box, in chunks of candidates
    order = np.arange(len(faces))
    starts = np.concatenate([[0], np.cumsum(counts)])
    total = int(starts[-1])
    pos = 0
    while pos < total:
        end = min(total, pos + chunk)
        f0 = np.searchsorted(starts, pos, side="right") - 1
        f1 = np.searchsorted(starts, end, side="left")
        fid = np.repeat(order[f0:f1], counts[f0:f1])
        local = np.arange(starts[f0], starts[f1]) - np.repeat(starts[f0:f1], counts[f0:f1])
        sel = slice(pos - starts[f0], end - starts[f0])
        fid, local = fid[sel], local[sel]
        jj = lo[fid, 0] + local % np.maximum(w[fid], 1)
        ii = lo[fid, 1] + local // np.maximum(w[fid], 1)
        a, b, c = p[fid, 0], p[fid, 1], p[fid, 2]
        v0, v1 = b - a, c - a
        v2 = np.stack([jj, ii], -1) - a
        den = v0[:, 0] * v1[:, 1] - v1[:, 0] * v0[:, 1]
        ok = np.abs(den) > 1e-12
        den = np.where(ok, den, 1.0)
        l1 = (v2[:, 0] * v1[:, 1] - v1[:, 0] * v2[:, 1]) / den
        l2 = (v0[:, 0] * v2[:, 1] - v2[:, 0] * v0[:, 1]) / den
        l0 = 1 - l1 - l2
        eps = -1e-6
        inside = ok & (l0 >= eps) & (l1 >= eps) & (l2 >= eps)
        tri[ii[inside], jj[inside]] = fid[inside]
        bary[ii[inside], jj[inside]] = np.clip(np.stack([l0, l1, l2], -1)[inside], 0, 1)
        pos = end
    return UVRaster(size=size, tri=tri, bary=bary)


def gather_uv(attr: torch.Tensor, faces: torch.Tensor, raster: UVRaster) -> torch.Tensor:
    """(V, C) per-vertex attribute -> (C, S, S) UV map, 0 outside the atlas; differentiable in ``attr``."""
    S = raster.size
    key = (str(attr.device), attr.dtype, faces.data_ptr())
    if raster._torch.get("key") != key:
        tri = torch.as_tensor(raster.tri, device=attr.device)
        raster._torch = {"key": key, "idx": faces.to(attr.device)[tri.clamp(min=0)].reshape(-1),
                         "w": (torch.as_tensor(raster.bary, device=attr.device, dtype=attr.dtype)
                               * (tri >= 0)[..., None].to(attr.dtype)).reshape(-1, 3, 1)}
    idx, w = raster._torch["idx"], raster._torch["w"]
    vals = (attr[idx].reshape(-1, 3, attr.shape[1]) * w).sum(1)     # (S*S, C), 0 outside the atlas
    return vals.T.reshape(attr.shape[1], S, S)
