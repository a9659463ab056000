"""Camera and rotation maths, in one place: quaternions (wxyz), so(3)/se(3), OpenCV cameras.

Conventions (docs/DESIGN.md): world-to-camera ``w2c`` 4x4 in OpenCV axes (x right, y down, z
forward), intrinsics ``K`` in pixels with pixel centres at +0.5, head poses 4x4 head -> world,
metres. The head model, the renderer, the prior, the inversion and the evaluation all use these.
"""

from __future__ import annotations

import math

import numpy as np
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


def pose_points(points_head: Tensor, head_pose: Tensor) -> Tensor:
    """(..., 3) head-frame points -> world with a (4, 4) head pose."""
    return points_head @ head_pose[:3, :3].T + head_pose[:3, 3]


def camera_error(w2c_a: Tensor, w2c_b: Tensor) -> tuple[float, float]:
    """(rotation degrees, camera-centre distance in metres) between two w2c matrices."""
    ca = -w2c_a[:3, :3].double().T @ w2c_a[:3, 3].double()
    cb = -w2c_b[:3, :3].double().T @ w2c_b[:3, 3].double()
    return rotation_angle_deg(w2c_a, w2c_b), float((ca - cb).norm())


def look_at_w2c(eye: np.ndarray, target: np.ndarray, up: np.ndarray = np.array([0.0, 1.0, 0.0])) -> np.ndarray:
    """OpenCV world-to-camera (x right, y down, z forward) looking from ``eye`` at ``target``."""
    z = target - eye
    z = z / np.linalg.norm(z)
    x = np.cross(-up, z)                                  # y ~ -up, x = y cross z
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    R = np.stack([x, y, z])                               # rows: camera axes in world
    w2c = np.eye(4)
    w2c[:3, :3] = R
    w2c[:3, 3] = -R @ eye
    return w2c


def project_points(points_world: Tensor, K: Tensor, w2c: Tensor) -> tuple[Tensor, Tensor]:
    """Pixel coordinates (N,2) (continuous, pixel centres at +0.5) and camera depth (N,) of world points."""
    cam = points_world @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    uv = cam[:, :2] / z.clamp_min(1e-8)[:, None]
    pix = uv @ K[:2, :2].T + K[:2, 2]
    return pix, z


def rotation_angle_deg(a: Tensor, b: Tensor) -> float:
    """Angle of the relative rotation between two 3x3 rotations (for diagnostics and tests)."""
    rel = a[:3, :3].double() @ b[:3, :3].double().T
    cos = ((torch.trace(rel) - 1) / 2).clamp(-1, 1)
    return math.degrees(float(torch.arccos(cos)))
