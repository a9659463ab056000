"""Part sampler and geometry helpers: grid points in their masks, TBN frames, NN-distance scales."""

import math

import pytest
import torch

from synshot.config import ConfigError, validate_config
from synshot.model.config import ModelConfig
from synshot.camera import matrix_to_quat, quat_multiply, quat_to_matrix
from synshot.model.geometry import dilate, tbn_frame, uv_derivatives
from synshot.model.sampler import PartSampler, knn_distances


def toy_masks(size: int) -> dict[str, torch.Tensor]:
    """A simple UV layout with the head model's region names (islands with gaps between them)."""
    c = (torch.arange(size) + 0.5) / size
    v, u = torch.meshgrid(c, c, indexing="ij")
    return {
        "face": (u > 0.05) & (u < 0.5) & (v > 0.05) & (v < 0.6),
        "scalp": (u > 0.55) & (u < 0.95) & (v > 0.05) & (v < 0.6),
        "ears": (u > 0.05) & (u < 0.25) & (v > 0.7) & (v < 0.8),
        "neck": (u > 0.3) & (u < 0.6) & (v > 0.7) & (v < 0.95),
        "eyes": (u > 0.7) & (v > 0.7) & (v < 0.8),
        "mouth": (u > 0.7) & (v > 0.85) & (v < 0.95),
    }


def sphere_map(size: int, radius: float = 0.1) -> torch.Tensor:
    """(1, 3, S, S) position map of a sphere patch (u -> longitude, v -> latitude)."""
    c = (torch.arange(size) + 0.5) / size
    v, u = torch.meshgrid(c, c, indexing="ij")
    th, ph = u * math.pi, 0.25 * math.pi + v * 0.5 * math.pi
    return (torch.stack([torch.sin(ph) * torch.cos(th), torch.cos(ph), torch.sin(ph) * torch.sin(th)]) * radius)[None]


def toy_template(size: int) -> dict[str, torch.Tensor]:
    """Template maps for the toy layout: a grey sphere patch."""
    return {"tex": torch.full((3, size, size), 0.5), "verts": sphere_map(size)[0]}


def cfg(**kw) -> ModelConfig:
    base = dict(uv_size=32, enc_channels=[8], dec_channels=[8], parts={
        "face": {"grid_size": 32, "regions": ["face", "ears", "neck", "eyes", "mouth"]},
        "scalp": {"grid_size": 64, "regions": ["scalp"]}})
    base.update(kw)
    return ModelConfig(**base)


def test_grid_points_lie_inside_their_part_masks():
    c = cfg()
    sampler = PartSampler(c, toy_masks)
    counts = sampler.counts()
    for pid, (name, part) in enumerate(c.parts.items()):
        g = part.grid_size
        mask = torch.zeros(g, g, dtype=torch.bool)
        for r in part.regions:
            mask |= toy_masks(g)[r]
        uv = sampler.uv[sampler.part_ids == pid]
        i = (uv[:, 1] * g).floor().long()
        j = (uv[:, 0] * g).floor().long()
        assert mask[i, j].all(), name
        assert counts[name] == int(mask.sum())
    # the scalp grid is twice as dense: more points per unit UV area than the face
    area = {n: float(sum(toy_masks(256)[r].float().mean() for r in p.regions)) for n, p in c.parts.items()}
    assert counts["scalp"] / area["scalp"] > 3 * counts["face"] / area["face"]


def test_no_sampling_gives_one_gaussian_per_atlas_texel():
    c = cfg(sampling=False)
    sampler = PartSampler(c, toy_masks)
    atlas = sum(m.float() for m in toy_masks(32).values()).clamp(max=1)
    assert sampler.num_points == int(atlas.sum())


def test_region_in_two_parts_and_unknown_region_are_rejected():
    with pytest.raises(ValueError, match="both parts"):
        PartSampler(cfg(parts={"a": {"grid_size": 8, "regions": ["face"]}, "b": {"grid_size": 8, "regions": ["face"]}}),
                    toy_masks)
    with pytest.raises(ConfigError, match="unknown head region"):
        validate_config(ModelConfig, {"parts": {"a": {"grid_size": 8, "regions": ["hair"]}}})


