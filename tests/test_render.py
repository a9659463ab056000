"""Renderer: semantics against an independent dense reference, analytic cases, gradients, parity."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from synshot.render import RenderConfig, RenderOutput, rasterize, rasterize_torch
from synshot.render.project import project, sh_basis

GOLDEN = Path(__file__).parent / "data" / "render_golden.npz"


# ---------------------------------------------------------------- scenes and a dense reference


def make_scene(n=12, cams=1, width=20, height=16, seed=0, dtype=torch.float64, sh_k=4):
    """A few random Gaussians around the origin, cameras at z=-1.2 looking along +z."""
    g = torch.Generator().manual_seed(seed)
    r = lambda *s: torch.rand(*s, generator=g, dtype=dtype)  # noqa: E731
    means = (r(n, 3) - 0.5) * torch.tensor([0.5, 0.4, 0.3], dtype=dtype)
    quats = torch.randn(n, 4, generator=g, dtype=dtype)
    scales = 0.02 + 0.06 * r(n, 3)
    opac = 0.2 + 0.7 * r(n)
    colors = 0.4 * torch.randn(n, sh_k, 3, generator=g, dtype=dtype)
    viewmats = torch.eye(4, dtype=dtype).repeat(cams, 1, 1)
    for c in range(cams):
        a = 0.25 * c
        R = torch.tensor([[math.cos(a), 0, -math.sin(a)], [0, 1, 0], [math.sin(a), 0, math.cos(a)]], dtype=dtype)
        viewmats[c, :3, :3] = R
        viewmats[c, :3, 3] = torch.tensor([0.0, 0.0, 1.2], dtype=dtype)
    f = 1.4 * width
    Ks = torch.tensor([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], dtype=dtype).repeat(cams, 1, 1)
    return means, quats, scales, opac, colors, viewmats, Ks


def reference_render(means, quats, scales, opac, rgb_or_sh, viewmats, Ks, W, H, sh_degree=None, bg=None,
                     near=0.01, far=100.0):
    """Dense per-pixel gsplat semantics written independently of synshot.render (slow, tiny scenes)."""
    C = viewmats.shape[0]
    q = quats / quats.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    R = torch.stack([
        torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
        torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
        torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
    ], -2)
    cov3 = R @ torch.diag_embed(scales**2) @ R.transpose(1, 2)
    py, px = torch.meshgrid(torch.arange(H, dtype=means.dtype) + 0.5, torch.arange(W, dtype=means.dtype) + 0.5,
                            indexing="ij")
    rgbs, alphas, depths = [], [], []
    for c in range(C):
        Rw, t = viewmats[c, :3, :3], viewmats[c, :3, 3]
        fx, fy, cx, cy = Ks[c, 0, 0], Ks[c, 1, 1], Ks[c, 0, 2], Ks[c, 1, 2]
        mc = means @ Rw.T + t
        order = torch.argsort(mc[:, 2])
        T = torch.ones(H, W, dtype=means.dtype)
        done = torch.zeros(H, W, dtype=torch.bool)
        acc = torch.zeros(H, W, 4, dtype=means.dtype)
        campos = torch.linalg.inv(viewmats[c])[:3, 3]  # as gsplat (same value as -R^T t)
        for i in order.tolist():
            X, Y, Z = mc[i]
            if not (near < Z < far) or opac[i] < 1 / 255:
                continue
            tx = Z * torch.clamp(X / Z, -(cx / fx + 0.3 * 0.5 * W / fx), (W - cx) / fx + 0.3 * 0.5 * W / fx)
            ty = Z * torch.clamp(Y / Z, -(cy / fy + 0.3 * 0.5 * H / fy), (H - cy) / fy + 0.3 * 0.5 * H / fy)
            J = torch.stack([torch.stack([fx / Z, 0 * Z, -fx * tx / Z**2]), torch.stack([0 * Z, fy / Z, -fy * ty / Z**2])])
            cov2 = J @ Rw @ cov3[i] @ Rw.T @ J.T + 0.3 * torch.eye(2, dtype=means.dtype)
            conic = torch.linalg.inv(cov2)
            dx = fx * X / Z + cx - px
            dy = fy * Y / Z + cy - py
            sigma = 0.5 * (conic[0, 0] * dx * dx + conic[1, 1] * dy * dy) + conic[0, 1] * dx * dy
            a = torch.clamp(opac[i] * torch.exp(-sigma), max=0.999)
            use = (~done) & (a >= 1 / 255) & (sigma >= 0)
            nextT = T * (1 - a)
            stop = use & (nextT <= 1e-4)
            done = done | stop
            use = use & ~stop
            if sh_degree is None:
                col = rgb_or_sh[i]
            else:
                d = means[i] - campos
                d = d / d.norm()
                basis = _sh_basis_ref(sh_degree, d)
                col = torch.clamp((basis[:, None] * rgb_or_sh[i, : basis.shape[0]]).sum(0) + 0.5, min=0)
            feat = torch.cat([col, Z[None]])
            wgt = torch.where(use, a * T, torch.zeros_like(a))
            acc = acc + wgt[..., None] * feat
            T = torch.where(use, nextT, T)
        alpha = 1 - T
        rgb = acc[..., :3] + (T[..., None] * bg[c] if bg is not None else 0)
        rgbs.append(rgb)
        alphas.append(alpha[..., None])
        depths.append(acc[..., 3:] / alpha.clamp(min=1e-10)[..., None])
    return RenderOutput(torch.stack(rgbs), torch.stack(alphas), torch.stack(depths))


def _sh_basis_ref(deg, d):
    """Real SH basis from the published 3DGS constants (C0..C3), used as the independent reference."""
    x, y, z = d
    C1 = 0.4886025119029199
    C2 = [1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396]
    C3 = [-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154, -0.4570457994644658,
          1.445305721320277, -0.5900435899266435]
    out = [0.28209479177387814]
    if deg >= 1:
        out += [-C1 * y, C1 * z, -C1 * x]
    if deg >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        out += [C2[0] * xy, C2[1] * yz, C2[2] * (2 * zz - xx - yy), C2[3] * xz, C2[4] * (xx - yy)]
    if deg >= 3:
        out += [C3[0] * y * (3 * xx - yy), C3[1] * xy * z, C3[2] * y * (4 * zz - xx - yy),
                C3[3] * z * (2 * zz - 3 * xx - 3 * yy), C3[4] * x * (4 * zz - xx - yy), C3[5] * z * (xx - yy),
                C3[6] * x * (xx - 3 * yy)]
    return torch.stack([torch.as_tensor(v, dtype=d.dtype) for v in out])


def assert_close_render(a: RenderOutput, b: RenderOutput, atol=1e-6):
    for k in ("rgb", "alpha", "depth"):
        ta, tb = getattr(a, k), getattr(b, k)
        assert ta.shape == tb.shape, (k, ta.shape, tb.shape)
        torch.testing.assert_close(ta, tb, atol=atol, rtol=0, msg=lambda m: f"{k}: {m}")


# ---------------------------------------------------------------- forward semantics


@pytest.mark.parametrize("sh_degree", [None, 0, 1, 2, 3])
def test_matches_dense_reference(sh_degree):
    means, quats, scales, opac, sh, vm, Ks = make_scene(n=14, cams=2, sh_k=16, seed=1)
    colors = torch.sigmoid(sh[:, 0]) if sh_degree is None else sh
    bg = torch.tensor([[0.2, 0.5, 0.9], [1.0, 1.0, 1.0]], dtype=means.dtype)
    out = rasterize(means, quats, scales, opac, colors, vm, Ks, 20, 16, sh_degree=sh_degree, backgrounds=bg)
    ref = reference_render(means, quats, scales, opac, colors, vm, Ks, 20, 16, sh_degree=sh_degree, bg=bg)
    assert out.rgb.shape == (2, 16, 20, 3) and out.alpha.shape == (2, 16, 20, 1) and out.depth.shape == (2, 16, 20, 1)
    assert float(out.alpha.max()) > 0.5  # the scene is visible, so the comparison means something
    assert_close_render(out, ref, atol=1e-9)


def test_saturating_stack_stops_like_gsplat():
    """Many opaque layers: transmittance cut-off at 1e-4 and the 0.999 alpha clamp."""
    n = 10
    dt = torch.float64
    means = torch.zeros(n, 3, dtype=dt)
    means[:, 2] = torch.linspace(0.0, 0.5, n, dtype=dt)
    means[:, 0] = torch.linspace(-0.02, 0.02, n, dtype=dt)
    quats = torch.tensor([[1.0, 0, 0, 0]], dtype=dt).repeat(n, 1)
    scales = torch.full((n, 3), 0.15, dtype=dt)
    opac = torch.full((n,), 0.98, dtype=dt)
    opac[0] = 1.0  # clamped to 0.999
    colors = torch.rand(n, 3, generator=torch.Generator().manual_seed(3), dtype=dt)
    vm = torch.eye(4, dtype=dt)[None]
    vm[0, 2, 3] = 1.0
    Ks = torch.tensor([[[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]]], dtype=dt)
    out = rasterize(means, quats, scales, opac, colors, vm, Ks, 16, 16)
    ref = reference_render(means, quats, scales, opac, colors, vm, Ks, 16, 16)
    assert_close_render(out, ref, atol=1e-10)
    # Saturated pixels end with transmittance just above the 1e-4 cut-off, never below it.
    assert 0.999 < float(out.alpha.max()) < 1 - 1e-4
    centred = torch.tensor([[[20.0, 0, 8.5], [0, 20.0, 8.5], [0, 0, 1]]], dtype=dt)  # mean 0 -> pixel (8, 8)
    single = rasterize(torch.zeros(1, 3, dtype=dt), quats[:1], scales[:1], opac[:1], colors[:1], vm, centred, 16, 16)
    assert float(single.alpha.max()) == pytest.approx(0.999, abs=1e-12)  # opacity 1 is clamped


def test_border_straddling_gaussian():
    """A large Gaussian centred just outside the left border still lights the pixels it covers."""
    dt = torch.float64
    means = torch.tensor([[-0.07, 0.01, 0.0], [0.12, 0.0, 0.05]], dtype=dt)  # left border, right border
    quats = torch.tensor([[1.0, 0, 0, 0], [0.9, 0.1, 0.3, 0.2]], dtype=dt)
    scales = torch.tensor([[0.05, 0.04, 0.05], [0.03, 0.06, 0.02]], dtype=dt)
    opac = torch.tensor([0.9, 0.7], dtype=dt)
    colors = torch.tensor([[1.0, 0.2, 0.1], [0.1, 0.9, 0.3]], dtype=dt)
    vm = torch.eye(4, dtype=dt)[None]
    vm[0, 2, 3] = 1.0
    Ks = torch.tensor([[[100.0, 0, 8], [0, 100.0, 8], [0, 0, 1]]], dtype=dt)  # centre 1 lands at x = 1
    out = rasterize(means, quats, scales, opac, colors, vm, Ks, 24, 16)
    ref = reference_render(means, quats, scales, opac, colors, vm, Ks, 24, 16)
    assert_close_render(out, ref, atol=1e-10)
    assert float(out.alpha[0, :, 0].max()) > 0.5 and float(out.alpha[0, :, -1].max()) > 0.1


def test_behind_camera_and_beyond_far_are_ignored():
    dt = torch.float64
    means, quats, scales, opac, colors, vm, Ks = make_scene(n=6, seed=2)
    rgb = torch.sigmoid(colors[:, 0])
    base = rasterize(means, quats, scales, opac, rgb, vm, Ks, 20, 16, far_plane=10.0)
    # Big opaque Gaussians right behind the camera (z_cam < 0, and 0 < z_cam < near) and beyond far,
    # all on the optical axis, where they would cover the whole image if they were not culled.
    extra_means = torch.tensor([[0.0, 0.0, -1.5], [0.0, 0.0, -1.2 + 0.005], [0.0, 0.0, 9.5]], dtype=dt)
    extra = dict(
        means=torch.cat([means, extra_means]),
        quats=torch.cat([quats, torch.tensor([[1.0, 0, 0, 0]] * 3, dtype=dt)]),
        scales=torch.cat([scales, torch.full((3, 3), 0.3, dtype=dt)]),
        opac=torch.cat([opac, torch.full((3,), 0.95, dtype=dt)]),
        rgb=torch.cat([rgb, torch.ones(3, 3, dtype=dt)]),
    )
    out = rasterize(extra["means"], extra["quats"], extra["scales"], extra["opac"], extra["rgb"], vm, Ks, 20, 16,
                    far_plane=9.0)
    assert_close_render(out, base, atol=1e-12)
    # Sanity: with a far plane beyond it, the distant Gaussian does show up.
    seen = rasterize(extra["means"], extra["quats"], extra["scales"], extra["opac"], extra["rgb"], vm, Ks, 20, 16,
                     far_plane=20.0)
    assert float((seen.alpha - base.alpha).abs().max()) > 0.1


def test_empty_scene_returns_background():
    z = torch.zeros(0, 3)
    bg = torch.tensor([[0.1, 0.2, 0.3], [0.4, 0.5, 0.6]])
    vm = torch.eye(4).repeat(2, 1, 1)
    Ks = torch.tensor([[10.0, 0, 5], [0, 10.0, 4], [0, 0, 1]]).repeat(2, 1, 1)
    out = rasterize(z, torch.zeros(0, 4), z, torch.zeros(0), z, vm, Ks, 10, 8, backgrounds=bg)
    assert out.rgb.shape == (2, 8, 10, 3)
    torch.testing.assert_close(out.rgb, bg[:, None, None, :].expand(2, 8, 10, 3))
    assert float(out.alpha.abs().max()) == 0.0 and float(out.depth.abs().max()) == 0.0
    # All Gaussians culled (behind the camera) behaves the same.
    means = torch.tensor([[0.0, 0.0, -1.0]])
    out = rasterize(means, torch.tensor([[1.0, 0, 0, 0]]), torch.full((1, 3), 0.1), torch.ones(1),
                    torch.ones(1, 3), vm, Ks, 10, 8, backgrounds=bg)
    torch.testing.assert_close(out.rgb, bg[:, None, None, :].expand(2, 8, 10, 3))


def test_single_isotropic_gaussian_analytic():
    """Head-on isotropic Gaussian: peak alpha = opacity at the projected centre, variance (f s / z)^2 + 0.3."""
    dt = torch.float64
    f, s, zc, o = 40.0, 0.05, 1.0, 0.8
    means = torch.zeros(1, 3, dtype=dt)
    vm = torch.eye(4, dtype=dt)[None]
    vm[0, 2, 3] = zc
    Ks = torch.tensor([[[f, 0, 8.5], [0, f, 6.5], [0, 0, 1]]], dtype=dt)  # centre = pixel (row 6, col 8)
    out = rasterize(means, torch.tensor([[1.0, 0, 0, 0]], dtype=dt), torch.full((1, 3), s, dtype=dt),
                    torch.tensor([o], dtype=dt), torch.tensor([[0.3, 0.6, 0.9]], dtype=dt), vm, Ks, 17, 13)
    alpha = out.alpha[0, :, :, 0]
    assert tuple(np.unravel_index(int(alpha.argmax()), alpha.shape)) == (6, 8)
    assert float(alpha[6, 8]) == pytest.approx(o, abs=1e-12)
    var = (f * s / zc) ** 2 + 0.3
    rows, cols = torch.meshgrid(torch.arange(13, dtype=dt), torch.arange(17, dtype=dt), indexing="ij")
    expect = o * torch.exp(-0.5 * ((rows - 6) ** 2 + (cols - 8) ** 2) / var)
    expect = torch.where(expect >= 1 / 255, expect, torch.zeros_like(expect))
    torch.testing.assert_close(alpha, expect, atol=1e-12, rtol=0)
    assert int((alpha > 0).sum()) == int((expect > 0).sum()) > 20  # footprint: the 1/255 level set
    torch.testing.assert_close(out.rgb[0, 6, 8], o * torch.tensor([0.3, 0.6, 0.9], dtype=dt))
    assert float(out.depth[0, 6, 8, 0]) == pytest.approx(zc, abs=1e-12)


def test_sh_degree_zero_colour_and_band_consistency():
    means, quats, scales, opac, sh, vm, Ks = make_scene(n=8, cams=2, sh_k=16, seed=4)
    rgb0 = torch.clamp(0.28209479177387814 * sh[:, 0] + 0.5, min=0)
    ref = rasterize(means, quats, scales, opac, rgb0, vm, Ks, 20, 16)
    for deg in range(4):
        only_dc = torch.zeros_like(sh)
        only_dc[:, 0] = sh[:, 0]
        out = rasterize(means, quats, scales, opac, only_dc, vm, Ks, 20, 16, sh_degree=deg)
        assert_close_render(out, ref, atol=1e-12)
    # sh_degree uses only the first (d+1)^2 coefficients; default degree = sqrt(K) - 1.
    d1 = rasterize(means, quats, scales, opac, sh, vm, Ks, 20, 16, sh_degree=1)
    d1_trunc = rasterize(means, quats, scales, opac, sh[:, :4].contiguous(), vm, Ks, 20, 16)
    assert_close_render(d1, d1_trunc, atol=1e-12)
    d3 = rasterize(means, quats, scales, opac, sh, vm, Ks, 20, 16)
    assert float((d3.rgb - d1.rgb).abs().max()) > 1e-3


def test_sh_basis_matches_3dgs_constants():
    d = torch.nn.functional.normalize(torch.randn(20, 3, generator=torch.Generator().manual_seed(0),
                                                  dtype=torch.float64), dim=-1)
    ours = sh_basis(3, d)
    ref = torch.stack([_sh_basis_ref(3, v) for v in d])
    torch.testing.assert_close(ours, ref, atol=1e-12, rtol=0)


def test_batched_cameras_equal_single_cameras_images_and_gradients():
    means, quats, scales, opac, sh, vm, Ks = make_scene(n=10, cams=3, sh_k=4, seed=5)
    bg = torch.rand(3, 3, generator=torch.Generator().manual_seed(1), dtype=means.dtype)
    params = [t.clone().requires_grad_() for t in (means, quats, scales, opac, sh)]
    out = rasterize(*params, vm, Ks, 20, 16, backgrounds=bg)
    wts = torch.rand(out.rgb.shape, generator=torch.Generator().manual_seed(2), dtype=means.dtype)
    (out.rgb * wts).sum().add(out.alpha.sum() + 0.1 * out.depth.sum()).backward()
    grads = [p.grad.clone() for p in params]
    acc = [torch.zeros_like(p) for p in params]
    for c in range(3):
        ps = [t.clone().requires_grad_() for t in (means, quats, scales, opac, sh)]
        one = rasterize(*ps, vm[c : c + 1], Ks[c : c + 1], 20, 16, backgrounds=bg[c : c + 1])
        for k in ("rgb", "alpha", "depth"):
            torch.testing.assert_close(getattr(one, k)[0], getattr(out, k)[c], atol=1e-12, rtol=0)
        (one.rgb * wts[c : c + 1]).sum().add(one.alpha.sum() + 0.1 * one.depth.sum()).backward()
        for a, p in zip(acc, ps):
            a += p.grad
    for g, a in zip(grads, acc):
        torch.testing.assert_close(g, a, atol=1e-10, rtol=1e-8)


@pytest.mark.parametrize("tile_size,max_pairs", [(None, 1 << 22), (4, 1 << 22), (8, 64), (16, 1 << 22), (16, 300)])
def test_tiling_and_chunking_do_not_change_results(tile_size, max_pairs):
    means, quats, scales, opac, sh, vm, Ks = make_scene(n=16, cams=2, sh_k=4, seed=6, width=37, height=21)
    ref = reference_render(means, quats, scales, opac, sh, vm, Ks, 37, 21, sh_degree=1)
    out = rasterize_torch(means, quats, scales, opac, sh, vm, Ks, 37, 21, sh_degree=1, tile_size=tile_size,
                          max_pairs=max_pairs)
    assert_close_render(out, ref, atol=1e-9)


def test_choose_tile_size_follows_splat_size():
    from synshot.render.tiles import choose_tile_size

    g = torch.Generator().manual_seed(0)
    means2d = torch.rand(500, 2, generator=g) * 128
    assert choose_tile_size(means2d, torch.full((500, 2), 2), 128, 128) == 4  # tiny splats: small tiles
    assert choose_tile_size(means2d, torch.full((500, 2), 40), 128, 128) == 16  # big splats: big tiles
    assert choose_tile_size(means2d[:0], torch.zeros(0, 2), 128, 128) == 16


def test_ellipse_tile_culling_is_exact():
    """A (Gaussian, tile) pair is dropped only if no pixel centre of the tile has alpha >= 1/255."""
    from synshot.render.tiles import _ellipse_meets_tile

    g = torch.Generator().manual_seed(16)
    n, ts = 4000, 4
    dt = torch.float64
    means2d = torch.rand(n, 2, generator=g, dtype=dt) * 24 - 4
    L = torch.randn(n, 2, 2, generator=g, dtype=dt) * 1.5
    cov = L @ L.transpose(1, 2) + 0.3 * torch.eye(2, dtype=dt)
    inv = torch.linalg.inv(cov)
    conics = torch.stack([inv[:, 0, 0], inv[:, 0, 1], inv[:, 1, 1]], -1)
    opac = 0.01 + 0.99 * torch.rand(n, generator=g, dtype=dt)
    txi = torch.randint(0, 4, (n,), generator=g)
    tyi = torch.randint(0, 4, (n,), generator=g)
    hit = _ellipse_meets_tile(means2d, conics, opac, torch.arange(n), txi, tyi, ts)
    off = torch.arange(ts, dtype=dt) + 0.5
    px = (txi[:, None] * ts + off)[:, None, :]  # (n,1,ts)
    py = (tyi[:, None] * ts + off)[:, :, None]  # (n,ts,1)
    dx = means2d[:, 0, None, None] - px
    dy = means2d[:, 1, None, None] - py
    a, b, c = (conics[:, i, None, None] for i in range(3))
    alpha = opac[:, None, None] * torch.exp(-(0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy))
    truth = (alpha >= 1 / 255).flatten(1).any(1)
    assert bool((hit | ~truth).all()), "a tile with visible pixels was culled"
    assert int((hit & ~truth).sum()) <= 2 and int((~hit).sum()) > n // 4  # tight, and it does cull


def test_projection_matches_gsplat_torch_reference():
    """Our copy of the projection maths agrees with gsplat's own pure-torch implementation."""
    _torch_impl = pytest.importorskip("gsplat.cuda._torch_impl")
    means, quats, scales, opac, _, vm, Ks = make_scene(n=30, cams=2, seed=7, width=40, height=30)
    p = project(means, quats, scales, opac, vm, Ks, 40, 30, 0.01, 100.0)
    covars, _ = _torch_impl._quat_scale_to_covar_preci(quats, scales, compute_preci=False)
    radii, means2d, depths, conics, _ = _torch_impl._fully_fused_projection(means, covars, vm, Ks, 40, 30)
    assert p.cam.numel() > 20
    torch.testing.assert_close(p.means2d, means2d[p.cam, p.gid], atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(p.conics, conics[p.cam, p.gid], atol=1e-9, rtol=1e-9)
    torch.testing.assert_close(p.depths, depths[p.cam, p.gid], atol=1e-12, rtol=0)
    assert bool((p.radii <= radii[p.cam, p.gid]).all())  # opacity-aware boxes are never larger


# ---------------------------------------------------------------- gradients


def _fd_check(fn, params, eps=1e-6, rtol=1e-4, atol=1e-7, max_entries=10):
    """Central differences on up to ``max_entries`` random entries of every parameter tensor."""
    loss = fn(*params)
    grads = torch.autograd.grad(loss, params)
    pick = torch.Generator().manual_seed(0)
    for idx, (name, p, g) in enumerate(zip(("means", "quats", "scales", "opacities", "colors"), params, grads)):
        flat = p.detach().reshape(-1)
        entries = torch.randperm(flat.numel(), generator=pick)[:max_entries].tolist()
        num = torch.zeros(len(entries), dtype=p.dtype)
        for j, i in enumerate(entries):
            plus, minus = flat.clone(), flat.clone()
            plus[i] += eps
            minus[i] -= eps
            args = [q.detach() for q in params]
            args[idx] = plus.reshape(p.shape)
            lp = float(fn(*args))
            args[idx] = minus.reshape(p.shape)
            lm = float(fn(*args))
            num[j] = (lp - lm) / (2 * eps)
        ours = g.reshape(-1)[entries]
        assert float(ours.abs().max()) > 0, f"{name}: gradient is identically zero"
        torch.testing.assert_close(ours, num, rtol=rtol, atol=atol, msg=lambda m: f"d loss / d {name}: {m}")


@pytest.mark.parametrize("sh", [False, True])
def test_gradients_match_finite_differences(sh):
    means, quats, scales, opac, shc, vm, Ks = make_scene(n=5, cams=2, width=16, height=16, seed=8, sh_k=4)
    colors = shc if sh else torch.sigmoid(shc[:, 0])
    bg = torch.tensor([[0.3, 0.6, 0.2], [0.9, 0.1, 0.5]], dtype=means.dtype)
    g = torch.Generator().manual_seed(9)
    w_rgb = torch.rand(2, 16, 16, 3, generator=g, dtype=means.dtype)
    w_a = torch.rand(2, 16, 16, 1, generator=g, dtype=means.dtype)
    w_d = torch.rand(2, 16, 16, 1, generator=g, dtype=means.dtype)

    def loss(m, q, s, o, c):
        out = rasterize(m, q, s, o, c, vm, Ks, 16, 16, backgrounds=bg)
        return (out.rgb * w_rgb).sum() + (out.alpha * w_a).sum() + 0.1 * (out.depth * w_d).sum()

    params = [t.clone().requires_grad_() for t in (means, quats, scales, opac, colors)]
    _fd_check(loss, params)


@pytest.mark.parametrize("keep_forward", [True, False])
@pytest.mark.parametrize("scene", ["saturating", "random_sh"])
def test_gradients_match_autograd_through_dense_reference(scene, keep_forward, monkeypatch):
    """Custom backward == autograd of the independent dense reference, incl. the 1e-4 cut-off and 0.999 clamp.

    Both backward paths: forward results kept (small renders) and recomputed (over the memory budget).
    """
    import synshot.render.composite as composite_mod

    if not keep_forward:
        monkeypatch.setattr(composite_mod, "SAVE_BYTES", 0)
    dt = torch.float64
    if scene == "saturating":
        n = 8
        g = torch.Generator().manual_seed(13)
        means = torch.stack([0.03 * torch.randn(n, generator=g, dtype=dt), 0.03 * torch.randn(n, generator=g, dtype=dt),
                             torch.linspace(0.0, 0.4, n, dtype=dt)], -1)
        quats = torch.randn(n, 4, generator=g, dtype=dt)
        scales = 0.08 + 0.04 * torch.rand(n, 3, generator=g, dtype=dt)
        opac = torch.full((n,), 0.97, dtype=dt)
        opac[0] = 0.9995  # above the clamp
        colors, sh_degree = torch.rand(n, 3, generator=g, dtype=dt), None
        vm = torch.eye(4, dtype=dt).repeat(2, 1, 1)
        vm[:, 2, 3] = 1.0
        vm[1, 0, 3] = 0.05
        Ks = torch.tensor([[20.0, 0, 8], [0, 20.0, 8], [0, 0, 1]], dtype=dt).repeat(2, 1, 1)
    else:
        means, quats, scales, opac, colors, vm, Ks = make_scene(n=12, cams=2, width=16, height=16, seed=14, sh_k=16)
        sh_degree = 3
    bg = torch.tensor([[0.3, 0.6, 0.2], [0.9, 0.1, 0.5]], dtype=dt)
    g = torch.Generator().manual_seed(15)
    w_rgb, w_a, w_d = (torch.rand(2, 16, 16, k, generator=g, dtype=dt) for k in (3, 1, 1))
    grads = {}
    for name, fn in (("ours", rasterize), ("ref", reference_render)):
        ps = [t.clone().requires_grad_() for t in (means, quats, scales, opac, colors, vm)]
        if name == "ours":
            out = fn(*ps, Ks, 16, 16, sh_degree=sh_degree, backgrounds=bg)
        else:
            out = fn(*ps, Ks, 16, 16, sh_degree=sh_degree, bg=bg)
        ((out.rgb * w_rgb).sum() + (out.alpha * w_a).sum() + 0.1 * (out.depth * w_d).sum()).backward()
        grads[name] = [p.grad for p in ps]
        if scene == "saturating":
            assert float(out.alpha.detach().max()) > 0.9998  # the cut-off is exercised
    # viewmats too: the inversion refines cameras through the renderer
    for pname, a, b in zip(("means", "quats", "scales", "opacities", "colors", "viewmats"), grads["ours"],
                           grads["ref"]):
        assert float(b.abs().max()) > 0, pname
        torch.testing.assert_close(a, b, atol=1e-9, rtol=1e-7, msg=lambda m: f"d loss / d {pname}: {m}")


def test_half_precision_inputs_render_in_float32():
    means, quats, scales, opac, sh, vm, Ks = make_scene(n=10, dtype=torch.float32)
    ref = rasterize(means, quats, scales, opac, sh, vm, Ks, 20, 16)
    half = [t.to(torch.bfloat16) for t in (means, quats, scales, opac, sh)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = rasterize(*half, vm, Ks, 20, 16)
    assert out.rgb.dtype == torch.float32
    torch.testing.assert_close(out.alpha, ref.alpha, atol=0.05, rtol=0)


def test_float32_gradients_close_to_float64():
    means, quats, scales, opac, shc, vm, Ks = make_scene(n=40, cams=2, width=32, height=32, seed=10)
    res = {}
    for dt in (torch.float64, torch.float32):
        ps = [t.to(dt).clone().requires_grad_() for t in (means, quats, scales, opac, shc)]
        out = rasterize(*ps, vm.to(dt), Ks.to(dt), 32, 32)
        (out.rgb.square().sum() + out.alpha.sum()).backward()
        res[dt] = (out.rgb.detach().double(), [p.grad.double() for p in ps])
    torch.testing.assert_close(res[torch.float32][0], res[torch.float64][0], atol=1e-5, rtol=0)
    for g32, g64 in zip(res[torch.float32][1], res[torch.float64][1]):
        torch.testing.assert_close(g32, g64, atol=1e-3 * float(g64.abs().max()), rtol=1e-3)


# ---------------------------------------------------------------- golden image, inputs, config


def _golden_scene():
    return make_scene(n=24, cams=2, width=32, height=24, seed=11, dtype=torch.float32, sh_k=9)


def _render_golden():
    means, quats, scales, opac, sh, vm, Ks = _golden_scene()
    bg = torch.tensor([[1.0, 1.0, 1.0], [0.0, 0.0, 0.0]])
    out = rasterize(means, quats, scales, opac, sh, vm, Ks, 32, 24, backgrounds=bg)
    return {k: getattr(out, k).detach().numpy() for k in ("rgb", "alpha", "depth")}


def test_golden_image():
    """Regenerate (only after an intended change) with: PYTHONPATH=. python tests/test_render.py --regen-golden"""
    assert GOLDEN.is_file(), f"{GOLDEN} missing; regenerate with: PYTHONPATH=. python tests/test_render.py --regen-golden"
    ref = np.load(GOLDEN)
    now = _render_golden()
    assert float(ref["alpha"].max()) > 0.5
    for k in ("rgb", "alpha", "depth"):
        np.testing.assert_allclose(now[k], ref[k], atol=2e-5, rtol=0, err_msg=k)


def test_bad_inputs_raise_clear_errors():
    means, quats, scales, opac, sh, vm, Ks = make_scene(n=3)
    with pytest.raises(ValueError, match="quats must be"):
        rasterize(means, quats[:, :3], scales, opac, sh, vm, Ks, 20, 16)
    with pytest.raises(ValueError, match="sh_degree=3 needs"):
        rasterize(means, quats, scales, opac, sh, vm, Ks, 20, 16, sh_degree=3)
    with pytest.raises(ValueError, match="not a square"):
        rasterize(means, quats, scales, opac, sh[:, :3], vm, Ks, 20, 16)
    with pytest.raises(ValueError, match="backgrounds must be"):
        rasterize(means, quats, scales, opac, sh, vm, Ks, 20, 16, backgrounds=torch.zeros(3))
    with pytest.raises(ValueError, match="tile_size must be"):
        rasterize(means, quats, scales, opac, sh, vm, Ks, 20, 16, tile_size=0)
    with pytest.raises(ValueError, match="backend must be"):
        rasterize(means, quats, scales, opac, sh, vm, Ks, 20, 16, backend="cuda")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="needs CUDA tensors"):
            rasterize(means, quats, scales, opac, sh, vm, Ks, 20, 16, backend="gsplat")


def test_backend_resolution_and_gsplat_fallback(monkeypatch):
    import synshot.render.api as rmod

    assert rmod.resolve_backend("auto", False) == "torch"
    assert rmod.resolve_backend("gsplat", False) == "gsplat"  # rasterize then raises a clear error on CPU
    monkeypatch.setattr(rmod, "_GSPLAT_STATUS", (True, "ok"))
    assert rmod.resolve_backend("auto", True) == "gsplat"
    monkeypatch.setattr(rmod, "_GSPLAT_STATUS", (False, "RuntimeError: nvcc failed"))
    monkeypatch.setattr(rmod, "_WARNED_FALLBACK", False)
    with pytest.warns(UserWarning, match="nvcc failed"):
        assert rmod.resolve_backend("auto", True) == "torch"
    assert rmod.resolve_backend("auto", True) == "torch"  # warned once only
    with pytest.raises(ValueError, match="backend must be"):
        rmod.resolve_backend("cuda", True)


def test_render_config():
    from synshot.config import ConfigError, validate_config

    cfg = validate_config(RenderConfig, {"background": [1, 1, 1], "tile_size": 8})
    kw = cfg.rasterize_kwargs(2)
    assert kw["backgrounds"].shape == (2, 3) and kw["tile_size"] == 8 and kw["backend"] == "auto"
    means, quats, scales, opac, sh, vm, Ks = make_scene(n=3, cams=2, dtype=torch.float32)
    out = rasterize(means, quats, scales, opac, sh, vm, Ks, 20, 16, **kw)
    assert out.rgb.shape == (2, 16, 20, 3)
    with pytest.raises(ConfigError, match="far_plane"):
        validate_config(RenderConfig, {"near_plane": 5.0, "far_plane": 1.0})
    with pytest.raises(ConfigError, match="backend"):
        validate_config(RenderConfig, {"backend": "cuda"})


# ---------------------------------------------------------------- GPU parity (runs on a CUDA machine)


@pytest.mark.gpu
@pytest.mark.parametrize("sh_degree", [None, 3])
def test_torch_backend_matches_gsplat_on_cuda(sh_degree):
    pytest.importorskip("gsplat")
    dev = torch.device("cuda")
    g = torch.Generator().manual_seed(12)
    n, W, H = 400, 96, 64
    means = (torch.rand(n, 3, generator=g) - 0.5) * torch.tensor([0.3, 0.3, 0.2])
    quats = torch.randn(n, 4, generator=g)
    scales = 0.004 + 0.02 * torch.rand(n, 3, generator=g)
    opac = 0.1 + 0.85 * torch.rand(n, generator=g)
    colors = 0.5 * torch.randn(n, 16, 3, generator=g) if sh_degree is not None else torch.rand(n, 3, generator=g)
    vm = torch.eye(4).repeat(2, 1, 1)
    vm[:, 2, 3] = torch.tensor([0.8, 1.0])
    vm[1, 0, 3] = 0.05
    Ks = torch.tensor([[120.0, 0, W / 2], [0, 120.0, H / 2], [0, 0, 1]]).repeat(2, 1, 1)
    bg = torch.rand(2, 3, generator=g)
    wts = torch.rand(2, H, W, 3, generator=g).to(dev)
    res = {}
    for backend in ("torch", "gsplat"):
        ps = [t.to(dev).clone().requires_grad_() for t in (means, quats, scales, opac, colors, vm)]
        out = rasterize(*ps, Ks.to(dev), W, H, sh_degree=sh_degree, backgrounds=bg.to(dev), backend=backend)
        ((out.rgb * wts).sum() + out.alpha.sum() + 0.1 * (out.depth * out.alpha).sum()).backward()
        res[backend] = (out, [p.grad for p in ps])
    (ot, gt), (og, gg) = res["torch"], res["gsplat"]
    assert float(og.alpha.max()) > 0.5
    for k in ("rgb", "alpha"):
        torch.testing.assert_close(getattr(ot, k), getattr(og, k), atol=2e-4, rtol=0)
    covered = og.alpha > 0.05
    torch.testing.assert_close(ot.depth[covered], og.depth[covered], atol=1e-3, rtol=1e-3)
    for name, a, b in zip(("means", "quats", "scales", "opacities", "colors", "viewmats"), gt, gg):
        scale = float(b.abs().max())
        assert scale > 0, name
        err = float((a - b).abs().max()) / scale
        cos = float(torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0))
        assert err < 2e-2 and cos > 0.999, f"{name}: max rel err {err:.3g}, cosine {cos:.6f}"


if __name__ == "__main__":
    import sys

    if "--regen-golden" in sys.argv:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(GOLDEN, **_render_golden())
        print(f"wrote {GOLDEN}")
