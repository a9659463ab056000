"""Turntable angles of the inversion's videos; the camera maths itself lives in :mod:`synshot.camera`."""

from __future__ import annotations

import math

from synshot.camera import (  # noqa: F401  (re-exported for callers of the inversion's geometry)
    apply_camera_delta, camera_error, orbit_w2c, pose_points, rotation_about_axis, se3_correction, skew, so3_exp,
)


def turntable_angles(frames: int, degrees: float) -> list[float]:
    """0 -> +deg -> -deg -> 0 (a smooth swing that starts and ends at the reference view)."""
    return [degrees * math.sin(2 * math.pi * i / frames) for i in range(frames)]
