"""Conversions between the avatar's world (OpenCV cameras, metres, y up) and the browser scene.

The browser scene is in centimetres: viser ships covariances as float16, and a 0.5 mm Gaussian has a
variance of 2.5e-7 m^2, below float16's normal range; in cm^2 it is 2.5e-3. Colours are the
degree-0 spherical harmonics (view-independent); the ``.ply`` exports keep every SH degree.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from synshot.camera import quat_to_matrix
from synshot.invert.ply import SH_C0

SCENE_UNITS_PER_METRE = 100.0


def splat_arrays(sample: dict[str, torch.Tensor]) -> dict[str, np.ndarray]:
    """One sample's Gaussians (GaussianBatch.sample) -> viser's centers/covariances/rgbs/opacities."""
    s = SCENE_UNITS_PER_METRE
    rot = quat_to_matrix(sample["quats"].float())
    scales = sample["scales"].float() * s
    cov = rot @ torch.diag_embed(scales * scales) @ rot.transpose(1, 2)
    rgb = (sample["sh"][:, 0].float() * SH_C0 + 0.5).clamp(0, 1)
    return {"centers": (sample["means"].float() * s).cpu().numpy(), "covariances": cov.cpu().numpy(),
            "rgbs": rgb.cpu().numpy(), "opacities": sample["opacities"].float().reshape(-1, 1).cpu().numpy()}


def rotation_ypr(yaw_deg: float, pitch_deg: float, roll_deg: float) -> torch.Tensor:
    """Head rotation (head frame: y up, z towards the face): yaw about y, pitch about x, roll about z."""
    y, p, r = (math.radians(v) for v in (yaw_deg, pitch_deg, roll_deg))
    ry = torch.tensor([[math.cos(y), 0, math.sin(y)], [0, 1, 0], [-math.sin(y), 0, math.cos(y)]])
    rx = torch.tensor([[1, 0, 0], [0, math.cos(p), -math.sin(p)], [0, math.sin(p), math.cos(p)]])
    rz = torch.tensor([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
    return (ry @ rx @ rz).float()


def head_pose(reference: torch.Tensor, yaw: float, pitch: float, roll: float, t_cm=(0.0, 0.0, 0.0)) -> torch.Tensor:
    """The reference head pose moved in the head's own frame (rotation about its origin, then a shift in cm)."""
    local = torch.eye(4)
    local[:3, :3] = rotation_ypr(yaw, pitch, roll)
    local[:3, 3] = torch.tensor(t_cm, dtype=torch.float32) / 100.0
    return reference.float() @ local


def viser_camera(K: torch.Tensor, w2c: torch.Tensor, height: int, target: torch.Tensor) -> dict:
    """Position / look-at / up / vertical fov of an OpenCV camera, in scene units."""
    c2w = torch.linalg.inv(w2c.double())
    s = SCENE_UNITS_PER_METRE
    fov = 2 * math.atan(0.5 * height / float(K[1, 1]))
    return {"position": (c2w[:3, 3] * s).numpy(), "look_at": (target.double() * s).numpy(),
            "up": (-c2w[:3, 1]).numpy(), "fov": fov}
