"""Photometric pose refinement (synshot.track.photometric): it finds a known pose from a rendered face,
keeps the landmark pose when told to, reads colours where the landmarks are, and runs inside a tracking."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synshot.head import HeadConfig, HeadModel, IdentityParams
from synshot.render import rasterize
from synshot.track.config import PhotometricConfig
from synshot.track.geometry import axis_angle_to_matrix, rotation_error_deg
from synshot.track.photometric import SH_DC, appearance_from_photo, face_splats, refine_pose

SIZE, FOCAL = 96, 200.0


@pytest.fixture(scope="module")
def splats():
    torch.manual_seed(0)
    ident = IdentityParams.mean()
    ident.hair_color = [0.05, 0.04, 0.03]
    return face_splats(HeadModel(HeadConfig.tiny()), ident, np.zeros(12), texture_size=64, colour_basis=True)


def _pose(deg_yaw: float, deg_pitch: float) -> tuple[np.ndarray, np.ndarray]:
    """Head-to-camera pose of a face looking at the camera 0.6 m away, turned by yaw/pitch."""
    base = axis_angle_to_matrix(torch.tensor([np.pi, 0.0, 0.0])).double().numpy()
    turn = axis_angle_to_matrix(torch.tensor([np.radians(deg_pitch), np.radians(deg_yaw), 0.0])).double().numpy()
    return base @ turn, np.array([0.0, 0.02, 0.6])


def _render(splats, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """The photo: the same splats under a lighting from the upper left, on a grey background."""
    n = len(splats.means)
    light = torch.zeros(9, 3)
    light[0], light[1], light[3] = 1.0 / SH_DC, -0.4, 0.5
    view = torch.eye(4)
    view[:3, :3], view[:3, 3] = torch.as_tensor(R, dtype=torch.float32), torch.as_tensor(t, dtype=torch.float32)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    K = torch.tensor([[FOCAL, 0, SIZE / 2], [0, FOCAL, SIZE / 2], [0, 0, 1.0]])[None]
    out = rasterize(splats.means, quats, torch.full((n, 3), splats.scale), torch.full((n,), 0.95),
                    splats.albedo * (splats.sh @ light).clamp_min(0), view[None], K, SIZE, SIZE,
                    backgrounds=torch.full((1, 3), 0.5), backend="torch")
    return out.rgb[0].numpy()


def test_refinement_recovers_a_pose_the_landmarks_missed(splats):
    R_true, t_true = _pose(8.0, -4.0)
    photo = _render(splats, R_true, t_true)
    R0, t0 = _pose(2.0, 2.0)                          # the landmark fit, ~8 degrees off
    assert rotation_error_deg(R0, R_true) > 7
    cfg = PhotometricConfig(enabled=True, steps=150, light_steps=20, face_px=SIZE)
    res = refine_pose(splats, photo, R0, t0, FOCAL, face_size=45.0, cfg=cfg)
    assert res.accepted and res.loss_after < res.loss_before
    assert rotation_error_deg(res.rotation, R_true) < 1.5
    assert abs(res.change_deg - rotation_error_deg(res.rotation, R0)) < 1e-6


def test_a_refinement_beyond_max_change_keeps_the_landmark_pose(splats):
    R_true, t_true = _pose(8.0, -4.0)
    photo = _render(splats, R_true, t_true)
    R0, t0 = _pose(2.0, 2.0)
    cfg = PhotometricConfig(enabled=True, steps=40, light_steps=10, face_px=SIZE, max_change_deg=0.01)
    res = refine_pose(splats, photo, R0, t0, FOCAL, face_size=45.0, cfg=cfg)
    assert not res.accepted and res.change_deg > 0.01
    assert np.array_equal(res.rotation, R0) and np.array_equal(res.translation, t0)
    assert set(res.record()) == {"accepted", "loss_before", "loss_after", "rotation_change_deg", "landmark_drift",
                                 "seconds"}


def test_a_refinement_the_landmarks_contradict_is_not_kept(splats):
    """Landmarks detected exactly where the start pose projects them: moving to the photo's pose makes
    them fit worse, so a zero drift allowance keeps the start pose and a generous one does not."""
    from synshot.track.geometry import project

    R_true, t_true = _pose(8.0, -4.0)
    photo = _render(splats, R_true, t_true)
    R0, t0 = _pose(2.0, 2.0)
    lm = project(splats.landmarks, torch.as_tensor(R0, dtype=torch.float32), torch.as_tensor(t0, dtype=torch.float32),
                 torch.tensor(FOCAL), torch.tensor([SIZE / 2, SIZE / 2])).numpy()
    cfg = PhotometricConfig(enabled=True, steps=150, light_steps=20, face_px=SIZE, max_landmark_drift=0.0)
    strict = refine_pose(splats, photo, R0, t0, FOCAL, face_size=45.0, cfg=cfg, landmarks=lm)
    assert not strict.accepted and strict.landmark_drift > 0.01 and np.array_equal(strict.rotation, R0)
    loose = refine_pose(splats, photo, R0, t0, FOCAL, face_size=45.0,
                        cfg=cfg.model_copy(update={"max_landmark_drift": 1.0}), landmarks=lm)
    assert loose.accepted and rotation_error_deg(loose.rotation, R_true) < 1.5


def test_the_face_albedo_is_linear_in_its_colours(splats):
    """What fitting the colours relies on: the basis reproduces the head model's own albedo for other colours."""
    other = IdentityParams.mean()
    other.skin_color, other.lip_color, other.hair_color = [0.45, 0.3, 0.2], [0.55, 0.25, 0.3], [0.3, 0.2, 0.1]
    truth = face_splats(HeadModel(HeadConfig.tiny()), other, np.zeros(12), texture_size=64)
    mine = splats.albedo_with(torch.tensor([other.skin_color, other.lip_color, other.hair_color]))
    assert torch.allclose(mine, truth.albedo, atol=1e-5)
    assert not torch.allclose(splats.albedo, truth.albedo, atol=1e-2)


