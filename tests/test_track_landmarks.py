"""The 68 landmarks on the head model and the landmark fit, without dlib (synthetic observations)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from synshot.head import HeadConfig, HeadModel, IdentityParams
from synshot.head.landmarks import landmark_embedding
from synshot.head.template import PART, REGION


@pytest.fixture(scope="module")
def tiny_head() -> HeadModel:
    return HeadModel(HeadConfig.tiny())


def _mean_points(head: HeadModel) -> np.ndarray:
    emb = landmark_embedding(head.cfg)
    with torch.no_grad():
        v = head.vertices(IdentityParams.mean(), torch.zeros(12)).double().numpy()
    return (v[emb.faces] * emb.bary[..., None]).sum(1)


def test_landmarks_sit_on_face_skin_in_anatomical_order(tiny_head):
    emb = landmark_embedding(tiny_head.cfg)
    t = tiny_head.template
    assert emb.faces.shape == (68, 3) and np.allclose(emb.bary.sum(1), 1) and (emb.bary >= 0).all()
    assert (t.region[emb.faces] == REGION["face"]).all() and (t.part[emb.faces] == PART["skin"]).all()
    p = _mean_points(tiny_head)
    eyes, nose_tip, mouth, chin = p[36:48, 1].mean(), p[30, 1], p[48:68, 1].mean(), p[8, 1]
    assert eyes > nose_tip > mouth > chin                       # y up in the head frame
    assert p[30, 2] > p[36:48, 2].max()                         # the nose tip stands out
    for a, b in ((36, 45), (39, 42), (48, 54), (0, 16), (17, 26)):   # left/right mirror pairs
        assert abs(p[a, 0] + p[b, 0]) < 0.004 and abs(p[a, 1] - p[b, 1]) < 0.004, (a, b)
    assert p[36, 0] < 0 < p[45, 0]                              # point 36 is the subject's right eye (-x)


def test_definition_is_resolution_independent(tiny_head):
    default = HeadModel(HeadConfig())
    # in the image plane of a frontal view (depth inside the eyelid recess depends on the mesh resolution)
    d = np.linalg.norm(_mean_points(tiny_head)[17:, :2] - _mean_points(default)[17:, :2], axis=1)
    assert d.max() < 0.0025, d.max()


def _rot(yaw: float, pitch: float = 0.0) -> torch.Tensor:
    from synshot.track.geometry import axis_angle_to_matrix

    base = axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0]))
    return base @ axis_angle_to_matrix(torch.tensor([pitch, 0.0, 0.0])) @ axis_angle_to_matrix(torch.tensor([0.0, yaw, 0.0]))


@pytest.mark.parametrize("yaw_deg", [0.0, 30.0, -30.0])
def test_jaw_contour_is_the_silhouette(tiny_head, yaw_deg):
    """The contour vertex of every band lies on the outline of the projected face skin (ears and hair,
    which stick out further, are not part of the jaw line)."""
    from synshot.track.geometry import project
    from synshot.track.masks import head_faces, mesh_raster

    emb = landmark_embedding(tiny_head.cfg)
    with torch.no_grad():
        v = tiny_head.vertices(IdentityParams.mean(), torch.zeros(12))
    R, t = _rot(math.radians(yaw_deg)), torch.tensor([0.0, 0.0, 0.8])
    f, c = torch.tensor(700.0), torch.tensor([200.0, 200.0])
    px = project(v, R, t, f, c)
    contour = emb.contour(px, R).numpy()
    _, face = head_faces(tiny_head)
    K = np.array([[700.0, 0, 200], [0, 700, 200], [0, 0, 1]])
    sil = mesh_raster(v.double().numpy() @ R.double().numpy().T + t.double().numpy(), face, K, 400, 400)
    import cv2

    dist_out = cv2.distanceTransform((1 - sil).astype(np.uint8), cv2.DIST_L2, 3)   # 0 inside
    dist_in = cv2.distanceTransform(sil.astype(np.uint8), cv2.DIST_L2, 3)          # 0 outside
    ij = np.clip(np.floor(contour).astype(int), 0, 399)
    to_edge = np.maximum(dist_out[ij[:, 1], ij[:, 0]], dist_in[ij[:, 1], ij[:, 0]])
    assert np.median(to_edge) < 2.5 and (to_edge < 5).mean() > 0.85, to_edge


def _model_observations(tiny_head):
    """Landmarks made by the model itself (random identity, three expressions and poses):
    (identity, expressions (3, E), observations, true rotations)."""
    from synshot.head.params import FEATURE_NAMES, N_SHAPE
    from synshot.track.fit import LandmarkHead, PhotoObservation
    from synshot.track.geometry import project

    rng = np.random.default_rng(5)
    ident = IdentityParams.mean()
    ident.shape = rng.normal(0, 1, N_SHAPE).tolist()
    ident.features = rng.normal(0, 1, len(FEATURE_NAMES)).tolist()
    lhead = LandmarkHead(tiny_head)
    obs, truth, exprs = [], [], []
    for k, (yaw, pitch) in enumerate(((5.0, 3.0), (-25.0, -5.0), (20.0, 8.0))):
        e = torch.zeros(12)
        if k == 1:
            e[0], e[1], e[2] = 0.4, 0.6, 0.6
        R = _rot(math.radians(yaw), math.radians(pitch))
        t = torch.tensor([0.01, -0.02, 0.75])
        f, c = torch.tensor(600.0), torch.tensor([160.0, 160.0])
        with torch.no_grad():
            v = lhead.vertices(ident, e)
            px = project(v, R, t, f, c)
            lm = project(lhead.fixed_points(v), R, t, f, c)
            contour = lhead.emb.contour(px, R, lhead.bands)
            jaw = contour[lhead.emb.band_of_jaw]
        pts = torch.cat([jaw, lm[17:]]).double().numpy()
        size = float(np.ptp(pts[:, 0]))
        obs.append(PhotoObservation(f"{k}.png", 320, 320, pts, size, 600.0))
        truth.append(R.double().numpy())
        exprs.append(e.numpy())
    return ident, np.stack(exprs), obs, truth


@pytest.mark.slow
def test_landmark_fit_recovers_a_known_head(tiny_head):
    """Observations made by the model itself (random identity, expression, pose): the fit recovers them."""
    from synshot.track.config import FitConfig
    from synshot.track.fit import fit_landmarks
    from synshot.track.geometry import rotation_error_deg

    _, _, obs, truth = _model_observations(tiny_head)
    fit = fit_landmarks(tiny_head, obs, FitConfig(pose_steps=40, shape_steps=100, expression_steps=100),
                        shared_focal=True)
    for k in range(3):
        assert rotation_error_deg(fit.rotations[k], truth[k]) < 2.0
        assert fit.rmse_px[k] < 1.5
    assert fit.expressions[1][1] > 0.3 and fit.expressions[0].max() < 0.3     # smile found where it was


def test_pose_only_fit_with_the_known_face_is_exact_on_model_landmarks(tiny_head):
    """The bench's landmark floor (fit_landmarks(known=...)): with the true face and noiseless landmarks
    only the pose is left, and it comes out right; a wrong face gives a measurably worse pose."""
    from synshot.track.config import FitConfig
    from synshot.track.fit import fit_landmarks
    from synshot.track.geometry import rotation_error_deg

    ident, exprs, obs, truth = _model_observations(tiny_head)
    cfg = FitConfig(pose_steps=40, shape_steps=100, expression_steps=100)
    fit = fit_landmarks(tiny_head, obs, cfg, shared_focal=True, known=(ident, exprs))
    errors = [rotation_error_deg(fit.rotations[k], truth[k]) for k in range(3)]
    assert max(errors) < 1.0 and fit.rmse_px.max() < 1.0, (errors, fit.rmse_px)
    assert np.allclose(fit.shape, 0) and np.allclose(fit.expressions, 0)   # nothing but the pose was fitted
    wrong = IdentityParams.mean()
    fit = fit_landmarks(tiny_head, obs, cfg, shared_focal=True, known=(wrong, np.zeros_like(exprs)))
    assert fit.rmse_px.max() > 1.0, fit.rmse_px
