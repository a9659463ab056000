"""Small differentiable camera helpers of the tracker (torch): rotations, projection, alignment."""

from __future__ import annotations

import math

import numpy as np
import torch


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, (..., 3) -> (..., 3, 3), smooth at zero."""
    theta = torch.sqrt((v * v).sum(-1, keepdim=True) + 1e-16)
    k = v / theta
    zero = torch.zeros_like(k[..., 0])
    Kx = torch.stack([zero, -k[..., 2], k[..., 1], k[..., 2], zero, -k[..., 0], -k[..., 1], k[..., 0], zero],
                     -1).reshape(*v.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=v.dtype, device=v.device)
    s, c = torch.sin(theta)[..., None], torch.cos(theta)[..., None]
    return eye + s * Kx + (1 - c) * (Kx @ Kx)


def project(points: torch.Tensor, R: torch.Tensor, t: torch.Tensor, f: torch.Tensor, c: torch.Tensor
            ) -> torch.Tensor:
    """Head-frame points (P, 3) -> pixels (P, 2) (OpenCV camera, pixel centres at +0.5). Batched:
    points (N, P, 3) or (P, 3), R (N, 3, 3), t (N, 3), f (N,), c (N, 2) -> (N, P, 2)."""
    cam = points @ R.transpose(-1, -2) + t[..., None, :]
    f = f[..., None, None] if f.dim() else f
    return f * cam[..., :2] / cam[..., 2:3].clamp_min(1e-4) + c[..., None, :]


def head_to_camera(camera: dict, params: dict) -> np.ndarray:
    """4x4 ``w2c @ head_pose`` of one photo from its cameras.json frame and params.json record: where the
    head sits in the camera, the only part of a monocular fit's pose that photos determine."""
    return np.asarray(camera["w2c"], dtype=np.float64) @ np.asarray(params["head_pose"], dtype=np.float64)


def rotation_error_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    """The angle of ``Ra @ Rb.T``: atan2 of its sine (from the skew part) and cosine (from the trace), which
    stays exact near 0 where acos of the trace alone reads a rounding error as ~0.05 degrees."""
    rel = np.asarray(Ra, dtype=np.float64) @ np.asarray(Rb, dtype=np.float64).T
    sin = 0.5 * math.hypot(rel[2, 1] - rel[1, 2], rel[0, 2] - rel[2, 0], rel[1, 0] - rel[0, 1])
    return math.degrees(math.atan2(sin, (np.trace(rel) - 1) / 2))


def similarity_align(src: np.ndarray, dst: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """Umeyama: scale s, rotation R, translation t minimising |s R src + t - dst|^2 over (N, 3) points."""
    mu_s, mu_d = src.mean(0), dst.mean(0)
    a, b = src - mu_s, dst - mu_d
    cov = b.T @ a / len(src)
    U, S, Vt = np.linalg.svd(cov)
    D = np.eye(3)
    if np.linalg.det(U) * np.linalg.det(Vt) < 0:
        D[2, 2] = -1
    R = U @ D @ Vt
    var = (a ** 2).sum() / len(src)
    s = float(np.trace(np.diag(S) @ D) / var)
    t = mu_d - s * R @ mu_s
    return s, R, t


def facing_angle_deg(R: np.ndarray) -> float:
    """Angle between the head's forward axis and the direction to the camera (0: facing it)."""
    return float(np.degrees(np.arccos(np.clip(-R[2, 2], -1.0, 1.0))))
