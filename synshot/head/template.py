"""Procedural template mesh: base head + neck grid, eyeballs, ears, mouth interior, UV atlas.

Why a single (phi, s) grid for face, scalp and neck: region borders are grid lines, so seams
are exact (duplicated vertices at the same position) and the UV charts are resolution
independent (the region masks only depend on ``HEAD_MODEL_VERSION``). Everything here is numpy
and built once per config; identity and expression deformations (torch) live in ``deform.py``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from synshot.head.config import HeadConfig

REGION_NAMES: tuple[str, ...] = ("face", "scalp", "ears", "neck", "eyes", "mouth")
PART_NAMES: tuple[str, ...] = ("skin", "hair", "ear", "eye", "teeth", "tongue", "cavity")
REGION = {n: i for i, n in enumerate(REGION_NAMES)}
PART = {n: i for i, n in enumerate(PART_NAMES)}

# UV atlas: island rectangles (u0, v0, u1, v1) in [0, 1]^2 (v grows downward like image rows).
ATLAS: dict[str, tuple[float, float, float, float]] = {
    "face": (0.01, 0.01, 0.55, 0.55),
    "scalp": (0.57, 0.01, 0.99, 0.43),      # disk inscribed in this square
    "neck": (0.01, 0.57, 0.55, 0.77),
    "ear_l": (0.57, 0.45, 0.73, 0.61),
    "ear_r": (0.75, 0.45, 0.91, 0.61),
    "eye_l": (0.57, 0.63, 0.73, 0.79),
    "eye_r": (0.75, 0.63, 0.91, 0.79),
    "cavity": (0.01, 0.79, 0.20, 0.99),
    "tongue": (0.22, 0.79, 0.36, 0.99),
    "teeth_up": (0.38, 0.79, 0.55, 0.88),
    "teeth_lo": (0.38, 0.90, 0.55, 0.99),
}

# Template anatomy (head frame, metres). Identity/expression fields move things from here.
A_X, A_Y_TOP, A_Y_BOT, A_Z_FRONT, A_Z_BACK = 0.076, 0.118, 0.106, 0.094, 0.102
P_VERT, P_HORZ = 2.6, 2.4                      # superellipse exponents (boxier than a sphere)
THETA_CHIN = math.radians(158.0)               # polar angle of the under-chin row
NECK_BOTTOM_Y = -0.23
NECK_RX, NECK_RZ, NECK_Z0 = 0.054, 0.050, -0.016
PHI_FACE = math.radians(105.0)                 # face chart spans |phi| < PHI_FACE
MOUTH_Y, MOUTH_HALF_W = -0.048, 0.024
EYE_X, EYE_Y, EYE_R = 0.031, 0.027, 0.0120
EAR_Y, EAR_Z, EAR_H, EAR_W = 0.004, -0.010, 0.060, 0.032


def spow(v: np.ndarray, e: float) -> np.ndarray:
    return np.sign(v) * np.abs(v) ** e


def smoothstep(e0: float, e1: float, x: np.ndarray) -> np.ndarray:
    t = np.clip((x - e0) / (e1 - e0), 0.0, 1.0)
    return t * t * (3 - 2 * t)


def theta_hair(phi: np.ndarray) -> np.ndarray:
    """Polar angle of the hairline: forehead high, above the ears at the sides, nape at the back."""
    return np.radians(50.0) + np.radians(76.0) * ((1 - np.cos(phi)) / 2) ** 1.4


def spow_smooth(v: np.ndarray, e: float, delta: float = 0.2) -> np.ndarray:
    """sign(v)|v|^e without the infinite slope at 0 (which creased the surface along a meridian)."""
    return v * (v * v + delta * delta) ** ((e - 1) / 2) / (1 + delta * delta) ** ((e - 1) / 2)


def head_surface(theta: np.ndarray, phi: np.ndarray) -> np.ndarray:
    """Base skull/face surface (no features): a superellipsoid with a tapered jaw and a chin."""
    cy, sy = spow_smooth(np.cos(theta), 2 / P_VERT), spow_smooth(np.sin(theta), 2 / P_VERT)
    cx, cz = spow_smooth(np.sin(phi), 2 / P_HORZ), spow_smooth(np.cos(phi), 2 / P_HORZ)
    y = np.where(cy > 0, A_Y_TOP, A_Y_BOT) * cy
    x = A_X * sy * cx
    z = np.where(cz > 0, A_Z_FRONT, A_Z_BACK) * sy * cz
    x = x * (1 - 0.20 * smoothstep(0.0, -0.10, y))
    front = np.clip(cz, 0, 1) ** 2
    z = z + front * 0.016 * smoothstep(-0.02, -0.09, y)
    return np.stack([x, y, z], -1)


def neck_blend(theta_c_point: np.ndarray, phi: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Under-chin point -> neck tube, for neck rows u in [0, 1]."""
    y0 = theta_c_point[..., 1]
    y = y0 + (NECK_BOTTOM_Y - y0) * u
    tube = np.stack([NECK_RX * np.sin(phi), y, NECK_Z0 + NECK_RZ * np.cos(phi)], -1)
    w = smoothstep(0.0, 0.45, u)[..., None]
    p = (1 - w) * theta_c_point + w * tube
    p[..., 1] = y
    return p


