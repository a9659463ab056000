"""Inversion building blocks: texture unwrapping, camera geometry, config, head-model version checks."""

from __future__ import annotations

import json
import math

import pytest
import torch

from synshot.config import ConfigError, load_config
from synshot.invert.config import InvertConfig
from synshot.camera import apply_camera_delta, camera_error, orbit_w2c, se3_correction, so3_exp
from synshot.invert.geometry import turntable_angles
from synshot.invert.unwrap import unwrap_texture, zbuffer_visibility


def _plane_maps(s: int, z: float, x0: float, x1: float) -> torch.Tensor:
    """(3,S,S) positions of a fronto-parallel square at depth z spanning [x0,x1] x [-0.05,0.05]."""
    j = (torch.arange(s) + 0.5) / s
    x = (x0 + (x1 - x0) * j)[None, :].expand(s, s)
    y = (-0.05 + 0.1 * j)[:, None].expand(s, s)
    return torch.stack([x, y, torch.full((s, s), z)])


def test_unwrap_projects_colours_and_respects_occlusion():
    s, h, w, f = 16, 48, 48, 200.0
    K = torch.tensor([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])
    w2c = torch.eye(4)
    # left half of the atlas: a near plane; right half: a far plane right behind it (hidden)
    far = torch.stack([torch.linspace(-0.054, -0.015, s // 2)[None, :].expand(s, s // 2),
                       torch.linspace(-0.054, 0.054, s)[:, None].expand(s, s // 2), torch.full((s, s // 2), 0.6)])
    pos = torch.cat([_plane_maps(s, 0.5, -0.05, 0.05)[:, :, : s // 2], far], 2)  # far projects inside near
    img = torch.zeros(1, 3, h, w)
    img[0, 0] = torch.linspace(0, 1, w)[None, :].expand(h, w)  # red ramp along x
    img[0, 1] = 0.5
    mask = torch.ones(1, 1, h, w)
    fill = torch.full((3, s, s), 0.2)
    valid = torch.ones(s, s, dtype=torch.bool)
    valid[:, s // 2 - 1: s // 2 + 1] = False  # a gutter between the two UV islands
    tex, cov = unwrap_texture(pos[None], valid, img, mask, K[None], w2c[None], fill)
    near, far = tex[:, :, : s // 2 - 1], tex[:, :, s // 2 + 1:]
    assert torch.allclose(near[1], torch.full_like(near[1], 0.5), atol=0.02)  # seen: image colour
    u = pos[0, 0, : s // 2 - 1] / 0.5 * f + w / 2  # expected pixel x of each near texel column
    assert torch.allclose(near[0, 0], (u / w).clamp(0, 1), atol=0.05)
    assert cov[:, : s // 2 - 1].min() > 0.9 and cov[:, s // 2 + 1:].max() < 0.1  # far plane occluded
    assert float(tex[:, :, s // 2 - 1: s // 2 + 1].abs().sum()) == 0  # 0 outside the atlas
    assert torch.allclose(far[1], torch.full_like(far[1], far[1].mean()), atol=1e-5)  # fill, gain-matched


def test_zbuffer_keeps_the_nearest():
    pix = torch.tensor([[10.5, 10.5], [10.6, 10.4], [30.5, 5.5]])
    z = torch.tensor([0.5, 0.7, 0.6])
    vis = zbuffer_visibility(pix, z, 40, 20, torch.tensor([[100.0, 0, 0], [0, 100, 0], [0, 0, 1]]))
    assert vis.tolist() == [True, False, True]


def test_so3_exp_and_se3():
    axis = torch.tensor([0.0, 0.0, 1.0])
    rot = so3_exp(axis * math.pi / 2)
    assert torch.allclose(rot @ torch.tensor([1.0, 0, 0]), torch.tensor([0.0, 1, 0]), atol=1e-6)
    xi = torch.zeros(6, requires_grad=True)
    w2c = torch.eye(4)
    out = apply_camera_delta(w2c, xi)
    assert torch.equal(out.detach(), w2c)
    out[0, 1].backward()  # gradient defined at zero (Taylor branch)
    assert xi.grad is not None and torch.isfinite(xi.grad).all() and xi.grad.abs().sum() > 0
    m = se3_correction(torch.tensor([0.0, math.radians(3.0), 0.0, 0.01, 0.0, 0.0]))
    rot_deg, dist = camera_error(m @ w2c, w2c)
    assert abs(rot_deg - 3.0) < 1e-4 and dist > 0


def test_orbit_keeps_distance_to_centre():
    from synshot.camera import look_at_w2c

    import numpy as np

    w2c = torch.tensor(look_at_w2c(np.array([0.0, 0.0, 0.8]), np.zeros(3)), dtype=torch.float32)
    centre, up = torch.zeros(3), torch.tensor([0.0, 1.0, 0.0])
    moved = orbit_w2c(w2c, centre, up, 30.0)
    cam = -moved[:3, :3].T @ moved[:3, 3]
    assert abs(float(cam.norm()) - 0.8) < 1e-5 and abs(math.degrees(math.atan2(cam[0], cam[2])) - 30.0) < 1e-3
    assert torch.allclose(moved[:3, :3] @ centre + moved[:3, 3], torch.tensor([0.0, 0.0, 0.8]), atol=1e-5)
    angles = turntable_angles(8, 40.0)
    assert angles[0] == 0 and max(angles) == pytest.approx(40.0)


def test_config_files_and_bad_keys():
    cfg = load_config(InvertConfig, "configs/invert/tiny.yaml", ["stage2.modules=[D_feat, D_id]"])
    assert cfg.image_size == 64 and cfg.stage2.modules == ["D_feat", "D_id"]
    with pytest.raises(ConfigError, match="stage2.modules"):
        load_config(InvertConfig, None, ["stage2.modules=[E_id]"])
    with pytest.raises(ConfigError, match="unknown key"):
        load_config(InvertConfig, None, ["stage1.stpes=3"])


def test_prior_from_another_head_model_version_is_refused(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    from synshot.model import ExportError, ModelConfig, SynShotPrior, load_exported, save_exported

    mcfg = load_config(ModelConfig, None, ["uv_size=32", "enc_channels=[8]", "dec_channels=[8]", "norm_groups=4",
                                          "code_dim=4", "codebook_size=8", "feature_channels=4",
                                          "regressor_hidden=8", "sh_degree=0",
                                          "parts={face: {grid_size: 16, regions: [face]}}"])
    path = save_exported(SynShotPrior(mcfg), mcfg, tmp_path / "prior.safetensors")
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    meta["head_model_version"] = "synhead-0"
    save_file(tensors, str(tmp_path / "old.safetensors"), metadata=meta)
    with pytest.raises(ExportError, match=r"old.safetensors: exported for head model 'synhead-0'"):
        load_exported(tmp_path / "old.safetensors")

    from synshot.cli import EXIT_CHECKPOINT
    from synshot.invert.__main__ import main

    rc = main([str(tmp_path / "nowhere"), "--prior", str(tmp_path / "old.safetensors"),
               "--out", str(tmp_path / "o"), "--config", "configs/invert/tiny.yaml"])
    assert rc == EXIT_CHECKPOINT


def test_avatar_from_another_head_model_version_is_refused(tmp_path):
    from safetensors.torch import save_file

    from synshot.invert.avatar import AVATAR_FORMAT, AvatarError, load_avatar

    save_file({"x": torch.zeros(1)}, str(tmp_path / "a.safetensors"),
              metadata={"format": AVATAR_FORMAT, "head_model_version": "synhead-0", "model_config": json.dumps({})})
    with pytest.raises(AvatarError, match="made with head model 'synhead-0'.*re-run the inversion"):
        load_avatar(tmp_path / "a.safetensors")
    with pytest.raises(AvatarError, match="not found"):
        load_avatar(tmp_path / "missing.safetensors")
