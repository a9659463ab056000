"""Tile-based front-to-back alpha compositing with a hand-written backward pass.

Why a custom ``autograd.Function``: autograd through ``cumprod`` keeps every (tile, pixel,
Gaussian) temporary alive and its backward is several times the forward. Here the forward keeps
only the blend weights and ``a/(1-a)`` per chunk, within ``SAVE_BYTES`` (beyond it the backward
recomputes the chunk), and the backward applies the closed form

    C = sum_i w_i f_i,   w_i = a_i T_i,   T_i = prod_{j<i} (1 - a_j)
    dC/da_i = T_i f_i - (sum_{j>i} w_j f_j) / (1 - a_i)

with the suffix sums from one cumulative sum. Semantics match gsplat's CUDA rasteriser:
``a = min(0.999, o exp(-sigma))``, skip ``a < 1/255``, and stop a pixel before the Gaussian that
would bring its transmittance to ``<= 1e-4``.

Speed on CPU comes from three choices (docs/render.md has the measurements):
- ``log(o) - sigma`` is a quadratic in the pixel offset from the tile centre, so for a whole
  chunk it is ONE matmul of per-(tile, Gaussian) coefficients (T,K,6) with a fixed (6,P) basis,
  and its gradient is one matmul back;
- the exponent is clamped at -6 before ``exp`` (``exp(-6) < 1/255``, so no alpha changes): large
  negative arguments hit a slow path of the vectorised exp (~50x slower);
- layout (tile, pixel, Gaussian) keeps the front-to-back scans on the contiguous last axis.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from synshot.render.project import ALPHA_THRESHOLD
from synshot.render.tiles import TilePlan

MAX_ALPHA = 0.999
T_EPS = 1e-4
S_MIN = -6.0  # exp(-6) = 0.0025 < 1/255: clamping the exponent here never changes an alpha
LOG_MAX_ALPHA = math.log(MAX_ALPHA)
SAVE_BYTES = 256 << 20  # per render: forward results kept for backward; chunks beyond it are recomputed


def _basis(ts: int, dtype, device) -> Tensor:
    """(P, 6) monomials [1, u, v, u^2, uv, v^2] of pixel-centre offsets from the tile centre."""
    ar = torch.arange(ts, device=device, dtype=dtype) + 0.5 - ts / 2
    u = ar.repeat(ts)  # pixel p = row * ts + col
    v = ar.repeat_interleave(ts)
    return torch.stack([torch.ones_like(u), u, v, u * u, u * v, v * v], -1)


def _rows(means2d: Tensor, conics: Tensor, opacities: Tensor) -> Tensor:
    """Per-row geometry (M+1, 6) [mx, my, a, b, c, log o]; the last row is the padding sentinel."""
    logo = torch.log(opacities.clamp_min(1e-30))
    rows = torch.cat([means2d, conics, logo[:, None]], -1)
    sentinel = rows.new_zeros((1, rows.shape[1]))
    sentinel[0, 5] = -1e4  # log(0): never visible
    return torch.cat([rows, sentinel], 0)


def _coefs(geo: Tensor, plan: TilePlan, tiles: Tensor):
    """Quadratic coefficients (T,K,6) of s = log o - sigma in tile-centred pixel offsets."""
    ts = plan.tile_size
    in_img = tiles % (plan.tiles_x * plan.tiles_y)
    cx = ((in_img % plan.tiles_x) * ts).to(geo.dtype) + ts / 2
    cy = ((in_img // plan.tiles_x) * ts).to(geo.dtype) + ts / 2
    mx = geo[..., 0] - cx[:, None]
    my = geo[..., 1] - cy[:, None]
    a, b, c, logo = geo[..., 2], geo[..., 3], geo[..., 4], geo[..., 5]
    k1 = a * mx + b * my
    k2 = b * mx + c * my
    k0 = logo - 0.5 * (mx * k1 + my * k2)
    coef = torch.stack([k0, k1, k2, -0.5 * a, -b, -0.5 * c], -1)
    return coef, mx, my


def _forward_chunk(coef: Tensor, basis: Tensor, clamp: bool):
    """alpha, 1-alpha, exclusive transmittance, weights, cut-off mask and clamp mask; (T,P,K).

    ``clamp`` is False when no opacity in the chunk reaches 0.999, which skips the clamp pass.
    """
    alpha = torch.matmul(basis, coef.transpose(1, 2)).clamp_min_(S_MIN).exp_()  # o exp(-sigma)
    alpha.masked_fill_(alpha < ALPHA_THRESHOLD, 0.0)
    clamped = None
    if clamp:
        clamped = alpha > MAX_ALPHA
        alpha.clamp_max_(MAX_ALPHA)
    om = 1.0 - alpha
    t_incl = torch.cumprod(om, -1)
    excl = t_incl <= T_EPS  # a suffix in K: the pixel stopped before these Gaussians
    t_excl = t_incl.div_(om)  # in place: prod_{j<i} (1 - a_j)
    w = (alpha * t_excl).masked_fill_(excl, 0.0)
    return alpha, om, t_excl, w, excl, clamped


def _needs_clamp(g: Tensor) -> bool:
    return bool((g[..., 5] > LOG_MAX_ALPHA).any())


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor, plan: TilePlan):
        D = feats.shape[1]
        P = plan.tile_size**2
        dt, dev = feats.dtype, feats.device
        geo = _rows(means2d, conics, opacities)
        ft = torch.cat([feats, feats.new_zeros((1, D))], 0)
        basis = _basis(plan.tile_size, dt, dev)
        out = torch.zeros(plan.num_tiles, P, D + 1, dtype=dt, device=dev)
        needs_grad = any(ctx.needs_input_grad[:4])
        budget = SAVE_BYTES if needs_grad else 0
        for ch in plan.chunks:
            g = geo[ch.idx]
            coef, _, _ = _coefs(g, plan, ch.tiles)
            alpha, om, t_excl, w, excl, clamped = _forward_chunk(coef, basis, _needs_clamp(g))
            del t_excl
            res = torch.bmm(w, ft[ch.idx])  # (T,P,D)
            out[ch.tiles] = torch.cat([res, w.sum(-1, keepdim=True)], -1)
            nbytes = 2 * w.numel() * w.element_size()
            if nbytes <= budget:  # keep what backward needs instead of recomputing it
                budget -= nbytes
                ch.saved = (w, alpha.div_(om).masked_fill_(excl, 0.0), clamped)
                ch.k_used = ch.idx.shape[1]
            elif needs_grad:
                # list positions the backward must revisit: up to the last Gaussian any pixel used
                used = (w > 0).any(1)  # (T,K)
                ch.k_used = int(used.shape[1] - used.flip(1).int().argmax(1).min()) if bool(used.any()) else 0
        ctx.plan = plan
        ctx.save_for_backward(means2d, conics, opacities, feats)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        plan: TilePlan = ctx.plan
        means2d, conics, opacities, feats = ctx.saved_tensors
        dt, dev = feats.dtype, feats.device
        D = feats.shape[1]
        geo = _rows(means2d, conics, opacities)
        ft = torch.cat([feats, feats.new_zeros((1, D))], 0)
        basis = _basis(plan.tile_size, dt, dev)
        grads = torch.zeros(geo.shape[0], 6 + D, dtype=dt, device=dev)
        grad_out = grad_out.contiguous()
        for ch in plan.chunks:
            idx = ch.idx[:, : max(ch.k_used, 1)]
            g = geo[idx]
            coef, mx, my = _coefs(g, plan, ch.tiles)
            if ch.saved is not None:
                w, ratio, clamped = ch.saved
            else:
                alpha, om, t_excl, w, excl, clamped = _forward_chunk(coef, basis, _needs_clamp(g))
                del t_excl
                ratio = alpha.div_(om).masked_fill_(excl, 0.0)  # a_i / (1 - a_i) where used
            go = grad_out[ch.tiles]  # (T,P,D+1)
            gf, ga = go[..., :D], go[..., D:]
            fg = ft[idx]  # (T,K,D)
            # dL/dw_i = f_i . G + G_alpha, (T,P,K)
            gdot = torch.baddbmm(ga, gf, fg.transpose(1, 2))
            wg = gdot.mul_(w)
            suffix = wg.sum(-1, keepdim=True) - torch.cumsum(wg, -1)  # sum_{j>i} w_j g_j
            # dL/ds_i = a_i dL/da_i = a_i T_i g_i - a_i S_i / (1 - a_i) = w_i g_i - S_i a_i / (1 - a_i)
            v_s = wg.sub_(suffix.mul_(ratio))
            if clamped is not None:
                v_s.masked_fill_(clamped, 0.0)  # alpha = 0.999 does not depend on s
            gk = torch.matmul(v_s.transpose(1, 2), basis)  # (T,K,6)
            gfeat = torch.bmm(w.transpose(1, 2), gf)  # (T,K,D)
            a, b, c = g[..., 2], g[..., 3], g[..., 4]
            g0, g1, g2, g3, g4, g5 = gk.unbind(-1)
            g_mx = a * (g1 - g0 * mx) + b * (g2 - g0 * my)
            g_my = b * (g1 - g0 * mx) + c * (g2 - g0 * my)
            g_a = mx * (g1 - 0.5 * g0 * mx) - 0.5 * g3
            g_b = g1 * my + g2 * mx - g0 * mx * my - g4
            g_c = my * (g2 - 0.5 * g0 * my) - 0.5 * g5
            rows = torch.cat([torch.stack([g_mx, g_my, g_a, g_b, g_c, g0], -1), gfeat], -1)
            grads.index_add_(0, idx.reshape(-1), rows.reshape(-1, 6 + D))
        M = means2d.shape[0]
        grads = grads[:M]
        g_op = grads[:, 5] / opacities.clamp_min(1e-30)  # d log o / d o
        return grads[:, 0:2], grads[:, 2:5], g_op, grads[:, 6:], None


def composite(means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor, plan: TilePlan) -> Tensor:
    """Composite per-row features (M,D) into tiles -> (C, H_pad, W_pad, D+1); the last channel is alpha."""
    out = _Composite.apply(means2d, conics, opacities, feats, plan)
    ts = plan.tile_size
    C, ty, tx = plan.num_cameras, plan.tiles_y, plan.tiles_x
    D1 = out.shape[-1]
    return out.reshape(C, ty, tx, ts, ts, D1).permute(0, 1, 3, 2, 4, 5).reshape(C, ty * ts, tx * ts, D1)
