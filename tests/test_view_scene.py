"""The viewer's conversions: quaternions, head-pose sliders, cameras and splat buffers (no browser)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synshot.invert.ply import SH_C0
from synshot.camera import project_points, quat_to_matrix
from synshot.view.scene import SCENE_UNITS_PER_METRE, head_pose, rotation_ypr, splat_arrays, viser_camera
from synshot.view.server import _ypr


def test_quat_to_matrix_is_a_rotation_wxyz():
    q = torch.tensor([[math.cos(0.25), 0.0, math.sin(0.25), 0.0]])  # 0.5 rad about y, w first
    r = quat_to_matrix(q)[0]
    expected = torch.tensor([[math.cos(0.5), 0, math.sin(0.5)], [0, 1, 0], [-math.sin(0.5), 0, math.cos(0.5)]])
    torch.testing.assert_close(r, expected, atol=1e-6, rtol=0)


@pytest.mark.parametrize("ypr", [(0.0, 0.0, 0.0), (30.0, -10.0, 5.0), (-55.0, 35.0, -20.0)])
def test_pose_sliders_round_trip(ypr):
    """A sequence's head pose -> slider values -> the same head pose (used when playing sequences)."""
    ref = torch.eye(4)
    ref[:3, 3] = torch.tensor([0.01, -0.02, 0.05])
    pose = head_pose(ref, *ypr, t_cm=(1.0, -2.0, 3.0))
    rel = torch.linalg.inv(ref) @ pose
    back = head_pose(ref, *_ypr(rel[:3, :3]), t_cm=tuple((rel[:3, 3] * 100).tolist()))
    torch.testing.assert_close(back, pose, atol=1e-5, rtol=0)
    assert _ypr(rotation_ypr(*ypr)) == pytest.approx(ypr, abs=1e-4)


def test_viewer_camera_matches_the_opencv_camera():
    """The browser camera placed from (K, w2c) sees the world as the renders do: same centre, same fov."""
    from synshot.view.prior_avatar import frontal_camera

    K, w2c = frontal_camera(100)
    target = torch.tensor([0.0, -0.02, 0.0])
    cam = viser_camera(K, w2c, 100, target)
    centre = -w2c[:3, :3].T @ w2c[:3, 3]
    np.testing.assert_allclose(cam["position"], centre.numpy() * SCENE_UNITS_PER_METRE, atol=1e-4)
    assert cam["up"] @ np.array([0, 1.0, 0]) > 0.99  # world y is up
    assert 2 * math.tan(cam["fov"] / 2) * float(K[1, 1]) == pytest.approx(100, rel=1e-5)
    np.testing.assert_allclose(project_points(target[None], K, w2c)[0][0].numpy(), [50, 50], atol=1e-3)


def test_splat_buffers_are_in_centimetres_with_dc_colours():
    s = torch.tensor([[0.001, 0.002, 0.0005]])
    q = torch.tensor([[1.0, 0, 0, 0]])
    sh = torch.zeros(1, 4, 3)
    sh[0, 0] = torch.tensor([1.0, 0.0, -1.0])
    a = splat_arrays({"means": torch.tensor([[0.1, 0.2, 0.3]]), "quats": q, "scales": s,
                      "opacities": torch.tensor([0.7]), "sh": sh})
    np.testing.assert_allclose(a["centers"], [[10, 20, 30]], rtol=1e-6)
    np.testing.assert_allclose(np.diag(a["covariances"][0]), [0.01, 0.04, 0.0025], rtol=1e-5)
    assert np.diag(a["covariances"][0]).astype(np.float16).min() > 6.1e-5  # float16-normal in cm^2
    np.testing.assert_allclose(a["rgbs"][0], [0.5 + SH_C0, 0.5, 0.5 - SH_C0], rtol=1e-6)
    assert a["opacities"].shape == (1, 1)
