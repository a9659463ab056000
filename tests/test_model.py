"""SynShotPrior: shapes for the tiny preset and every ablation switch, contracts, export round trip."""

import json
from pathlib import Path

import pytest
import torch

from synshot.config import load_config
from synshot.model import SUBMODULES, ExportError, ModelConfig, SynShotPrior, load_exported, render_gaussians, save_exported
from test_model_sampler import sphere_map, toy_masks, toy_template

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "model"
B, S = 2, 64


def tiny(*overrides: str) -> ModelConfig:
    return load_config(ModelConfig, CONFIGS / "tiny.yaml", overrides)


def make(cfg: ModelConfig) -> SynShotPrior:
    """A prior on the toy UV layout (the real head layout is exercised by test_model_overfit.py)."""
    return SynShotPrior(cfg, toy_masks, toy_template(cfg.uv_size))


def inputs(b=B, s=S, seed=0):
    g = torch.Generator().manual_seed(seed)
    verts = sphere_map(s).repeat(b, 1, 1, 1)
    tex = torch.rand(b, 3, s, s, generator=g)
    exp = torch.randn(b, 3, s, s, generator=g) * 0.003
    pose = torch.eye(4).repeat(b, 1, 1)
    pose[:, :3, 3] = torch.tensor([0.01, -0.02, 0.03])
    return tex, verts, exp, pose


@pytest.mark.parametrize("overrides", [(), ("vq=false",), ("sampling=false",), ("single_layer=true",),
                                       ("feature_channels=32",), ("sh_degree=0",)])
def test_forward_shapes_tiny_and_ablations(overrides):
    cfg = tiny(*overrides)
    torch.manual_seed(0)
    model = make(cfg)
    out = model(*inputs())
    d, g, q = out.decoded, out.gaussians, out.quantized
    assert d.feat.shape == (B, cfg.feature_channels, S, S)
    assert d.tex.shape == d.verts.shape == d.exp.shape == (B, 3, S, S)
    n = sum(model.gaussian_counts().values())
    assert g.num_gaussians == n > 0
    assert g.means.shape == (B, n, 3) and g.quats.shape == (B, n, 4) and g.scales.shape == (B, n, 3)
    assert g.opacities.shape == (B, n) and g.sh.shape == (B, n, (cfg.sh_degree + 1) ** 2, 3)
    assert g.part_ids.shape == (n,) and g.part_names == list(cfg.parts)
    assert g.delta_position.shape == (B, n, 3) and g.delta_log_scale.shape == (B, n, 3)
    assert torch.allclose(g.quats.norm(dim=-1), torch.ones(B, n), atol=1e-5)
    assert (g.scales > 0).all() and ((g.opacities > 0) & (g.opacities < 1)).all()
    assert torch.isclose(g.opacities.mean(), torch.tensor(cfg.opacity_init), atol=0.02)
    for key in ("perplexity_id", "usage_id", "perplexity_expr", "usage_expr"):
        assert q.stats[key].dim() == 0
    if cfg.vq:
        assert q.loss > 0 and q.indices_id.shape == (B, cfg.latent_size, cfg.latent_size)
    else:
        assert q.loss == 0 and q.indices_id is None
    # gradients reach every trainable submodule
    (g.means.sum() + g.sh.sum() + g.scales.sum() + g.opacities.sum() + d.tex.sum() + d.verts.sum()
     + d.exp.sum() + q.loss).backward()
    for name in ("E_id", "E_expr", "D_feat", "D_id", "D_expr", "R_color", "R_gauss"):
        grads = [p.grad for p in getattr(model, name).parameters()]
        assert any(gr is not None and gr.abs().sum() > 0 for gr in grads), name


def test_no_sampling_has_one_gaussian_per_texel_and_sampling_is_denser():
    dense = make(tiny()).gaussian_counts()
    flat = make(tiny("sampling=false")).gaussian_counts()
    assert dense["scalp"] > 1.5 * flat["scalp"]


def test_submodule_names_are_the_contract():
    model = make(tiny())
    assert all(isinstance(getattr(model, n), torch.nn.Module) for n in SUBMODULES)
    prefixes = {k.split(".")[0] for k in model.state_dict()}
    assert prefixes == set(SUBMODULES)


