"""Small differentiable camera helpers of the tracker (torch): rotations, projection, alignment."""

from __future__ import annotations

import math

import numpy as np
import torch


def axis_angle_to_matrix(v: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, (3,) -> (3, 3), smooth at zero."""
    theta2 = (v * v).sum()
    theta = torch.sqrt(theta2 + 1e-16)
    k = v / theta
    zero = torch.zeros((), dtype=v.dtype)
    Kx = torch.stack([torch.stack([zero, -k[2], k[1]]), torch.stack([k[2], zero, -k[0]]),
                      torch.stack([-k[1], k[0], zero])])
    eye = torch.eye(3, dtype=v.dtype)
    return eye + torch.sin(theta) * Kx + (1 - torch.cos(theta)) * (Kx @ Kx)


def project(points: torch.Tensor, R: torch.Tensor, t: torch.Tensor, f: torch.Tensor, c: torch.Tensor
            ) -> torch.Tensor:
    """Head-frame points (N, 3) -> pixels (N, 2) (OpenCV camera, pixel centres at +0.5)."""
    cam = points @ R.T + t
    return f * cam[:, :2] / cam[:, 2:3].clamp_min(1e-4) + c


def rotation_error_deg(Ra: np.ndarray, Rb: np.ndarray) -> float:
    rel = np.asarray(Ra, dtype=np.float64) @ np.asarray(Rb, dtype=np.float64).T
    return math.degrees(math.acos(float(np.clip((np.trace(rel) - 1) / 2, -1, 1))))


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
