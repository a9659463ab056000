"""Procedural head model: UV maps, regions, expressions, gradients, cameras, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from synshot.head import (
    EXPRESSION_NAMES,
    HEAD_MODEL_VERSION,
    REGION_NAMES,
    HeadConfig,
    HeadModel,
    IdentityParams,
    sample_cameras,
    sample_expression,
    sample_head_pose,
    sample_identity,
    uv_region_masks,
)
from synshot.head.template import PART, REGION

S = 64


@pytest.fixture(scope="module")
def model() -> HeadModel:
    return HeadModel(HeadConfig.tiny())


def _expr(**kw) -> torch.Tensor:
    e = torch.zeros(len(EXPRESSION_NAMES))
    for k, v in kw.items():
        e[EXPRESSION_NAMES.index(k)] = v
    return e


def first_hit(P: np.ndarray, faces: np.ndarray, origin: np.ndarray, direction: np.ndarray) -> int:
    """Index of the first triangle hit by a ray (Moeller-Trumbore over all faces), -1 if none."""
    v0, v1, v2 = P[faces[:, 0]], P[faces[:, 1]], P[faces[:, 2]]
    e1, e2 = v1 - v0, v2 - v0
    h = np.cross(direction, e2)
    a = (e1 * h).sum(1)
    ok = np.abs(a) > 1e-12
    f = 1 / np.where(ok, a, 1)
    s = origin - v0
    u = f * (s * h).sum(1)
    q = np.cross(s, e1)
    v = f * (q @ direction)
    t = f * (e2 * q).sum(1)
    hit = ok & (u >= 0) & (v >= 0) & (u + v <= 1) & (t > 0)
    if not hit.any():
        return -1
    return int(np.where(hit)[0][np.argmin(np.where(hit, t, np.inf)[hit])])


def test_version_and_names(model):
    assert HEAD_MODEL_VERSION.startswith("synhead-")
    assert len(model.expression_names) >= 10
    for name in ("jaw_open", "smile_l", "smile_r", "blink_l", "blink_r", "pucker", "cheek_puff"):
        assert name in model.expression_names


def test_uv_maps_shapes_ranges_determinism(model):
    ident = sample_identity(np.random.default_rng(3))
    expr = sample_expression(np.random.default_rng(4))
    maps = model.uv_maps(ident, expr, S)
    assert set(maps) == {"tex", "verts", "exp"}
    inside = model.raster(S).mask
    for k, v in maps.items():
        assert v.shape == (3, S, S) and v.dtype == torch.float32, k
        assert torch.isfinite(v).all(), k
        assert float(v[:, ~torch.from_numpy(inside)].abs().max()) == 0.0, f"{k} non-zero outside the atlas"
    assert 0.0 <= float(maps["tex"].min()) and float(maps["tex"].max()) <= 1.0
    assert float(maps["tex"][:, torch.from_numpy(inside)].mean()) > 0.05
    verts = maps["verts"]
    assert float(verts.abs().max()) < 0.35 and float(verts[1].max()) > 0.1    # metres, head top ~0.12 m
    again = model.uv_maps(sample_identity(np.random.default_rng(3)), sample_expression(np.random.default_rng(4)), S)
    for k in maps:
        assert torch.equal(maps[k], again[k]), k
    other = model.uv_maps(sample_identity(np.random.default_rng(5)), expr, S)
    assert not torch.allclose(other["verts"], maps["verts"])
    assert not torch.allclose(other["tex"], maps["tex"])


def test_region_masks_disjoint_nonempty_cover_atlas(model):
    masks = model.uv_region_masks(S)
    assert tuple(masks) == REGION_NAMES == ("face", "scalp", "ears", "neck", "eyes", "mouth")
    stack = torch.stack([masks[n] for n in REGION_NAMES]).int()
    assert int(stack.sum(0).max()) == 1, "regions overlap"
    for n in REGION_NAMES:
        assert masks[n].dtype == torch.bool and masks[n].shape == (S, S) and int(masks[n].sum()) > 10, n
    assert torch.equal(stack.sum(0).bool(), torch.from_numpy(model.raster(S).mask))
    # the layout is fixed by the version: the module-level masks (default resolution) agree
    ref = uv_region_masks(S)
    for n in REGION_NAMES:
        agree = (ref[n] == masks[n]).float().mean()
        assert agree > 0.985, (n, float(agree))
    with pytest.raises(KeyError, match="unknown region 'hair'.*face"):
        masks["hair"]


def test_jaw_open_opens_lips_and_reveals_mouth(model):
    ident = sample_identity(np.random.default_rng(0))
    closed = model.vertices(ident, _expr()).detach().numpy()
    opened = model.vertices(ident, _expr(jaw_open=1.0)).detach().numpy()
    tpl = model.template
    lower = tpl.lower_lip
    lower_pos = {tuple(p) for p in np.round(tpl.P0[lower], 9)}
    upper_slit = ~lower & np.array([tuple(p) in lower_pos for p in np.round(tpl.P0, 9)])
    assert lower.sum() > 3 and upper_slit.sum() > 3
    drop = (closed[lower, 1] - opened[lower, 1]).mean()
    assert drop > 0.01, f"lower lip moved only {drop * 1000:.1f} mm"
    central = upper_slit & (np.abs(tpl.P0[:, 0]) < 0.018)
    assert central.sum() >= 3
    assert np.abs(opened[central] - closed[central]).max() < 0.0015, "upper lip must stay when the jaw opens"
    assert np.abs(opened[upper_slit] - closed[upper_slit]).max() < 0.006
    teeth_lo = (tpl.part == PART["teeth"]) & (tpl.side < 0)
    teeth_up = (tpl.part == PART["teeth"]) & (tpl.side > 0)
    assert (closed[teeth_lo, 1] - opened[teeth_lo, 1]).min() > 0.005
    assert np.abs(closed[teeth_up] - opened[teeth_up]).max() < 1e-6
    # a ray from the front through the mouth hits the lips when closed, the mouth interior when open
    y = tpl.anchors["mouth"][1] - 0.006
    o, d = np.array([0.0, y, 0.5]), np.array([0.0, 0.0, -1.0])
    hit_c = first_hit(closed, tpl.faces, o, d)
    o2 = np.array([0.0, (closed[lower, 1].mean() + opened[lower, 1].mean()) / 2, 0.5])
    hit_o = first_hit(opened, tpl.faces, o2, d)
    assert tpl.region[tpl.faces[hit_c, 0]] == REGION["face"]
    assert tpl.region[tpl.faces[hit_o, 0]] == REGION["mouth"]
    maps = model.uv_maps(ident, _expr(jaw_open=1.0), S)
    mouth = model.uv_region_masks(S)["mouth"]
    assert float(maps["exp"][:, mouth].abs().max()) > 0.01


def test_blink_covers_eye(model):
    ident = sample_identity(np.random.default_rng(1))
    tpl = model.template
    o, d = np.array([0.031, 0.0265, 0.5]), np.array([0.0, 0.0, -1.0])
    open_ = model.vertices(ident, _expr()).detach().numpy()
    shut = model.vertices(ident, _expr(blink_l=1.0)).detach().numpy()
    o[0] = open_[(tpl.part == PART["eye"]) & (tpl.side > 0)][:, 0].mean()
    assert tpl.part[tpl.faces[first_hit(open_, tpl.faces, o, d), 0]] == PART["eye"]
    assert tpl.part[tpl.faces[first_hit(shut, tpl.faces, o, d), 0]] == PART["skin"]


def test_gradients_flow_to_identity_and_expression(model):
    ident = sample_identity(np.random.default_rng(2))
    shape = torch.tensor(ident.shape, requires_grad=True)
    feats = torch.tensor(ident.features, requires_grad=True)
    ident.shape, ident.features = shape, feats
    expr = torch.zeros(len(EXPRESSION_NAMES), requires_grad=True)
    maps = model.uv_maps(ident, expr + 0.3, S)
    (maps["verts"].square().sum() + maps["exp"].square().sum()).backward()
    for name, t in (("shape", shape), ("features", feats), ("expression", expr)):
        assert t.grad is not None and torch.isfinite(t.grad).all(), name
        assert float(t.grad.abs().sum()) > 0, name
    # finite-difference check on one shape coefficient
    with torch.no_grad():
        base = sample_identity(np.random.default_rng(2))
        plus = base.copy()
        plus.shape = list(plus.shape)
        plus.shape[1] += 1e-2
        fd = (model.uv_maps(plus, torch.full((12,), 0.3), S)["verts"].square().sum()
              - model.uv_maps(base, torch.full((12,), 0.3), S)["verts"].square().sum()) / 1e-2
    ident2 = sample_identity(np.random.default_rng(2))
    s2 = torch.tensor(ident2.shape, requires_grad=True)
    ident2.shape = s2
    model.uv_maps(ident2, torch.full((12,), 0.3), S)["verts"].square().sum().backward()
    assert float(s2.grad[1]) == pytest.approx(float(fd), rel=0.05, abs=1e-6)


def test_mesh_contract(model):
    rng = np.random.default_rng(7)
    ident, expr, pose = sample_identity(rng), sample_expression(rng), sample_head_pose(rng)
    mesh = model.mesh(ident, expr, pose)
    V = mesh.vertices.shape[0]
    assert mesh.vertices.shape == (V, 3) and mesh.normals.shape == (V, 3)
    assert mesh.faces.shape[1] == 3 and int(mesh.faces.max()) < V and mesh.faces.dtype == torch.int64
    assert mesh.uvs.shape == (V, 2) and float(mesh.uvs.min()) >= 0 and float(mesh.uvs.max()) <= 1
    assert set(mesh.regions.unique().tolist()) == set(range(len(REGION_NAMES)))
    assert mesh.albedo.ndim == 3 and mesh.albedo.shape[2] == 3
    head = model.vertices(ident, expr)
    T = torch.as_tensor(pose, dtype=torch.float32)
    assert torch.allclose(mesh.vertices, head @ T[:3, :3].T + T[:3, 3], atol=1e-6)
    assert torch.allclose(mesh.normals.norm(dim=1), torch.ones(V), atol=1e-4)
    # seams are duplicated vertices: some vertices share a position but have different uvs
    P = np.round(mesh.vertices.detach().numpy(), 7)
    _, inv, counts = np.unique(P, axis=0, return_inverse=True, return_counts=True)
    assert (counts > 1).sum() > 50


def test_cameras_see_the_head(model):
    rng = np.random.default_rng(11)
    ident, expr, pose = sample_identity(rng), sample_expression(rng), sample_head_pose(rng)
    P = model.mesh(ident, expr, pose).vertices.detach().numpy().astype(np.float64)
    W, H = 96, 128
    cams = sample_cameras(rng, 8, W, H)
    assert len(cams) == 8
    head = P[P[:, 1] > -0.12]                                   # above the neck
    top, chin = P[np.argmax(P[:, 1])], P[np.argmin(np.where(P[:, 1] > -0.12, P[:, 1], 1))]
    for K, w2c in cams:
        assert K.shape == (3, 3) and w2c.shape == (4, 4)
        assert np.allclose(w2c[:3, :3] @ w2c[:3, :3].T, np.eye(3), atol=1e-9)
        cam = head @ w2c[:3, :3].T + w2c[:3, 3]
        assert (cam[:, 2] > 0.3).all() and (cam[:, 2] < 1.3).all()
        px = cam @ K.T
        px = px[:, :2] / px[:, 2:]
        inside = (px[:, 0] >= 0) & (px[:, 0] < W) & (px[:, 1] >= 0) & (px[:, 1] < H)
        assert inside.mean() > 0.97
        assert np.ptp(px[:, 1]) > 0.5 * min(W, H)                # fills most of the frame
        t_px = (K @ (w2c[:3, :3] @ top + w2c[:3, 3]))
        c_px = (K @ (w2c[:3, :3] @ chin + w2c[:3, 3]))
        assert t_px[1] / t_px[2] < c_px[1] / c_px[2], "image is upside down (OpenCV: y down)"
    K, w2c = cams[0]
    c = np.linalg.inv(w2c)[:3, 3]
    assert c[2] > 0.5 and abs(np.degrees(np.arctan2(c[0], c[2]))) < 10, "first view is frontal"


def test_population_is_diverse():
    rng = np.random.default_rng(0)
    ids = [sample_identity(rng) for _ in range(60)]
    lum = np.array([np.mean(i.skin_color) for i in ids])
    assert lum.max() - lum.min() > 0.35
    lengths = np.array([i.hair_length for i in ids])
    assert (lengths < 0.1).any() and (lengths > 0.6).any()
    assert any(i.hair_density < 0.2 for i in ids)
    hair = np.array([i.hair_color for i in ids])
    assert np.ptp(hair.mean(1)) > 0.4
    assert np.ptp([i.age for i in ids]) > 0.6


def test_identity_json_roundtrip_and_bad_input(model):
    ident = sample_identity(np.random.default_rng(9))
    d = json.loads(json.dumps(ident.to_dict()))
    back = IdentityParams.from_dict(d)
    assert back.to_dict() == ident.to_dict()
    mean = IdentityParams.mean()
    mean.validate()
    assert mean.shape == [0.0] * len(mean.shape) and 0 < float(np.mean(mean.skin_color)) < 1
    with pytest.raises(ValueError, match="unknown keys.*'nose'"):
        IdentityParams.from_dict({**d, "nose": 1.0})
    with pytest.raises(ValueError, match="features: expected 17"):
        IdentityParams.from_dict({**d, "features": [0.0] * 3})
    with pytest.raises(ValueError, match="expected a vector of 12 coefficients.*jaw_open"):
        model.uv_maps(ident, torch.zeros(5), S)
    with pytest.raises(ValueError, match="head_pose: expected a 4x4"):
        model.mesh(ident, torch.zeros(12), np.eye(3))
    with pytest.raises(ValueError, match="n_views"):
        sample_cameras(np.random.default_rng(0), 0, 64, 64)
    with pytest.raises(Exception, match="n_phi"):
        HeadConfig(n_phi=8)


@pytest.mark.gpu
def test_cuda_model_matches_cpu(model):
    ident = sample_identity(np.random.default_rng(12))
    expr = sample_expression(np.random.default_rng(13))
    gpu = HeadModel(HeadConfig.tiny(), device="cuda")
    a, b = model.uv_maps(ident, expr, S), gpu.uv_maps(ident, expr, S)
    for k in a:
        assert b[k].device.type == "cuda"
        assert torch.allclose(a[k], b[k].cpu(), atol=1e-5), k
