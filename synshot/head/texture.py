"""Procedural skin/hair/eye/teeth albedo, synthesised per texel from template coordinates.

Why template coordinates: lips, brows, iris etc. are painted where the template puts them, so the
texture stays aligned whatever the identity/expression deformation; noise is seeded by
``IdentityParams.texture_seed`` and evaluated in 3D (no seams between UV islands).
"""

from __future__ import annotations

import zlib

import numpy as np

from synshot.head.params import IdentityParams
from synshot.head.template import EYE_X, EYE_Y, PART, Template


def _hash(ix: np.ndarray, iy: np.ndarray, iz: np.ndarray, seed: int) -> np.ndarray:
    with np.errstate(over="ignore"):
        h = (ix.astype(np.uint64) * np.uint64(73856093)) ^ (iy.astype(np.uint64) * np.uint64(19349663)) \
            ^ (iz.astype(np.uint64) * np.uint64(83492791)) ^ np.uint64((seed * 2654435761) & 0xFFFFFFFFFFFF)
        h ^= h >> np.uint64(13)
        h *= np.uint64(0x5BD1E995)
        h ^= h >> np.uint64(15)
    return (h & np.uint64(0xFFFF)).astype(np.float64) / 65535.0 * 2 - 1


def value_noise(p: np.ndarray, seed: int) -> np.ndarray:
    """Smooth lattice noise in [-1, 1] at unit frequency; p is (N, 3)."""
    i = np.floor(p).astype(np.int64)
    f = p - i
    f = f * f * (3 - 2 * f)
    out = np.zeros(len(p))
    for dx in (0, 1):
        for dy in (0, 1):
            for dz in (0, 1):
                w = (f[:, 0] if dx else 1 - f[:, 0]) * (f[:, 1] if dy else 1 - f[:, 1]) * (f[:, 2] if dz else 1 - f[:, 2])
                out += w * _hash(i[:, 0] + dx, i[:, 1] + dy, i[:, 2] + dz, seed)
    return out


def fbm(p: np.ndarray, freq: float, octaves: int, seed: int) -> np.ndarray:
    out, amp, total = np.zeros(len(p)), 1.0, 0.0
    for k in range(octaves):
        out += amp * value_noise(p * freq * 2 ** k, seed + 1013 * k)
        total += amp
        amp *= 0.5
    return out / total


class NoiseBank:
    """Per-texel noise fields, cached per (field, slot); an identity mixes two of ``slots`` slots.

    Why: evaluating fbm noise for every identity dominated texture synthesis (seconds at 512^2);
    the coordinates of a field are fixed by the template and texture size, so only the mixing
    weights need to depend on the identity. Use one bank per texel layout (texture size).
    """

    def __init__(self, slots: int = 8) -> None:
        self.slots = slots
        self._cache: dict[tuple[str, int, int], np.ndarray] = {}

    def noise(self, name: str, coords: np.ndarray, freq: float, octaves: int, seed: int) -> np.ndarray:
        rng = np.random.default_rng([seed, zlib.crc32(name.encode())])
        a, b = rng.choice(self.slots, 2, replace=False)
        ang = rng.uniform(0, 2 * np.pi)
        n1 = self._field(name, a, coords, freq, octaves)
        n2 = self._field(name, b, coords, freq, octaves)
        return np.cos(ang) * n1 + np.sin(ang) * n2

    def _field(self, name: str, slot: int, coords: np.ndarray, freq: float, octaves: int) -> np.ndarray:
        key = (name, int(slot), len(coords))
        if key not in self._cache:                    # fill all slots at once: stable cost per identity
            for k in range(self.slots):
                self._cache[(name, k, len(coords))] = fbm(coords, freq, octaves, 7919 * k + 17).astype(np.float32)
        return self._cache[key]


def _ss(e0, e1, x):
    den = np.where(np.abs(np.asarray(e1) - e0) < 1e-12, 1e-12, np.asarray(e1) - e0)
    t = np.clip((x - e0) / den, 0, 1)
    return t * t * (3 - 2 * t)


def _mix(a: np.ndarray, b, t: np.ndarray) -> np.ndarray:
    return a * (1 - t[:, None]) + np.asarray(b) * t[:, None]


