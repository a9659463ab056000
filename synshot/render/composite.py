"""Tile-based front-to-back alpha compositing with a hand-written backward pass.

Why a custom ``autograd.Function``: autograd through ``cumprod`` keeps every (tile, Gaussian,
pixel) temporary alive and its backward is several times the forward. Here the forward keeps
nothing per pixel; the backward recomputes alphas chunk by chunk and applies the closed form

    C = sum_i w_i f_i,   w_i = a_i T_i,   T_i = prod_{j<i} (1 - a_j)
    dC/da_i = T_i f_i - (sum_{j>i} w_j f_j) / (1 - a_i)

with the suffix sums from one reverse cumulative sum. Semantics match gsplat's CUDA rasteriser:
``a = min(0.999, o exp(-sigma))``, skip ``a < 1/255`` (and ``sigma < 0``), stop a pixel before the
Gaussian that would bring its transmittance to ``<= 1e-4``.
"""

from __future__ import annotations

import torch
from torch import Tensor

from synshot.render.project import ALPHA_THRESHOLD
from synshot.render.tiles import TilePlan

MAX_ALPHA = 0.999
T_EPS = 1e-4


def _tile_pixels(plan: TilePlan, tiles: Tensor, dtype, device):
    """Tile origins (T,) x/y and local pixel-centre offsets (P,) x/y."""
    ts = plan.tile_size
    in_img = tiles % (plan.tiles_x * plan.tiles_y)
    ox = ((in_img % plan.tiles_x) * ts).to(dtype)
    oy = ((in_img // plan.tiles_x) * ts).to(dtype)
    ar = torch.arange(ts, device=device, dtype=dtype) + 0.5
    lx = ar.repeat(ts)  # pixel p = row * ts + col
    ly = ar.repeat_interleave(ts)
    return ox, oy, lx, ly


def _alphas(m2, con, op, idx, ox, oy, lx, ly):
    """Per (tile, list position, pixel) alpha, raw exp(-sigma) and the geometry needed by backward."""
    g = idx
    dx = (m2[g, 0] - ox[:, None])[:, :, None] - lx  # (T,K,P)
    dy = (m2[g, 1] - oy[:, None])[:, :, None] - ly
    cg = con[g]
    ca, cb, cc = cg[..., 0:1], cg[..., 1:2], cg[..., 2:3]
    sigma = 0.5 * (ca * dx * dx + cc * dy * dy) + cb * dx * dy
    vis = torch.exp(-sigma)
    raw = op[g][:, :, None] * vis
    alpha = raw.clamp_max(MAX_ALPHA)
    alpha = torch.where((sigma >= 0) & (alpha >= ALPHA_THRESHOLD), alpha, torch.zeros_like(alpha))
    return alpha, vis, raw, dx, dy, cg


def _weights(alpha: Tensor):
    """Blend weights w (T,K,P), exclusive transmittance and the inclusion mask (a prefix in K)."""
    t_incl = torch.cumprod(1.0 - alpha, dim=1)
    incl = t_incl > T_EPS
    t_excl = torch.cat([torch.ones_like(t_incl[:, :1]), t_incl[:, :-1]], 1)
    w = torch.where(incl, alpha * t_excl, torch.zeros_like(alpha))
    return w, t_excl, incl


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor, plan: TilePlan):
        D = feats.shape[1]
        P = plan.tile_size**2
        dt, dev = feats.dtype, feats.device
        m2, con, op, ft = _pad(means2d, conics, opacities, feats)
        out = torch.zeros(plan.num_tiles, P, D + 1, dtype=dt, device=dev)
        for ch in plan.chunks:
            ox, oy, lx, ly = _tile_pixels(plan, ch.tiles, dt, dev)
            alpha, *_ = _alphas(m2, con, op, ch.idx, ox, oy, lx, ly)
            w, _, incl = _weights(alpha)
            ch.k_used = int(incl.sum(1).max()) if incl.numel() else 0
            res = torch.bmm(w.transpose(1, 2), ft[ch.idx])  # (T,P,D)
            out[ch.tiles] = torch.cat([res, w.sum(1)[..., None]], -1)
        ctx.plan = plan
        ctx.save_for_backward(means2d, conics, opacities, feats)
        return out

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        plan: TilePlan = ctx.plan
        means2d, conics, opacities, feats = ctx.saved_tensors
        dt, dev = feats.dtype, feats.device
        m2, con, op, ft = _pad(means2d, conics, opacities, feats)
        g_m2 = torch.zeros_like(m2)
        g_con = torch.zeros_like(con)
        g_op = torch.zeros_like(op)
        g_ft = torch.zeros_like(ft)
        grad_out = grad_out.contiguous()
        for ch in plan.chunks:
            k = max(ch.k_used, 1)
            idx = ch.idx[:, :k]
            ox, oy, lx, ly = _tile_pixels(plan, ch.tiles, dt, dev)
            alpha, vis, raw, dx, dy, cg = _alphas(m2, con, op, idx, ox, oy, lx, ly)
            w, t_excl, incl = _weights(alpha)
            go = grad_out[ch.tiles]  # (T,P,D+1)
            gf, ga = go[..., :-1], go[..., -1]
            fg = ft[idx]  # (T,K,D)
            # dL/dw_i = f_i . G + G_alpha
            gdot = torch.bmm(fg, gf.transpose(1, 2)) + ga[:, None, :]
            wg = w * gdot
            suffix = wg.sum(1, keepdim=True) - torch.cumsum(wg, 1)
            v_alpha = t_excl * gdot - suffix / (1.0 - alpha)
            active = incl & (alpha > 0) & (raw < MAX_ALPHA)
            v_alpha = torch.where(active, v_alpha, torch.zeros_like(v_alpha))
            flat = idx.reshape(-1)
            g_ft.index_add_(0, flat, torch.bmm(w, gf).reshape(-1, fg.shape[-1]))
            g_op.index_add_(0, flat, (v_alpha * vis).sum(-1).reshape(-1))
            v_sig = -v_alpha * alpha  # d alpha / d sigma = -alpha where active
            sx = (v_sig * dx).sum(-1)
            sy = (v_sig * dy).sum(-1)
            sxx = (v_sig * dx * dx).sum(-1)
            sxy = (v_sig * dx * dy).sum(-1)
            syy = (v_sig * dy * dy).sum(-1)
            ca, cb, cc = cg[..., 0], cg[..., 1], cg[..., 2]
            g_m2.index_add_(0, flat, torch.stack([ca * sx + cb * sy, cb * sx + cc * sy], -1).reshape(-1, 2))
            g_con.index_add_(0, flat, torch.stack([0.5 * sxx, sxy, 0.5 * syy], -1).reshape(-1, 3))
        M = means2d.shape[0]
        return g_m2[:M], g_con[:M], g_op[:M], g_ft[:M], None


def _pad(means2d, conics, opacities, feats):
    """Append the sentinel row (opacity 0: never contributes) that pads the tile lists."""
    z = lambda t: torch.cat([t, torch.zeros_like(t[:1])], 0)  # noqa: E731
    return z(means2d), z(conics), z(opacities), z(feats)


def composite(means2d: Tensor, conics: Tensor, opacities: Tensor, feats: Tensor, plan: TilePlan) -> Tensor:
    """Composite per-row features (M,D) into tiles -> (C, H_pad, W_pad, D+1); the last channel is alpha."""
    out = _Composite.apply(means2d, conics, opacities, feats, plan)
    ts = plan.tile_size
    C, ty, tx = plan.num_cameras, plan.tiles_y, plan.tiles_x
    D1 = out.shape[-1]
    return out.reshape(C, ty, tx, ts, ts, D1).permute(0, 1, 3, 2, 4, 5).reshape(C, ty * ts, tx * ts, D1)
