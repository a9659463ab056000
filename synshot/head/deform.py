"""Identity and expression deformation of the template (torch, differentiable).

All fields are smooth functions of *template* positions, so features stay where they belong
whatever the identity; rigid parts (eyeballs, ears, mouth interior) follow the identity field
at their anchor points, the lower teeth/tongue/lower lip follow the jaw rotation.
"""

from __future__ import annotations

import math

import numpy as np
import torch

from synshot.head.params import EXPRESSION_NAMES, FEATURE_NAMES, N_SHAPE, IdentityParams
from synshot.head.template import EYE_R, EYE_X, EYE_Y, PART, REGION, Template

F = {n: i for i, n in enumerate(FEATURE_NAMES)}
E = {n: i for i, n in enumerate(EXPRESSION_NAMES)}
JAW_HINGE = (0.0, -0.002, -0.008)
JAW_MAX_RAD = 0.30


def _ss(e0: float, e1: float, x: torch.Tensor) -> torch.Tensor:
    t = ((x - e0) / (e1 - e0)).clamp(0, 1)
    return t * t * (3 - 2 * t)


def _g(x: torch.Tensor, y: torch.Tensor, cx: float, cy: float, sx: float, sy: float) -> torch.Tensor:
    return torch.exp(-((x - cx) / sx) ** 2 - ((y - cy) / sy) ** 2)


def _smax(a: torch.Tensor, b: torch.Tensor, k: float) -> torch.Tensor:
    return 0.5 * (a + b + torch.sqrt((a - b) ** 2 + k * k))


def _vec(v, n: int, name: str, dtype, device) -> torch.Tensor:
    t = v if isinstance(v, torch.Tensor) else torch.as_tensor(v, dtype=dtype)
    t = t.to(dtype=dtype, device=device).reshape(-1)
    if t.numel() != n:
        raise ValueError(f"{name}: expected {n} values, got {t.numel()}")
    return t


def _scalar(v, dtype, device) -> torch.Tensor:
    return (v if isinstance(v, torch.Tensor) else torch.tensor(float(v))).to(dtype=dtype, device=device)


