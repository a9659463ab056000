"""Small camera geometry for the inversion: se(3) corrections, orbits for turntables, posing UV maps."""

from __future__ import annotations

import math

import torch
from torch import Tensor


def skew(v: Tensor) -> Tensor:
    """(..., 3) -> (..., 3, 3) cross-product matrices."""
    z = torch.zeros_like(v[..., 0])
    return torch.stack([
        torch.stack([z, -v[..., 2], v[..., 1]], -1),
        torch.stack([v[..., 2], z, -v[..., 0]], -1),
        torch.stack([-v[..., 1], v[..., 0], z], -1),
    ], -2)


def so3_exp(omega: Tensor) -> Tensor:
    """Rodrigues: axis-angle (..., 3) -> rotation (..., 3, 3); smooth (Taylor) near zero for gradients."""
    theta2 = (omega * omega).sum(-1, keepdim=True)[..., None]
    theta = torch.sqrt(theta2 + 1e-20)
    small = theta2 < 1e-8
    a = torch.where(small, 1 - theta2 / 6, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24, (1 - torch.cos(theta)) / theta2.clamp_min(1e-20))
    k = skew(omega)
    eye = torch.eye(3, dtype=omega.dtype, device=omega.device).expand(k.shape)
    return eye + a * k + b * (k @ k)


def se3_correction(xi: Tensor) -> Tensor:
    """(..., 6) [rotation axis-angle, translation in metres] -> (..., 4, 4) left-multiplied onto w2c."""
    out = torch.zeros(*xi.shape[:-1], 4, 4, dtype=xi.dtype, device=xi.device)
    out[..., :3, :3] = so3_exp(xi[..., :3])
    out[..., :3, 3] = xi[..., 3:]
    out[..., 3, 3] = 1.0
    return out


def apply_camera_delta(w2c: Tensor, xi: Tensor) -> Tensor:
    """Corrected world-to-camera matrices ``exp(xi) @ w2c`` (a small motion in the camera frame)."""
    return se3_correction(xi) @ w2c


def rotation_about_axis(axis: Tensor, angle: float) -> Tensor:
    axis = axis / axis.norm()
    return so3_exp(axis * angle)


def orbit_w2c(w2c: Tensor, centre: Tensor, up: Tensor, angle_deg: float) -> Tensor:
    """Move a camera on a circle about the vertical axis ``up`` through ``centre`` by ``angle_deg``."""
    c2w = torch.linalg.inv(w2c.double())
    rot = rotation_about_axis(up.double(), math.radians(angle_deg))
    move = torch.eye(4, dtype=torch.float64)
    move[:3, :3] = rot
    move[:3, 3] = centre.double() - rot @ centre.double()
    return torch.linalg.inv(move @ c2w).to(w2c.dtype)


def turntable_angles(frames: int, degrees: float) -> list[float]:
    """0 -> +deg -> -deg -> 0 (a smooth swing that starts and ends at the reference view)."""
    return [degrees * math.sin(2 * math.pi * i / frames) for i in range(frames)]


def pose_points(points_head: Tensor, head_pose: Tensor) -> Tensor:
    """(..., 3) head-frame points -> world with a (4, 4) head pose."""
    return points_head @ head_pose[:3, :3].T + head_pose[:3, 3]


def camera_error(w2c_a: Tensor, w2c_b: Tensor) -> tuple[float, float]:
    """(rotation degrees, camera-centre distance in metres) between two w2c matrices."""
    rel = w2c_a[:3, :3].double() @ w2c_b[:3, :3].double().T
    cos = ((torch.trace(rel) - 1) / 2).clamp(-1, 1)
    ca = -w2c_a[:3, :3].double().T @ w2c_a[:3, 3].double()
    cb = -w2c_b[:3, :3].double().T @ w2c_b[:3, 3].double()
    return math.degrees(float(torch.arccos(cos))), float((ca - cb).norm())
