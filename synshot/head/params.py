"""Identity and expression parameters of the procedural head, and seeded samplers."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

from synshot.camera import look_at_w2c

N_SHAPE = 12
FEATURE_NAMES: tuple[str, ...] = (
    "head_width", "head_height", "head_depth", "nose_length", "nose_width", "nose_bridge", "jaw_width",
    "chin_length", "cheek_fullness", "forehead_slope", "brow_ridge", "eye_spacing", "lip_fullness",
    "mouth_width", "ear_size", "ear_protrusion", "neck_width",
)
EXPRESSION_NAMES: tuple[str, ...] = (
    "jaw_open", "smile_l", "smile_r", "frown", "brow_up_l", "brow_up_r", "brow_down", "blink_l", "blink_r",
    "pucker", "cheek_puff", "mouth_stretch",
)

# Skin tones from very light to very dark (sRGB), interpolated by ``skin_tone``.
_SKIN_RAMP = np.array([
    [0.96, 0.80, 0.70], [0.90, 0.70, 0.58], [0.80, 0.58, 0.45], [0.66, 0.45, 0.33],
    [0.50, 0.33, 0.23], [0.36, 0.23, 0.16], [0.25, 0.16, 0.11],
])
_HAIR_COLOURS = np.array([
    [0.06, 0.05, 0.04], [0.16, 0.10, 0.06], [0.32, 0.20, 0.11], [0.55, 0.38, 0.20], [0.80, 0.65, 0.40],
    [0.55, 0.22, 0.08], [0.70, 0.70, 0.68], [0.92, 0.88, 0.78],
])
_EYE_COLOURS = np.array([
    [0.25, 0.14, 0.07], [0.40, 0.25, 0.12], [0.30, 0.45, 0.62], [0.35, 0.50, 0.35], [0.50, 0.52, 0.55],
])


@dataclass
class IdentityParams:
    """One synthetic person. Shape fields may hold torch tensors (for gradients); JSON via to_dict.

    ``shape`` (N_SHAPE) and ``features`` (FEATURE_NAMES) are ~N(0, 1); colours are sRGB in [0, 1];
    ``age``, ``hair_length``, ``hair_volume``, ``hair_density``, ``freckles`` are in [0, 1].
    """

    shape: Any
    features: Any
    age: float
    skin_color: list[float]
    lip_color: list[float]
    eye_color: list[float]
    hair_color: list[float]
    hair_length: float
    hair_volume: float
    hair_density: float
    freckles: float
    texture_seed: int

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            if isinstance(v, torch.Tensor):
                v = v.detach().cpu().tolist()
            elif isinstance(v, np.ndarray):
                v = v.tolist()
            elif isinstance(v, (np.floating, np.integer)):
                v = v.item()
            out[f.name] = v
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "IdentityParams":
        names = {f.name for f in fields(cls)}
        missing, unknown = names - set(data), set(data) - names
        if missing or unknown:
            raise ValueError(f"IdentityParams.from_dict: missing keys {sorted(missing)}, unknown keys "
                             f"{sorted(unknown)} (expected exactly {sorted(names)})")
        obj = cls(**{k: data[k] for k in names})
        obj.validate()
        return obj

    def validate(self) -> None:
        if len(self.shape) != N_SHAPE:
            raise ValueError(f"IdentityParams.shape: expected {N_SHAPE} values, got {len(self.shape)}")
        if len(self.features) != len(FEATURE_NAMES):
            raise ValueError(f"IdentityParams.features: expected {len(FEATURE_NAMES)} values "
                             f"({', '.join(FEATURE_NAMES)}), got {len(self.features)}")
        for name in ("skin_color", "lip_color", "eye_color", "hair_color"):
            if len(getattr(self, name)) != 3:
                raise ValueError(f"IdentityParams.{name}: expected 3 sRGB values")

    @classmethod
    def mean(cls) -> "IdentityParams":
        """The average person: zero shape/feature offsets, mid skin tone, short-medium dark hair."""
        skin = _SKIN_RAMP.mean(0)
        return cls(shape=[0.0] * N_SHAPE, features=[0.0] * len(FEATURE_NAMES), age=0.4,
                   skin_color=skin.tolist(), lip_color=(skin * np.array([0.95, 0.62, 0.62])).tolist(),
                   eye_color=_EYE_COLOURS[1].tolist(), hair_color=_HAIR_COLOURS[1].tolist(), hair_length=0.2,
                   hair_volume=0.35, hair_density=0.9, freckles=0.0, texture_seed=0)

    def copy(self) -> "IdentityParams":
        return IdentityParams.from_dict(self.to_dict())


def _jitter(rng: np.random.Generator, c: np.ndarray, s: float, chroma: float = 0.3) -> list[float]:
    """Mostly brightness jitter (``s``), a little hue jitter (``chroma * s`` per channel)."""
    return np.clip(c * np.exp(rng.normal(0, s) + rng.normal(0, chroma * s, 3)), 0.0, 1.0).tolist()


def sample_identity(rng: np.random.Generator) -> IdentityParams:
    """A random person: skin tones, age-like shape, hair styles (bald-ish .. long), colours."""
    age = float(rng.beta(1.3, 1.6))
    tone = float(rng.uniform(0, 1))
    k = tone * (len(_SKIN_RAMP) - 1)
    i0 = int(min(k, len(_SKIN_RAMP) - 2))
    skin = _SKIN_RAMP[i0] * (1 - (k - i0)) + _SKIN_RAMP[i0 + 1] * (k - i0)
    lip = skin * np.array([0.95, 0.62, 0.62]) * rng.uniform(0.85, 1.05)
    dark = tone > 0.55
    hair_idx = rng.choice(len(_HAIR_COLOURS), p=[0.22, 0.20, 0.14, 0.10, 0.10, 0.07, 0.09, 0.08] if not dark
                          else [0.62, 0.26, 0.06, 0.0, 0.0, 0.0, 0.04, 0.02])
    hair = _HAIR_COLOURS[hair_idx].copy()
    if age > 0.7 and rng.random() < 0.6:
        hair = hair * 0.3 + np.array([0.72, 0.72, 0.70]) * 0.7
    eye_idx = rng.choice(len(_EYE_COLOURS), p=[0.4, 0.2, 0.2, 0.1, 0.1] if not dark else [0.7, 0.3, 0, 0, 0])
    style = rng.choice(4, p=[0.35, 0.3, 0.27, 0.08])    # short, medium, long, bald-ish
    length = {0: rng.uniform(0.0, 0.1), 1: rng.uniform(0.15, 0.45), 2: rng.uniform(0.55, 1.0), 3: 0.0}[style]
    volume = {0: rng.uniform(0.1, 0.35), 1: rng.uniform(0.25, 0.6), 2: rng.uniform(0.3, 0.8), 3: 0.0}[style]
    density = 0.05 if style == 3 else float(rng.uniform(0.8, 1.0))
    shape = rng.normal(0, 1, N_SHAPE)
    feats = rng.normal(0, 1, len(FEATURE_NAMES))
    return IdentityParams(
        shape=shape.tolist(), features=feats.tolist(), age=age, skin_color=_jitter(rng, skin, 0.04),
        lip_color=_jitter(rng, lip, 0.05), eye_color=_jitter(rng, _EYE_COLOURS[eye_idx], 0.1),
        hair_color=_jitter(rng, hair, 0.12, chroma=0.15), hair_length=float(length), hair_volume=float(volume),
        hair_density=float(density), freckles=float(rng.beta(0.6, 3.0)) if tone < 0.4 else 0.0,
        texture_seed=int(rng.integers(0, 2**31 - 1)),
    )


def sample_expression(rng: np.random.Generator) -> torch.Tensor:
    """Sparse activations in [0, 1]: ~10% neutral, otherwise a few active blendshapes."""
    e = np.zeros(len(EXPRESSION_NAMES))
    if rng.random() > 0.1:
        active = rng.random(len(EXPRESSION_NAMES)) < 0.25
        e[active] = rng.uniform(0.2, 1.0, int(active.sum()))
        if rng.random() < 0.45:
            e[0] = rng.uniform(0.2, 1.0)                 # jaw_open is the most common one
        if rng.random() < 0.3:                            # symmetric smile / brows / blink
            for a, b in ((1, 2), (4, 5), (7, 8)):
                e[b] = e[a]
    return torch.tensor(e, dtype=torch.float32)


def _rot(axis: str, a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    if axis == "x":
        return np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
    if axis == "y":
        return np.array([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    return np.array([[c, -s, 0], [s, c, 0], [0, 0, 1]])


def sample_head_pose(rng: np.random.Generator, max_yaw_deg: float = 15.0, max_pitch_deg: float = 10.0,
                     max_roll_deg: float = 5.0) -> np.ndarray:
    """Small random head rotation (4x4, head -> world) and a few millimetres of translation."""
    yaw, pitch, roll = (math.radians(rng.uniform(-m, m)) for m in (max_yaw_deg, max_pitch_deg, max_roll_deg))
    T = np.eye(4)
    T[:3, :3] = _rot("y", yaw) @ _rot("x", pitch) @ _rot("z", roll)
    T[:3, 3] = rng.uniform(-0.005, 0.005, 3)
    return T


def sample_cameras(rng: np.random.Generator, n_views: int, width: int, height: int, *,
                   distance: tuple[float, float] = (0.6, 1.0), yaw_sigma_deg: float = 35.0,
                   max_yaw_deg: float = 80.0, max_pitch_deg: float = 20.0, fill: float = 0.85,
                   frontal_first: bool = True) -> list[tuple[np.ndarray, np.ndarray]]:
    """Frontal-biased orbit; the head (~0.30 m incl. hair and chin) fills ``fill`` of the frame.

    Returns ``[(K 3x3, w2c 4x4)]`` float64 in OpenCV convention (pixel centres at +0.5).
    """
    if n_views < 1 or width < 8 or height < 8:
        raise ValueError(f"sample_cameras: need n_views >= 1 and an image of at least 8x8 (got {n_views}, "
                         f"{width}x{height})")
    out = []
    for v in range(n_views):
        if v == 0 and frontal_first:
            yaw = math.radians(rng.uniform(-8, 8))
            pitch = math.radians(rng.uniform(-5, 5))
        else:
            yaw = math.radians(float(np.clip(rng.normal(0, yaw_sigma_deg), -max_yaw_deg, max_yaw_deg)))
            pitch = math.radians(rng.uniform(-max_pitch_deg, max_pitch_deg))
        d = rng.uniform(*distance)
        target = np.array([0.0, -0.02, 0.0]) + rng.normal(0, 0.005, 3)
        eye = target + d * np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch), math.cos(yaw) * math.cos(pitch)])
        w2c = look_at_w2c(eye, target)
        roll = math.radians(rng.normal(0, 2.0))
        w2c[:3] = _rot("z", roll) @ w2c[:3]
        extent = 0.30                                     # metres to fit in the shorter image side
        f = fill * min(width, height) * d / extent
        K = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1.0]])
        out.append((K, w2c))
    return out
