"""Head-frame alignment of a tracked subject to the recorded eval frames (synshot.eval.align)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from synshot.camera import look_at_w2c
from synshot.eval.align import align_eval_frames, alignment_from_subjects, fit_alignment


def _project(K: np.ndarray, T: np.ndarray, x: np.ndarray) -> np.ndarray:
    cam = x @ T[:3, :3].T + T[:3, 3]
    uv = cam @ K.T
    return uv[:, :2] / uv[:, 2:]


def _cameras(yaws_deg, dist=0.8):
    out = []
    for yaw in yaws_deg:
        a = np.radians(yaw)
        out.append(look_at_w2c(np.array([dist * np.sin(a), 0.02, dist * np.cos(a)]), np.zeros(3)))
    return out


def _similarity(s: float, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    S = np.eye(4)
    S[:3, :3], S[:3, 3] = s * R, t
    return S


def test_a_known_similarity_is_recovered_and_eval_projections_match():
    """Tracked = recorded seen through a similarity (scale 1.07, 4 deg, 1 cm): the alignment recovers it, and
    the aligned eval camera projects the tracked head exactly where the recorded camera projects the true head."""
    rng = np.random.default_rng(0)
    R = Rotation.from_rotvec(np.radians(4) * np.array([0.3, 0.9, 0.2]) / np.linalg.norm([0.3, 0.9, 0.2])).as_matrix()
    s, t = 1.07, np.array([0.004, -0.01, 0.006])
    S = _similarity(s, R, t)  # tracked head coords -> recorded head coords
    recorded = {f"{i:03d}.png": T for i, T in enumerate(_cameras([0, 12, 65]))}
    # the tracked camera sees tracked coords x as the recorded camera sees S x, up to the scale s
    tracked = {}
    for n, T in recorded.items():
        F = T @ S
        F[:3, :] /= s
        F[3] = [0, 0, 0, 1]
        tracked[n] = F
    al = fit_alignment(recorded, tracked)
    assert al.scale == pytest.approx(s, rel=1e-6)
    assert np.allclose(al.rotation, R, atol=1e-6) and np.allclose(al.translation, t, atol=1e-6)
    assert al.inliers == sorted(recorded)
    K = np.array([[273.0, 0, 64], [0, 273.0, 64], [0, 0, 1]])
    # the reprojection refinement keeps an exact solution (same intrinsics on both sides)
    pts = {n: rng.normal(scale=0.08, size=(40, 3)) for n in recorded}
    refined = fit_alignment(recorded, tracked, intrinsics={n: (K, K) for n in recorded}, points=pts)
    assert refined.scale == pytest.approx(s, rel=1e-5) and np.allclose(refined.rotation, R, atol=1e-5)
    assert np.allclose(refined.translation, t, atol=1e-5)

    w2c_eval = _cameras([-30])[0]
    head_pose = np.eye(4)
    head_pose[:3, 3] = [0.01, 0.0, -0.02]
    x_true = rng.normal(scale=0.08, size=(50, 3))
    x_tracked = (x_true - t) @ R / s  # S^-1 x_true
    cams, pars = align_eval_frames({"frames": [{"file": "e.png", "K": K.tolist(), "w2c": w2c_eval.tolist()}]},
                                   {"identity": {"shape": [1.0]}, "frames": [{"file": "e.png", "expression": [0.5],
                                                                              "head_pose": head_pose.tolist()}]}, al)
    A = np.asarray(cams["frames"][0]["w2c"])
    assert np.allclose(pars["frames"][0]["head_pose"], np.eye(4)) and pars["frames"][0]["expression"] == [0.5]
    assert pars["identity"] is None  # the tracked identity (top-level params.json) is the avatar's
    assert np.allclose(_project(K, A, x_tracked), _project(K, w2c_eval @ head_pose, x_true), atol=1e-6)


def test_one_badly_tracked_photo_does_not_move_the_alignment():
    recorded = {f"{i:03d}.png": T for i, T in enumerate(_cameras([0, 12, 65]))}
    tracked = {n: T.copy() for n, T in recorded.items()}
    bad = np.eye(4)
    bad[:3, :3] = Rotation.from_euler("y", 60, degrees=True).as_matrix()
    tracked["002.png"] = tracked["002.png"] @ bad  # the profile's pose 60 deg wrong
    al = fit_alignment(recorded, tracked)
    assert al.inliers == ["000.png", "001.png"] and al.per_photo_deg["002.png"] == pytest.approx(60, abs=1e-4)
    assert np.allclose(al.rotation, np.eye(3), atol=1e-9) and al.scale == pytest.approx(1.0, abs=1e-9)
    assert np.allclose(al.translation, 0, atol=1e-9)


def test_alignment_from_subject_json_uses_the_input_frames_by_name():
    cams = _cameras([0, 12])
    rec_c = {"frames": [{"file": f"{i:03d}.png", "w2c": T.tolist()} for i, T in enumerate(cams)]}
    rec_p = {"frames": [{"file": f"{i:03d}.png", "head_pose": np.eye(4).tolist()} for i in range(2)]}
    trk_p = {"frames": [{"file": f"{i:03d}.png", "head_pose": np.eye(4).tolist()} for i in (1, 0)]}  # other order
    al = alignment_from_subjects(rec_c, rec_p, rec_c, trk_p)
    assert al.scale == pytest.approx(1.0) and al.to_dict()["rotation_deg"] == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="no input photo"):
        fit_alignment({"a.png": np.eye(4)}, {"b.png": np.eye(4)})