class Deformer:
    """Holds the template as tensors; ``__call__`` returns deformed vertices (V, 3), head frame."""

    def __init__(self, tpl: Template, device: torch.device | str = "cpu", dtype=torch.float32) -> None:
        self.tpl, self.dtype, self.device = tpl, dtype, torch.device(device)
        t = lambda a: torch.as_tensor(a, dtype=dtype, device=self.device)  # noqa: E731
        self.P0, self.N0 = t(tpl.P0), t(tpl.N0)
        part, region = torch.as_tensor(tpl.part), torch.as_tensor(tpl.region)
        self.grid = ((region == REGION["face"]) | (region == REGION["scalp"]) | (region == REGION["neck"])).to(self.device)
        self.face = (region == REGION["face"]).to(self.device)
        self.scalp = (region == REGION["scalp"]).to(self.device)
        self.face_idx = torch.nonzero(self.face)[:, 0]
        self.scalp_idx = torch.nonzero(self.scalp)[:, 0]
        self.part = part.to(self.device)
        self.side = t(tpl.side)
        self.lower_lip = torch.as_tensor(tpl.lower_lip, device=self.device)
        self.scalp_r = t(tpl.scalp_r)
        self.phi = t(tpl.phi).nan_to_num(0.0)
        self.mouth_y = float(tpl.anchors["mouth"][1])
        self.mouth_row = int(tpl.anchors["mouth_row"])
        self.row = torch.as_tensor(tpl.row, device=self.device)
        self.eye_cz = float(tpl.anchors["eye_l"][2])
        # which anchor each rigid vertex follows (index into the anchor list below), -1 = own position
        anchor_names = ["eye_l", "eye_r", "ear_l", "ear_r", "mouth"]
        self.anchor_pts = t(np.stack([tpl.anchors[n] for n in anchor_names]))
        self.anchor_pts[0:2, 2] = self.anchor_pts[0:2, 2] + EYE_R + 0.0035   # eye anchors on the skin
        self.anchor_pts[4, 2] = self.anchor_pts[4, 2] - 0.004
        self.anchor_normals = t([[0, 0, 1], [0, 0, 1], [1, 0, 0], [-1, 0, 0], [0, 0, 1]])
        which = torch.full((tpl.n_verts,), -1, dtype=torch.long)
        which[(part == PART["eye"]) & (torch.as_tensor(tpl.side) > 0)] = 0
        which[(part == PART["eye"]) & (torch.as_tensor(tpl.side) < 0)] = 1
        which[(part == PART["ear"]) & (torch.as_tensor(tpl.side) > 0)] = 2
        which[(part == PART["ear"]) & (torch.as_tensor(tpl.side) < 0)] = 3
        which[region == REGION["mouth"]] = 4
        self.which = which.to(self.device)
        self.rigid = self.which >= 0
        self.ear_anchor = t(np.stack([tpl.anchors["ear_l"], tpl.anchors["ear_r"]]))
        jaw_w = torch.zeros(tpl.n_verts)
        y0 = torch.as_tensor(tpl.P0[:, 1], dtype=torch.float32)
        jaw_w[part == PART["teeth"]] = (torch.as_tensor(tpl.side)[part == PART["teeth"]] < 0).float()
        jaw_w[part == PART["tongue"]] = 1.0
        jaw_w[part == PART["cavity"]] = _ss(self.mouth_y + 0.004, self.mouth_y - 0.010, y0[part == PART["cavity"]])
        self.jaw_w_parts = t(jaw_w)

    # ---- fields -------------------------------------------------------------------------
    def _identity_field(self, P: torch.Tensor, N: torch.Tensor, shape: torch.Tensor, f: torch.Tensor,
                        age: torch.Tensor) -> torch.Tensor:
        x, y, z = P.unbind(-1)
        ax = x.abs()
        sx = torch.sign(x)
        front = N[:, 2].clamp(min=0) ** 2
        gate = _ss(0.03, 0.055, z)                          # only the face side
        d = torch.zeros_like(P)
        # low-frequency shape along the normal (10 symmetric + 2 asymmetric terms)
        xn, yn, zn = x / 0.08, y / 0.12, z / 0.1
        basis = torch.stack([xn * xn - 0.5, yn, yn * yn - 0.5, zn, zn * zn - 0.5, yn * zn, yn ** 3, xn * xn * yn,
                             xn * xn * zn, yn * yn * zn, 0.5 * xn, 0.5 * xn * yn], -1)
        head_gate = _ss(-0.16, -0.10, y)
        d = d + N * (0.0035 * (basis @ shape) * head_gate)[:, None]
        # nose
        yb, yt = 0.030, -0.010 - 0.003 * f[F["nose_length"]]
        t = ((yb - y) / (yb - yt)).clamp(0, 1)
        h_bridge = 0.006 * (1 + 0.35 * f[F["nose_bridge"]])
        h_tip = 0.025 * (1 + 0.12 * f[F["nose_length"]])
        h = h_bridge + (h_tip - h_bridge) * t ** 1.5
        fade = torch.exp(-((y - yb).clamp(min=0) / 0.008) ** 2) * torch.exp(-((yt - y).clamp(min=0) / 0.0065) ** 2)
        wn = (0.0058 + 0.0062 * t) * (1 + 0.12 * f[F["nose_width"]])
        nose = h * fade * torch.exp(-0.5 * (x / wn) ** 2)
        ala_x = 0.0125 * (1 + 0.15 * f[F["nose_width"]])
        nose = nose + 0.0065 * torch.exp(-((ax - ala_x) ** 2 + (y - yt + 0.003) ** 2) / (2 * 0.0055 ** 2))  # alae
        nose = nose + 0.004 * torch.exp(-(x ** 2 + (y - yt) ** 2) / (2 * 0.0065 ** 2))
        bump = nose
        bump = bump + 0.0028 * (1 + 0.4 * f[F["brow_ridge"]]) * _g(ax, y, 0.03, 0.046, 0.02, 0.008)
        bump = bump + 0.005 * _g(ax, y, 0.045, -0.003, 0.016, 0.013)                   # cheekbones
        bump = bump + 0.004 * f[F["cheek_fullness"]] * _g(ax, y, 0.042, -0.03, 0.02, 0.02)
        bump = bump + 0.003 * _g(x, y, 0.0, -0.085, 0.012, 0.01)
        bump = bump + 0.0015 * age * _g(ax, y, EYE_X, 0.012, 0.008, 0.005)             # eye bags
        d[:, 2] = d[:, 2] + bump * gate
        # forehead slope, chin, jaw, spacing, mouth width
        d[:, 2] = d[:, 2] - 0.007 * f[F["forehead_slope"]] * _ss(0.04, 0.11, y) * front
        lower = _ss(-0.06, -0.10, y) * front
        d[:, 1] = d[:, 1] - 0.006 * f[F["chin_length"]] * lower
        d[:, 0] = d[:, 0] + 0.06 * f[F["jaw_width"]] * x * _ss(-0.02, -0.09, y) * _ss(-0.04, 0.0, z)
        d[:, 0] = d[:, 0] + sx * 0.0025 * f[F["eye_spacing"]] * _g(ax, y, EYE_X, EYE_Y, 0.022, 0.022) * gate
        d[:, 0] = d[:, 0] + 0.003 * f[F["mouth_width"]] * (x / 0.024) * _g(x, y, 0, self.mouth_y, 0.03, 0.015) * gate
        d[:, 1] = d[:, 1] - 0.004 * age * _g(ax, y, 0.04, -0.07, 0.015, 0.015) * gate        # jowls
        return d

    def _lid_field(self, P: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        """Eyelids: skin conforms over the eyeball; an almond aperture recesses it (blink closes it)."""
        x, y, z = P.unbind(-1)
        dz = torch.zeros_like(z)
        gate = _ss(0.03, 0.05, z)
        for s, blink, smile, brow in ((1.0, "blink_l", "smile_l", "brow_up_l"), (-1.0, "blink_r", "smile_r", "brow_up_r")):
            dx, dy = x - s * EYE_X, y - EYE_Y
            r2 = dx * dx + dy * dy
            eye_front = self.eye_cz + torch.sqrt((EYE_R ** 2 - r2).clamp(min=1e-10))
            socket = -0.005 * torch.exp(-r2 / (2 * 0.013 ** 2))
            closed = _smax(z + socket, eye_front + 0.0012, 0.0015)
            b = e[E[blink]]
            c = -0.0012
            y_u = 0.0052 + 0.0012 * e[E[brow]] - 0.0008 * e[E[smile]]
            y_l = -0.0040 + 0.0018 * e[E[smile]]
            y_u = y_u + (c - y_u) * b
            y_l = y_l + (c - y_l) * b
            w = 0.0135
            shape = ((1 - (dx / w) ** 2).clamp(min=1e-6)) ** 0.6
            tau = 0.0011
            rec = _ss(0.0, 1.0, (y_u * shape - dy) / tau) * _ss(0.0, 1.0, (dy - y_l * shape) / tau)
            win = torch.exp(-(r2 / 0.021 ** 2) ** 3) * gate
            dz = dz + win * ((closed - z) - 0.018 * rec)
        return dz

    def _lip_field(self, P: torch.Tensor, f: torch.Tensor, age: torch.Tensor) -> torch.Tensor:
        x, y, z = P.unbind(-1)
        dy = y - self.mouth_y
        span = 1 - _ss(0.016, 0.030, x.abs())
        amp = 0.0032 * (1 + 0.25 * f[F["lip_fullness"]]) * (1 - 0.3 * age)
        upper = torch.exp(-((dy - 0.0045) / 0.0042) ** 2)
        lower = torch.exp(-((dy + 0.0050) / 0.0048) ** 2)
        curl = -0.0055 * torch.exp(-(dy / 0.0022) ** 2)
        return span * (amp * (upper + lower) + curl) * _ss(0.03, 0.05, z)

    def _expr_field(self, P: torch.Tensor, N: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        x, y, z = P.unbind(-1)
        ym = self.mouth_y
        d = torch.zeros_like(P)
        gate = _ss(0.02, 0.05, z)
        for s, smile, brow in ((1.0, "smile_l", "brow_up_l"), (-1.0, "smile_r", "brow_up_r")):
            g = _g(x, y, s * 0.025, ym, 0.014, 0.012)
            d = d + (e[E[smile]] * g)[:, None] * torch.tensor([s * 0.005, 0.006, -0.003], dtype=P.dtype, device=P.device)
            g2 = _g(x, y, s * 0.035, -0.02, 0.015, 0.015)
            d = d + (e[E[smile]] * g2)[:, None] * torch.tensor([0.0, 0.003, 0.003], dtype=P.dtype, device=P.device)
            d[:, 1] = d[:, 1] - 0.005 * e[E["frown"]] * g
            g3 = _g(x, y, s * 0.03, 0.045, 0.022, 0.018) * _ss(0.008, 0.025, y)
            d[:, 1] = d[:, 1] + 0.006 * e[E[brow]] * g3
            g4 = _g(x, y, s * 0.02, 0.042, 0.015, 0.012)
            d = d + (e[E["brow_down"]] * g4)[:, None] * torch.tensor([-s * 0.003, -0.004, 0.001], dtype=P.dtype, device=P.device)
            g5 = _g(x, y, s * 0.042, -0.035, 0.018, 0.018)
            d = d + (0.012 * e[E["cheek_puff"]] * g5)[:, None] * N
        gm = _g(x, y, 0.0, ym, 0.02, 0.014)
        d[:, 0] = d[:, 0] - 0.35 * x * e[E["pucker"]] * gm
        d[:, 2] = d[:, 2] + 0.008 * e[E["pucker"]] * gm
        gs = _g(x, y, 0.0, ym, 0.03, 0.015)
        d[:, 0] = d[:, 0] + 0.25 * x * e[E["mouth_stretch"]] * gs
        d[:, 2] = d[:, 2] - 0.001 * e[E["mouth_stretch"]] * gs
        return d * gate[:, None]

    def _hair_field(self, P: torch.Tensor, N: torch.Tensor, ident: IdentityParams, idx: torch.Tensor) -> torch.Tensor:
        r = self.scalp_r[idx].clamp(min=0)
        vol = _scalar(ident.hair_volume, P.dtype, P.device)
        length = _scalar(ident.hair_length, P.dtype, P.device)
        rim = 1 - _ss(0.82, 1.0, r)
        thick = (0.0015 + 0.026 * vol) * rim * (1 + 0.3 * (1 - r))
        # strand clumps: ridges running from the crown, phase from the texture seed (not differentiable)
        phase = (int(ident.texture_seed) % 997) / 997 * 2 * math.pi
        phi = self.phi[idx]
        ridge = torch.cos(phi * 23 + phase + 2.5 * torch.sin(r * 5 + phi * 3 + phase)) \
            + 0.5 * torch.cos(phi * 41 - 1.7 * phase + 4 * r)
        thick = thick + (0.0006 + 0.0035 * vol) * ridge * rim * _ss(0.15, 0.5, r)
        d = N * thick[:, None]
        back = _ss(0.35 * math.pi, 0.6 * math.pi, phi.abs())
        ragged = 1 + 0.12 * torch.sin(phi * 17 + phase) + 0.06 * torch.sin(phi * 31 - phase)
        hang = length * 0.16 * ragged * _ss(0.45, 0.85, r) * (1 - _ss(0.9, 1.0, r)) * back
        horiz = torch.nn.functional.normalize(torch.stack([N[:, 0], torch.zeros_like(r), N[:, 2]], -1), dim=-1)
        d = d + horiz * (0.3 * hang)[:, None]
        d[:, 1] = d[:, 1] - hang
        return d

    # ---- main -----------------------------------------------------------------------------
    def __call__(self, ident: IdentityParams, expression) -> torch.Tensor:
        dt, dev = self.dtype, self.device
        shape = _vec(ident.shape, N_SHAPE, "IdentityParams.shape", dt, dev)
        f = _vec(ident.features, len(FEATURE_NAMES), "IdentityParams.features", dt, dev)
        e = _vec(expression, len(EXPRESSION_NAMES), f"expression (names: {', '.join(EXPRESSION_NAMES)})", dt, dev)
        age = _scalar(ident.age, dt, dev)
        P0, N0 = self.P0, self.N0
        grid = self.grid[:, None].to(dt)

        d = self._identity_field(P0, N0, shape, f, age) * grid
        # face-only fields are evaluated on the face vertices (about half the mesh) and scattered back
        fi = self.face_idx
        Pf, Nf = P0[fi], N0[fi]
        d_face = self._expr_field(Pf, Nf, e)
        d_face = d_face + torch.nn.functional.pad((self._lid_field(Pf, e) + self._lip_field(Pf, f, age))[:, None], (2, 0))
        d = d.index_add(0, fi, d_face)
        si = self.scalp_idx
        d = d.index_add(0, si, self._hair_field(P0[si], N0[si], ident, si))
        # rigid parts follow the identity field at their anchors
        d_anchor = self._identity_field(self.anchor_pts, self.anchor_normals, shape, f, age)
        d = torch.where(self.rigid[:, None], d_anchor[self.which.clamp(min=0)], d)
        P = P0 + d
        # ears: size about the attachment point and protrusion about the vertical axis
        ear = self.part == PART["ear"]
        if bool(ear.any()):
            a = self.ear_anchor[(self.side < 0).long()] + d_anchor[self.which.clamp(min=0)]
            rel = P - a
            scale = 1 + 0.10 * f[F["ear_size"]]
            ang = -0.12 * f[F["ear_protrusion"]] * self.side      # > 0 feature: the back sticks out more
            c, s_ = torch.cos(ang), torch.sin(ang)
            rx = c * rel[:, 0] + s_ * rel[:, 2]
            rz = -s_ * rel[:, 0] + c * rel[:, 2]
            rel_e = torch.stack([rx, rel[:, 1], rz], -1) * scale
            P = torch.where(ear[:, None], a + rel_e, P)
        # jaw rotation
        y0, z0 = P0[:, 1], P0[:, 2]
        span = 1 - _ss(0.018, 0.030, P0[:, 0].abs())
        step = ((self.row > self.mouth_row) | self.lower_lip).to(dt)
        w_skin = span * step + (1 - span) * _ss(self.mouth_y + 0.012, self.mouth_y - 0.02, y0)
        w_skin = w_skin * _ss(-0.03, 0.03, z0) * (1 - _ss(-0.10, -0.16, y0)) * self.grid.to(dt)
        w = torch.where(self.region_mouth_mask(), self.jaw_w_parts, w_skin)
        ang = JAW_MAX_RAD * e[E["jaw_open"]] * w
        hinge = torch.tensor(JAW_HINGE, dtype=dt, device=dev)
        rel = P - hinge
        c, s_ = torch.cos(ang), torch.sin(ang)
        ry = c * rel[:, 1] - s_ * rel[:, 2]
        rz = s_ * rel[:, 1] + c * rel[:, 2]
        P = hinge + torch.stack([rel[:, 0], ry, rz], -1)
        # global proportions, neck width
        sc = 1 + 0.035 * torch.stack([f[F["head_width"]], f[F["head_height"]], f[F["head_depth"]]])
        neck = 1 + 0.08 * f[F["neck_width"]] * _ss(-0.10, -0.14, y0) * self.grid.to(dt)
        P = P * sc
        P = torch.stack([P[:, 0] * neck, P[:, 1], (P[:, 2] + 0.016) * neck - 0.016], -1)
        return P

    def region_mouth_mask(self) -> torch.Tensor:
        return (self.part == PART["teeth"]) | (self.part == PART["tongue"]) | (self.part == PART["cavity"])