def test_tbn_frames_orthonormal_and_quaternions_unit():
    c = cfg()
    sampler = PartSampler(c, toy_masks)
    pos = sphere_map(32)
    pts = sampler(torch.zeros(1, 4, 32, 32), torch.zeros(1, 3, 32, 32), pos)
    r = pts.frame[0]
    eye = torch.eye(3).expand_as(r)
    assert torch.allclose(r.transpose(-1, -2) @ r, eye, atol=1e-5)
    assert torch.allclose(torch.linalg.det(r), torch.ones(r.shape[0]), atol=1e-5)
    q = matrix_to_quat(r)
    assert torch.allclose(q.norm(dim=-1), torch.ones(q.shape[0]), atol=1e-5)
    assert torch.allclose(quat_to_matrix(q), r, atol=1e-4)
    # the normal of a sphere patch is radial
    n = r[..., 2]
    radial = torch.nn.functional.normalize(pts.position[0], dim=-1)
    assert (n * radial).sum(-1).abs().min() > 0.95


def test_nn_scales_positive_and_close_to_knn_distances():
    c = cfg()
    sampler = PartSampler(c, toy_masks)
    pts = sampler(torch.zeros(1, 4, 32, 32), torch.zeros(1, 3, 32, 32), sphere_map(32))
    assert (pts.scale > 0).all()
    for pid in range(2):
        sel = sampler.part_ids == pid
        ratio = pts.scale[0, sel] / knn_distances(pts.position[0, sel], k=4)
        assert 0.7 < float(ratio.median()) < 1.5


def test_degenerate_gradients_still_give_a_rotation():
    r = tbn_frame(torch.zeros(5, 3), torch.zeros(5, 3))
    assert torch.allclose(r.transpose(-1, -2) @ r, torch.eye(3).expand(5, 3, 3), atol=1e-6)
    r = tbn_frame(torch.tensor([[1.0, 0, 0]]), torch.tensor([[2.0, 0, 0]]))  # parallel
    assert torch.allclose(torch.linalg.det(r), torch.ones(1), atol=1e-6)


def test_quaternion_helpers_match_matrices():
    g = torch.Generator().manual_seed(0)
    a = torch.nn.functional.normalize(torch.randn(64, 4, generator=g), dim=-1)
    b = torch.nn.functional.normalize(torch.randn(64, 4, generator=g), dim=-1)
    assert torch.allclose(quat_to_matrix(quat_multiply(a, b)), quat_to_matrix(a) @ quat_to_matrix(b), atol=1e-5)
    ra = quat_to_matrix(a)
    assert torch.allclose(quat_to_matrix(matrix_to_quat(ra)), ra, atol=1e-5)


def test_uv_derivatives_exact_on_linear_map_including_island_borders():
    s = 16
    c = (torch.arange(s) + 0.5) / s
    v, u = torch.meshgrid(c, c, indexing="ij")
    pos = torch.stack([2 * u, 3 * v, torch.zeros_like(u)])[None]
    mask = toy_masks(s)["face"]
    du, dv = uv_derivatives(pos * mask, mask)
    sel = mask & (mask.float().sum() > 0)
    assert torch.allclose(du[0, :, sel], torch.tensor([2.0, 0, 0])[:, None].expand(3, int(sel.sum())), atol=1e-4)
    assert torch.allclose(dv[0, :, sel], torch.tensor([0, 3.0, 0])[:, None].expand(3, int(sel.sum())), atol=1e-4)


def test_dilate_fills_a_ring_and_keeps_inside():
    mask = torch.zeros(8, 8, dtype=torch.bool)
    mask[3:5, 3:5] = True
    x = torch.full((1, 1, 8, 8), 7.0) * mask
    y = dilate(x, mask, 1)
    assert torch.equal(y[0, 0, 3:5, 3:5], x[0, 0, 3:5, 3:5])
    assert torch.allclose(y[0, 0, 2:6, 2:6], torch.full((4, 4), 7.0))
    assert y[0, 0, 0, 0] == 0


def test_real_head_layout_points_inside_masks():
    from synshot.config import load_config
    from synshot.head import uv_region_masks
    from test_model import CONFIGS

    c = load_config(ModelConfig, CONFIGS / "tiny.yaml")
    sampler = PartSampler(c)  # default: synshot.head.uv_region_masks
    counts = sampler.counts()
    assert set(counts) == {"face", "scalp"} and min(counts.values()) > 500
    for pid, (name, part) in enumerate(c.parts.items()):
        g = part.grid_size
        masks = uv_region_masks(g)
        mask = torch.zeros(g, g, dtype=torch.bool)
        for r in part.regions:
            mask |= masks[r]
        uv = sampler.uv[sampler.part_ids == pid]
        assert mask[(uv[:, 1] * g).long(), (uv[:, 0] * g).long()].all(), name
        assert counts[name] == int(mask.sum())