def test_appearance_is_read_at_the_landmarks():
    rgb = np.full((100, 100, 3), 0.8, dtype=np.float32)
    lm = np.stack(np.meshgrid(np.linspace(20, 80, 17), [50.0]), -1).reshape(-1, 2)[:17]
    lm = np.concatenate([lm, np.zeros((51, 2))])
    lm[17:27] = np.stack([np.linspace(25, 75, 10), np.full(10, 30.0)], -1)      # brows on row 30
    lm[48:68] = np.stack([np.linspace(35, 65, 20), np.full(20, 70.0)], -1)      # lips on row 70
    rgb[30] = [0.17, 0.12, 0.08]
    rgb[70] = [0.6, 0.3, 0.3]
    out = appearance_from_photo(IdentityParams.mean(), rgb, lm + 0.5, skin=np.array([0.7, 0.5, 0.4]))
    assert np.allclose(out.lip_color, [0.6, 0.3, 0.3], atol=1e-6)
    assert np.allclose(out.hair_color, (np.array([0.17, 0.12, 0.08]) - 0.02) / 0.63, atol=1e-6)
    assert np.allclose(out.skin_color, [0.7, 0.5, 0.4])
    assert out.shape == IdentityParams.mean().shape


@pytest.mark.slow
def test_tracking_records_the_refinement(tmp_path):
    from test_track import astronaut, fast_cfg

    from synshot.track import track_subject

    photos = tmp_path / "photos"
    photos.mkdir()
    astronaut().save(photos / "a.jpg", quality=95)
    plain = track_subject(photos, tmp_path / "plain", fast_cfg())
    refined = track_subject(photos, tmp_path / "refined", fast_cfg("photometric.enabled=true", "photometric.steps=60"))
    rec = refined.frames[0]["photometric"]
    assert rec["loss_before"] > 0 and rec["rotation_change_deg"] >= 0
    assert "photometric" not in plain.frames[0]
    w_plain = np.asarray(json.loads((plain.out_dir / "cameras.json").read_text())["frames"][0]["w2c"])
    w_ref = np.asarray(json.loads((refined.out_dir / "cameras.json").read_text())["frames"][0]["w2c"])
    if rec["accepted"]:
        assert rotation_error_deg(w_ref[:3, :3], w_plain[:3, :3]) == pytest.approx(rec["rotation_change_deg"], abs=1e-3)
    else:
        np.testing.assert_array_equal(w_ref, w_plain)