def test_gaussians_follow_the_decoded_geometry_and_head_pose():
    model = make(tiny()).eval()
    tex, verts, exp, pose = inputs()
    with torch.no_grad():
        dec = model.decode(*[t for t in (model.quantize(*model.encode(tex, verts, exp)).q_id,
                                         model.quantize(*model.encode(tex, verts, exp)).q_expr)])
        g0 = model.gaussians(dec, torch.eye(4).repeat(B, 1, 1))
        rot = torch.tensor([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]])
        pose2 = torch.eye(4).repeat(B, 1, 1)
        pose2[:, :3, :3] = rot
        pose2[:, :3, 3] = torch.tensor([0.1, 0.2, 0.3])
        g1 = model.gaussians(dec, pose2)
    assert torch.allclose(g1.means, g0.means @ rot.T + torch.tensor([0.1, 0.2, 0.3]), atol=1e-5)
    assert torch.allclose(g1.scales, g0.scales) and torch.allclose(g1.sh, g0.sh)
    # the Gaussians sit within max_offset of the sampled decoded surface
    pts = model.sampler(dec.feat, dec.tex, dec.verts + dec.exp)
    assert (g0.means - pts.position).norm(dim=-1).max() <= model.cfg.max_offset * 3**0.5 + 1e-6


def test_bad_inputs_raise_clear_errors():
    model = make(tiny())
    tex, verts, exp, pose = inputs()
    with pytest.raises(ValueError, match="uv_size=64"):
        model(tex[..., :32, :32], verts, exp, pose)
    with pytest.raises(ValueError, match="head_pose"):
        model(tex, verts, exp, pose[:, :3])


def test_render_gaussians_shapes_and_background():
    model = make(tiny())
    tex, verts, exp, pose = inputs()
    v, h, w = 2, 24, 32
    k = torch.tensor([[40.0, 0, 16], [0, 40.0, 12], [0, 0, 1]]).expand(B, v, 3, 3)
    w2c = torch.eye(4).repeat(B, v, 1, 1)
    w2c[..., 2, 3] = 0.5
    w2c[:, 1, 2, 3] = -0.5  # second camera looks away: background only
    with torch.no_grad():
        rgb, alpha = render_gaussians(model(tex, verts, exp, pose).gaussians, k, w2c, h, w, [0.0, 1.0, 0.0], "torch")
    assert rgb.shape == (B, v, 3, h, w) and alpha.shape == (B, v, 1, h, w)
    assert alpha[:, 0].max() > 0.5
    assert torch.allclose(rgb[:, 1], torch.tensor([0.0, 1.0, 0.0]).view(3, 1, 1).expand(B, 3, h, w))


def test_presets_validate():
    assert load_config(ModelConfig, CONFIGS / "base.yaml") == ModelConfig()  # the defaults are the base preset
    for name in ("tiny", "base", "paper"):
        cfg = load_config(ModelConfig, CONFIGS / f"{name}.yaml")
        assert cfg.latent_size >= 4
    with pytest.raises(Exception, match="dec_channels"):
        tiny("dec_channels=[8]")


def test_default_head_layout_and_template():
    """With the real head model: the untrained prior already puts its Gaussians on a head."""
    import numpy as np

    from synshot.head import HeadModel, sample_expression, sample_identity

    cfg = tiny()
    model = SynShotPrior(cfg).eval()
    maps = HeadModel().uv_maps(sample_identity(np.random.default_rng(1)), sample_expression(np.random.default_rng(2)),
                               cfg.uv_size)
    batch = [maps[k][None].float() for k in ("tex", "verts", "exp")]
    with torch.no_grad():
        out = model(*batch, torch.eye(4)[None])
    g = out.gaussians
    assert g.num_gaussians == sum(model.gaussian_counts().values())
    # positions come from the template: inside a head-sized box, median scale ~ grid spacing (mm)
    assert g.means.abs().max() < 0.3
    assert 5e-4 < float(g.scales.median()) < 1e-2
    atlas = maps["verts"].abs().sum(0) > 0
    err = (out.decoded.verts[0] - maps["verts"]).abs().sum(0)[atlas].mean()
    assert err < 0.05  # metres: the mean head vs a sampled identity, before any training