def synthesize_albedo(ident: IdentityParams, tpl: Template, texel_attrs: dict[str, np.ndarray],
                      bank: "NoiseBank | None" = None) -> np.ndarray:
    """Colour (N, 3) sRGB in [0, 1] for N texels described by interpolated template attributes.

    ``texel_attrs``: ``P0`` (N,3), ``local`` (N,2), ``scalp_r`` (N,), ``cosphi``/``sinphi`` (N,),
    ``part`` (N,) and ``side`` (N,) from the covering triangle.
    """
    P, loc, part = texel_attrs["P0"], texel_attrs["local"], texel_attrs["part"]
    x, y, z = P[:, 0], P[:, 1], P[:, 2]
    seed = int(ident.texture_seed) % (2**31)
    bank = bank if bank is not None else NoiseBank()

    def noise(name: str, coords: np.ndarray, freq: float, octaves: int) -> np.ndarray:
        return bank.noise(name, coords, freq, octaves, seed)
    age = float(ident.age)
    skin = np.asarray(ident.skin_color, dtype=np.float64)
    hair = np.asarray(ident.hair_color, dtype=np.float64)
    out = np.zeros((len(P), 3))

    # ---- skin (face, neck, ears) ----
    sk = np.isin(part, [PART["skin"], PART["ear"]])
    if sk.any():
        q = P[sk]
        xs, ys, zs = x[sk], y[sk], z[sk]
        c = np.tile(skin, (len(q), 1))
        c *= (1 + 0.06 * noise("n0_25_0", q, 25.0, 3))[:, None]
        c *= (1 + 0.05 * noise("n7_380_0", q, 380.0, 2))[:, None]                         # pores
        red = np.exp(-((np.abs(xs) - 0.04) ** 2 + (ys + 0.01) ** 2) / 0.018 ** 2) \
            + 0.8 * np.exp(-(xs ** 2 + (ys + 0.012) ** 2) / 0.01 ** 2)
        c = _mix(c, c * np.array([1.08, 0.86, 0.84]), np.clip(0.5 * red, 0, 1) * _ss(0.015, 0.045, zs))
        fr = float(ident.freckles)
        if fr > 0:
            spots = _ss(0.35, 0.55, noise("n11_220_0", q, 220.0, 2)) * fr
            spots *= np.exp(-(xs ** 2 + (ys + 0.005) ** 2) / 0.045 ** 2) * _ss(0.015, 0.045, zs)
            c = _mix(c, c * np.array([0.72, 0.55, 0.42]), np.clip(spots, 0, 1))
        if age > 0.3:
            lines = (0.5 + 0.5 * np.sin(ys * 2 * np.pi * 180 + 3 * noise("n3_40", q, 40, 1))) ** 8
            lines *= _ss(0.045, 0.07, ys) * _ss(0.035, 0.065, zs) * (age - 0.3) * 0.9
            c *= (1 - 0.25 * lines)[:, None]
            spots = _ss(0.6, 0.75, noise("n5_90_0", q, 170.0, 2)) * (age - 0.3) * 0.6
            c = _mix(c, c * np.array([0.86, 0.76, 0.66]), np.clip(spots, 0, 1))
        # lips
        dy = ys - _mouth_y(tpl)
        up = np.clip(1 - (xs / 0.026) ** 2, 0, 1)
        lo = np.clip(1 - (xs / 0.024) ** 2, 0, 1)
        lip = np.where(dy >= 0, _ss(0.0085 * np.sqrt(up) + 0.0008, 0.0085 * np.sqrt(up) - 0.0008, dy),
                       _ss(-0.0095 * np.sqrt(lo) - 0.0008, -0.0095 * np.sqrt(lo) + 0.0008, dy))
        lip *= _ss(0.025, 0.055, zs) * (np.abs(xs) < 0.03)
        lipc = np.asarray(ident.lip_color) * (1 + 0.05 * noise("n9_300", q, 300, 1))[:, None]
        c = _mix(c, lipc, lip)
        # brows and lash lines
        browc = np.where(hair.mean() > 0.5, hair * 0.4, hair * 0.7) * 0.9 + 0.02
        ax = np.abs(xs)
        yb = 0.041 + 0.0055 * (1 - ((ax - 0.030) / 0.024) ** 2)
        thick = 0.0052 * (1 - _ss(0.035, 0.056, ax)) * (0.6 + 0.4 * _ss(0.008, 0.02, ax))
        thick = np.maximum(thick, 1e-6)
        brow = (1 - _ss(thick * 0.4, thick, np.abs(ys - yb))) * _ss(0.008, 0.013, ax) * (1 - _ss(0.052, 0.058, ax))
        brow *= (0.75 + 0.25 * noise("n13_1_0", np.stack([xs * 900, ys * 150, zs], -1), 1.0, 2)) * _ss(0.025, 0.055, zs)
        c = _mix(c, browc, np.clip(brow, 0, 1))
        dx = ax - EYE_X
        lash_y = EYE_Y + 0.0052 * np.clip(1 - (dx / 0.0135) ** 2, 0, 1) ** 0.6
        lash = np.exp(-((ys - lash_y) / 0.0009) ** 2) * (np.abs(dx) < 0.0145) * _ss(0.025, 0.055, zs)
        c = _mix(c, np.array([0.04, 0.03, 0.03]), np.clip(0.85 * lash, 0, 1))
        shadow = np.exp(-(dx ** 2 + (ys - EYE_Y - 0.004) ** 2) / 0.012 ** 2) * _ss(0.025, 0.055, zs)
        c *= (1 - 0.12 * shadow)[:, None]
        f3 = ident.features[3]
        f3 = float(f3.detach()) if hasattr(f3, "detach") else float(f3)
        yt = -0.010 - 0.003 * f3                                                  # nose tip (nose_length)
        nostril = np.exp(-((ax - 0.0065) ** 2 / 0.0028 ** 2 + (ys - yt + 0.0055) ** 2 / 0.002 ** 2)) * _ss(0.035, 0.065, zs)
        c *= (1 - 0.6 * nostril)[:, None]
        ears = part[sk] == PART["ear"]
        c[ears] *= np.array([1.03, 0.93, 0.9])
        out[sk] = c

    # ---- hair (scalp shell) ----
    hm = part == PART["hair"]
    if hm.any():
        r = texel_attrs["scalp_r"][hm]
        cp, sp = texel_attrs["cosphi"][hm], texel_attrs["sinphi"][hm]
        strands = noise("n17_1_0", np.stack([cp * 70, sp * 70, r * 4], -1), 1.0, 3)
        coarse = noise("n19_1_0", np.stack([cp * 8, sp * 8, r * 3], -1), 1.0, 2)
        c = hair[None, :] * (1 + 0.35 * strands + 0.2 * coarse)[:, None]
        dens = float(ident.hair_density)
        if dens < 0.5:                             # bald-ish: skin with sparse stubble
            stub = _ss(0.2, 0.6, noise("n23_600_0", P[hm], 600.0, 1)) * dens * 4
            base = skin * (1 + 0.05 * noise("hair_base", P[hm], 25.0, 2))[:, None].clip(0.8, 1.2)
            c = _mix(base, hair, np.clip(stub, 0, 1))
        else:
            c = _mix(c, skin * 0.7 + hair * 0.3, 0.6 * _ss(0.94, 1.0, r))
        out[hm] = c

    # ---- eyes ----
    em = part == PART["eye"]
    if em.any():
        lon = -np.pi + 2 * np.pi * loc[em, 0]
        lat = np.pi * loc[em, 1]
        d = np.stack([np.sin(lat) * np.sin(lon), np.cos(lat), np.sin(lat) * np.cos(lon)], -1)
        ang = np.arccos(np.clip(d[:, 2], -1, 1))
        sclera = np.array([0.90, 0.87, 0.83]) * (1 - 0.25 * _ss(0.9, 1.6, ang))[:, None]
        veins = _ss(0.5, 0.8, noise("n29_1_0", d * 30, 1.0, 2)) * _ss(0.6, 1.2, ang)
        sclera = _mix(sclera, np.array([0.75, 0.35, 0.3]), 0.4 * veins)
        polar = np.arctan2(d[:, 1], d[:, 0])
        streak = noise("n31_1_0", np.stack([np.cos(polar) * 25, np.sin(polar) * 25, ang * 6], -1), 1.0, 2)
        iris = np.asarray(ident.eye_color) * (1 + 0.35 * streak)[:, None] * (0.7 + 0.5 * _ss(0.45, 0.25, ang))[:, None]
        c = _mix(sclera, np.zeros(3), 0.0 * ang)
        c = _mix(c, iris, _ss(0.55, 0.50, ang))
        c = _mix(c, iris * 0.35, _ss(0.44, 0.52, ang) * _ss(0.56, 0.52, ang))
        c = _mix(c, np.array([0.02, 0.02, 0.02]), _ss(0.20, 0.17, ang))
        out[em] = c

    # ---- mouth interior ----
    tm = part == PART["teeth"]
    if tm.any():
        a, b = loc[tm, 0], loc[tm, 1]
        upper = texel_attrs["side"][tm] > 0
        gap = np.exp(-((((a * 9) % 1.0) - 0.5) / 0.05) ** 2)
        c = np.array([0.92, 0.89, 0.80]) * (1 - 0.3 * gap)[:, None]
        cb = np.cos(2 * np.pi * b)
        gum = np.where(upper, _ss(0.55, 0.85, cb), _ss(-0.55, -0.85, cb))
        out[tm] = _mix(c, np.array([0.8, 0.42, 0.42]), gum)
    tg = part == PART["tongue"]
    if tg.any():
        out[tg] = np.array([0.78, 0.38, 0.38]) * (1 + 0.12 * noise("n37_300", P[tg], 300, 2))[:, None]
    cv = part == PART["cavity"]
    if cv.any():
        out[cv] = np.array([0.55, 0.16, 0.15]) * (1 + 0.1 * noise("n41_100", P[cv], 100, 2))[:, None]
    return np.clip(out, 0.0, 1.0)


def _mouth_y(tpl: Template) -> float:
    return float(tpl.anchors["mouth"][1])