def front_depth(x: float, y: float) -> float:
    """z of the base face surface at frontal (x, y), by dense search (template build only)."""
    th, ph = np.meshgrid(np.linspace(0.3, 2.8, 600), np.linspace(-1.3, 1.3, 600), indexing="ij")
    p = head_surface(th, ph)
    d = (p[..., 0] - x) ** 2 + (p[..., 1] - y) ** 2
    k = np.unravel_index(np.argmin(d), d.shape)
    return float(p[k][2])


def _island(name: str, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Map local chart coords (a, b) in [0, 1] to the atlas rectangle of ``name``."""
    u0, v0, u1, v1 = ATLAS[name]
    return np.stack([u0 + a * (u1 - u0), v0 + b * (v1 - v0)], -1)


@dataclass
class Template:
    """Template mesh. ``P0`` are base positions; deformations are added by ``deform.py``."""

    P0: np.ndarray            # (V, 3) float64
    N0: np.ndarray            # (V, 3) template normals (welded)
    uv: np.ndarray            # (V, 2) float64
    faces: np.ndarray         # (F, 3) int64
    region: np.ndarray        # (V,) int64 index into REGION_NAMES
    part: np.ndarray          # (V,) int64 index into PART_NAMES
    weld: np.ndarray          # (V,) int64 group id: coincident seam copies share normals
    side: np.ndarray          # (V,) int64: +1 left (+x) / -1 right (eyes, ears); +1 upper / -1 lower (teeth)
    lower_lip: np.ndarray     # (V,) bool: lower copies of the mouth slit
    local: np.ndarray         # (V, 2) chart-local coords in [0, 1] (texture synthesis)
    scalp_r: np.ndarray       # (V,) 0 at crown .. 1 at hairline (scalp), -1 elsewhere
    phi: np.ndarray           # (V,) azimuth on the head grid (nan elsewhere)
    row: np.ndarray           # (V,) row on the head grid (-1 elsewhere)
    anchors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def n_verts(self) -> int:
        return len(self.P0)


class _Builder:
    """Collects vertices by key (so seam copies are explicit) and triangles."""

    def __init__(self) -> None:
        self.index: dict[tuple, int] = {}
        self.cols: dict[str, list] = {k: [] for k in
                                      ("P0", "uv", "region", "part", "weld", "side", "lower_lip", "local", "scalp_r", "phi", "row")}
        self.weld_ids: dict[tuple, int] = {}
        self.faces: list[tuple[int, int, int]] = []

    def vert(self, key: tuple, weld_key: tuple, **attrs) -> int:
        idx = self.index.get(key)
        if idx is not None:
            return idx
        idx = len(self.index)
        self.index[key] = idx
        attrs["weld"] = self.weld_ids.setdefault(weld_key, len(self.weld_ids))
        for k, col in self.cols.items():
            col.append(attrs[k])
        return idx

    def quad(self, a: int, b: int, c: int, d: int, flip: bool = False) -> None:
        """Cell with corners a=(i,j) b=(i,j+1) c=(i+1,j) d=(i+1,j+1)."""
        for tri in ((a, c, b), (b, c, d)):
            if len(set(tri)) == 3:
                self.faces.append(tri[::-1] if flip else tri)


def _defaults(**kw) -> dict:
    out = dict(side=0, lower_lip=False, scalp_r=-1.0, phi=float("nan"), local=(0.0, 0.0), row=-1)
    out.update(kw)
    return out


def _head_grid(bld: _Builder, cfg: HeadConfig) -> dict[str, np.ndarray]:
    n_phi, ns, nf, nn = cfg.n_phi, cfg.n_scalp_rows, cfg.n_face_rows, cfg.n_neck_rows
    if n_phi % 2:
        raise ValueError(f"HeadConfig.n_phi must be even, got {n_phi}")
    uu = np.linspace(-1, 1, n_phi + 1)
    alpha = 0.45                                   # denser columns at the front (face)
    phi = np.pi * (alpha * uu + (1 - alpha) * uu ** 3)
    nr = ns + nf + nn
    rows = np.arange(nr + 1)
    TH, PH = np.meshgrid(np.zeros(nr + 1), phi, indexing="ij")
    th_h = theta_hair(phi)[None, :]
    I = rows[:, None].astype(np.float64)
    TH = np.where(I <= ns, th_h * I / ns, th_h + (THETA_CHIN - th_h) * (I - ns) / nf)
    P = head_surface(np.minimum(TH, THETA_CHIN), PH)
    chin_pts = head_surface(np.full_like(phi, THETA_CHIN), phi)
    u_neck = np.clip((I - ns - nf) / nn, 0, 1)
    neck_pts = neck_blend(np.broadcast_to(chin_pts, P.shape), PH, np.broadcast_to(u_neck, PH.shape))
    P = np.where((I > ns + nf)[..., None], neck_pts, P)

    j_f0 = int(np.argmin(np.abs(phi + PHI_FACE)))
    j_f1 = n_phi - j_f0
    jc = n_phi // 2
    ys_front = P[ns:ns + nf + 1, jc, 1]
    i_m = ns + int(np.argmin(np.abs(ys_front - MOUTH_Y)))
    slit = np.abs(P[i_m, :, 0]) < MOUTH_HALF_W
    slit &= (np.arange(n_phi + 1) > j_f0) & (np.arange(n_phi + 1) < j_f1)

    def corner(region: str, ci: int, cj: int, lower: bool) -> int:
        lower = bool(lower and ci == i_m and slit[cj])
        wkey = ("g", 0, 0) if ci == 0 else ("g", ci, cj % n_phi, lower)
        pos = P[ci, cj]
        if region == "scalp":
            r = ci / ns
            a = 0.5 + 0.5 * r * math.sin(phi[cj])
            b = 0.5 + 0.5 * r * math.cos(phi[cj])
            key = ("scalp", 0, 0) if ci == 0 else ("scalp", ci, cj % n_phi)
            return bld.vert(key, wkey, **_defaults(P0=pos, uv=_island("scalp", a, b), region=REGION["scalp"],
                                                   part=PART["hair"], local=(a, b), scalp_r=r, phi=phi[cj], row=ci))
        if region == "face":
            a, b = (cj - j_f0) / (j_f1 - j_f0), (ci - ns) / nf
            return bld.vert(("face", ci, cj, lower), wkey,
                            **_defaults(P0=pos, uv=_island("face", a, b), region=REGION["face"], part=PART["skin"],
                                        lower_lip=lower, local=(a, b), phi=phi[cj], row=ci))
        # rows below the chin line (the neck proper) get 55% of the island height, the band above 45%
        b = 0.45 * (ci - ns) / nf if ci <= ns + nf else 0.45 + 0.55 * (ci - ns - nf) / nn
        a = cj / n_phi
        return bld.vert(("neck", ci, cj), wkey, **_defaults(P0=pos, uv=_island("neck", a, b), region=REGION["neck"],
                                                             part=PART["skin"], local=(a, b), phi=phi[cj], row=ci))

    for i in range(nr):
        for j in range(n_phi):
            if i < ns:
                reg = "scalp"
            elif i < ns + nf and j_f0 <= j < j_f1:
                reg = "face"
            else:
                reg = "neck"
            below = reg == "face" and i == i_m
            a = corner(reg, i, j, below)
            b = corner(reg, i, j + 1, below)
            c = corner(reg, i + 1, j, False)
            d = corner(reg, i + 1, j + 1, False)
            bld.quad(a, b, c, d)
    return {"mouth_center": P[i_m, jc].copy(), "mouth_row": np.array(i_m)}


def _sphere(bld: _Builder, name: str, island: str, center, radii, n_lat: int, n_lon: int, region: str,
            part: str, side: int, inward: bool = False) -> None:
    """Latitude/longitude ellipsoid (poles on +-y, longitude 0 facing +z)."""
    for i in range(n_lat):
        for j in range(n_lon):
            ids = []
            for ci, cj in ((i, j), (i, j + 1), (i + 1, j), (i + 1, j + 1)):
                lat = math.pi * ci / n_lat
                lon = -math.pi + 2 * math.pi * cj / n_lon
                d = np.array([math.sin(lat) * math.sin(lon), math.cos(lat), math.sin(lat) * math.cos(lon)])
                pos = np.asarray(center) + np.asarray(radii) * d
                a, b = cj / n_lon, ci / n_lat
                pole = ci in (0, n_lat)
                wkey = (name, ci, 0) if pole else (name, ci, cj % n_lon)
                ids.append(bld.vert((name, ci, cj), wkey, **_defaults(
                    P0=pos, uv=_island(island, a, b), region=REGION[region], part=PART[part], side=side,
                    local=(a, b))))
            bld.quad(*ids, flip=inward)


def _teeth(bld: _Builder, name: str, island: str, mouth: np.ndarray, upper: bool, n: int) -> None:
    """A row of teeth: a rounded tube swept along a parabolic arch behind the lips."""
    n_a, n_b = 2 * n, n
    for i in range(n_a):
        for j in range(n_b):
            ids = []
            for ci, cj in ((i, j), (i, j + 1), (i + 1, j), (i + 1, j + 1)):
                t = -1 + 2 * ci / n_a
                ang = 2 * math.pi * (cj % n_b) / n_b
                x = 0.022 * t
                z = mouth[2] - 0.0072 - 0.017 * t * t - (0.0 if upper else 0.0036)
                # outward normal of the arch (x, z) = (0.022 t, z0 - 0.017 t^2) in the xz plane
                nx, nz = 0.034 * t, 0.022
                nl = math.hypot(nx, nz)
                nx, nz = nx / nl, nz / nl
                yc = mouth[1] + (0.0008 if upper else -0.0014)
                dy = 0.0046 * float(spow(np.array(math.cos(ang)), 0.5))
                dn = 0.0017 * float(spow(np.array(math.sin(ang)), 0.5))
                pos = np.array([x + dn * nx, yc + dy, z + dn * nz])
                a, b = ci / n_a, cj / n_b
                ids.append(bld.vert((name, ci, cj), (name, ci, cj % n_b), **_defaults(
                    P0=pos, uv=_island(island, a, b), region=REGION["mouth"], part=PART["teeth"], local=(a, b),
                    side=1 if upper else -1)))
            bld.quad(*ids)


def _ear(bld: _Builder, name: str, island: str, side: int, n: int, head_x: float) -> None:
    """A curved sheet (helix rim, concha bowl) attached at its front edge to the side of the head."""
    nb, na = int(n * 1.5), n
    for i in range(nb):
        for j in range(na):
            ids = []
            for ci, cj in ((i, j), (i, j + 1), (i + 1, j), (i + 1, j + 1)):
                a, b = cj / na, ci / nb                  # a: front->back, b: top->bottom
                ea, eb = 2 * a - 1, 1 - 2 * b
                # squircle-ish outline, narrower lobe at the bottom
                w = EAR_W * 0.5 * (1.0 - 0.25 * smoothstep(0.0, -1.0, np.array(eb)))
                px = float(ea * math.sqrt(max(0.0, 1 - 0.5 * eb * eb)))
                py = float(eb * math.sqrt(max(0.0, 1 - 0.5 * ea * ea)))
                rho = math.hypot(px, py)
                rim = 0.0035 * float(smoothstep(0.55, 0.95, np.array(rho)))
                bowl = -0.004 * math.exp(-((px + 0.1) ** 2 + (py + 0.15) ** 2) / 0.18)
                along = float(w) * (px + 1.0)            # distance behind the attachment line
                y = EAR_Y + 0.5 * EAR_H * py
                z = EAR_Z + 0.006 - along * math.cos(0.2)
                x = side * (head_x - 0.004 + rim + bowl + 0.35 * along)
                pos = np.array([x, y - 0.15 * along, z])
                aa = a if side > 0 else 1 - a
                ids.append(bld.vert((name, ci, cj), (name, ci, cj), **_defaults(
                    P0=pos, uv=_island(island, aa, b), region=REGION["ears"], part=PART["ear"], side=side,
                    local=(a, b))))
            bld.quad(*ids, flip=side < 0)


def welded_normals(P: np.ndarray, faces: np.ndarray, weld: np.ndarray) -> np.ndarray:
    fn = np.cross(P[faces[:, 1]] - P[faces[:, 0]], P[faces[:, 2]] - P[faces[:, 0]])
    acc = np.zeros((weld.max() + 1, 3))
    for k in range(3):
        np.add.at(acc, weld[faces[:, k]], fn)
    n = acc[weld]
    return n / np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-12)


def build_template(cfg: HeadConfig) -> Template:
    """Build (and cache) the template for a config."""
    return _build_cached(cfg.model_dump_json())


@lru_cache(maxsize=4)
def _build_cached(cfg_json: str) -> Template:
    cfg = HeadConfig.model_validate_json(cfg_json)
    bld = _Builder()
    info = _head_grid(bld, cfg)
    mouth = info["mouth_center"]
    ez = front_depth(EYE_X, EYE_Y)
    eye_center_z = ez - 0.0035 - EYE_R
    n_lat = cfg.eye_grid
    for side, nm in ((1, "l"), (-1, "r")):
        _sphere(bld, f"eye_{nm}", f"eye_{nm}", (side * EYE_X, EYE_Y, eye_center_z), (EYE_R,) * 3, n_lat,
                int(n_lat * 1.6), "eyes", "eye", side)
    head_x = float(head_surface(np.array(math.pi / 2 + 0.05), np.array(math.pi / 2))[0])
    for side, nm in ((1, "l"), (-1, "r")):
        _ear(bld, f"ear_{nm}", f"ear_{nm}", side, cfg.ear_grid, head_x)
    m = cfg.mouth_grid
    _sphere(bld, "cavity", "cavity", (0.0, mouth[1] - 0.006, mouth[2] - 0.037), (0.034, 0.023, 0.029), m,
            int(m * 1.6), "mouth", "cavity", 0, inward=True)
    _sphere(bld, "tongue", "tongue", (0.0, mouth[1] - 0.0150, mouth[2] - 0.034), (0.0175, 0.0060, 0.022), m,
            int(m * 1.6), "mouth", "tongue", 0)
    _teeth(bld, "teeth_up", "teeth_up", mouth, True, m)
    _teeth(bld, "teeth_lo", "teeth_lo", mouth, False, m)

    c = bld.cols
    P0 = np.asarray(c["P0"], dtype=np.float64)
    faces = np.asarray(bld.faces, dtype=np.int64)
    weld = np.asarray(c["weld"], dtype=np.int64)
    tpl = Template(
        P0=P0, N0=welded_normals(P0, faces, weld), uv=np.asarray(c["uv"], dtype=np.float64), faces=faces,
        region=np.asarray(c["region"], dtype=np.int64), part=np.asarray(c["part"], dtype=np.int64), weld=weld,
        side=np.asarray(c["side"], dtype=np.int64), lower_lip=np.asarray(c["lower_lip"], dtype=bool),
        local=np.asarray(c["local"], dtype=np.float64), scalp_r=np.asarray(c["scalp_r"], dtype=np.float64),
        phi=np.asarray(c["phi"], dtype=np.float64), row=np.asarray(c["row"], dtype=np.int64),
        anchors={"mouth": mouth, "mouth_row": info["mouth_row"], "eye_l": np.array([EYE_X, EYE_Y, eye_center_z]),
                 "eye_r": np.array([-EYE_X, EYE_Y, eye_center_z]),
                 "ear_l": np.array([head_x, EAR_Y, EAR_Z]), "ear_r": np.array([-head_x, EAR_Y, EAR_Z])},
    )
    return tpl
