"""Procedural HDR environment maps: sky/ground gradient, a soft key light, a fill light.

Why procedural: nothing may be downloaded, and a lighting id must reproduce the same map on any
machine. The key light is an angular Gaussian lobe (10-25 degrees) so shadows are soft.
"""

from __future__ import annotations

import numpy as np


def env_directions(height: int) -> np.ndarray:
    """Unit direction (H, 2H, 3) of each pixel centre in Mitsuba's envmap convention (+y up).

    Mitsuba maps a direction d to u = atan2(d.x, -d.z) / 2pi + 0.5, v = acos(d.y) / pi.
    """
    w = 2 * height
    u = (np.arange(w) + 0.5) / w
    v = (np.arange(height) + 0.5) / height
    U, V = np.meshgrid(u, v)
    phi = (U - 0.5) * 2 * np.pi
    theta = V * np.pi
    return np.stack([np.sin(theta) * np.sin(phi), np.cos(theta), -np.sin(theta) * np.cos(phi)], -1)


def _dir(azimuth: float, elevation: float) -> np.ndarray:
    """Azimuth 0 = in front of the face (+z), positive towards +x; elevation up from the horizon."""
    return np.array([np.sin(azimuth) * np.cos(elevation), np.sin(elevation), np.cos(azimuth) * np.cos(elevation)])


def lighting_params(lighting_id: int) -> dict:
    """The (seeded) description of lighting ``lighting_id`` (>= 0)."""
    if int(lighting_id) < 0:
        raise ValueError(f"lighting_id must be >= 0, got {lighting_id}")
    rng = np.random.default_rng([int(lighting_id), 0x5EED])
    temp = rng.uniform(-1, 1)                                   # warm (-) .. cool (+)
    key_col = np.array([1.0, 0.93 + 0.05 * temp, 0.85 + 0.15 * temp])
    return {
        "key_dir": _dir(rng.uniform(-1.3, 1.3), rng.uniform(0.25, 0.95)),
        "key_color": key_col / key_col.max(),
        "key_width": rng.uniform(0.18, 0.45),                   # lobe width (radians)
        "key_share": rng.uniform(0.45, 0.75),                   # of the frontal irradiance
        "fill_dir": _dir(rng.uniform(-2.5, 2.5), rng.uniform(-0.1, 0.6)),
        "fill_color": np.clip(np.array([0.9, 0.95, 1.0]) + rng.normal(0, 0.05, 3), 0.5, 1.2),
        "fill_ratio": rng.uniform(0.05, 0.3),
        "sky": np.clip(np.array([0.55, 0.65, 0.85]) + rng.normal(0, 0.08, 3), 0.2, 1.0),
        "ground": np.clip(np.array([0.35, 0.30, 0.25]) + rng.normal(0, 0.06, 3), 0.05, 1.0),
        "horizon": np.clip(np.array([0.85, 0.82, 0.78]) + rng.normal(0, 0.06, 3), 0.2, 1.2),
    }


def environment_map(lighting_id: int, height: int = 64, brightness: float = 1.0) -> np.ndarray:
    """Linear RGB radiance (H, 2H, 3) float32; a white diffuse patch facing +z sees irradiance ~pi*brightness."""
    p = lighting_params(lighting_id)
    d = env_directions(height)
    y = d[..., 1:2]
    sky = np.where(y > 0, p["horizon"] + (p["sky"] - p["horizon"]) * np.sqrt(np.clip(y, 0, 1)),
                   p["horizon"] + (p["ground"] - p["horizon"]) * np.clip(-y * 3, 0, 1))
    cos_k = np.clip((d @ p["key_dir"])[..., None], -1, 1)
    key = np.exp((cos_k - 1) / (p["key_width"] ** 2 / 2)) * p["key_color"]
    cos_f = np.clip((d @ p["fill_dir"])[..., None], -1, 1)
    fill = np.exp((cos_f - 1) / 0.5) * p["fill_color"]
    # solid angle of each pixel, to normalise frontal irradiance contributions
    theta = (np.arange(height) + 0.5) / height * np.pi
    dw = (np.sin(theta) * (np.pi / height) * (2 * np.pi / (2 * height)))[:, None, None]
    front = np.clip(d[..., 2:3], 0, None)

    def irr(L: np.ndarray) -> float:
        return float((L * front * dw).mean(-1).sum())

    sky = sky / irr(sky) * (1 - p["key_share"]) * (1 - p["fill_ratio"])
    key = key / max(irr(key), 1e-9) * p["key_share"]
    fill = fill / max(irr(fill), 1e-9) * (1 - p["key_share"]) * p["fill_ratio"]
    env = (sky + key + fill) * np.pi * brightness
    return env.astype(np.float32)
