"""``id_distance``: dlib face-descriptor distance between renders and the photos they should match.

Why dlib's descriptor: it is a real face recognition network (LFW 99.38%) that ships with its
weights, so the identity metric needs no configured file and is the same on every machine. Lower
is better; below 0.6 dlib calls two faces the same person.

The face box of a pair comes from the *target* (a detection, or a box the caller knows, e.g. the
projected head model): the render is compared in the same box, so a render that has lost the face
still gets a (large) distance instead of silently dropping out.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch

from synshot.faces.dlib_models import SAME_PERSON_DISTANCE, Face, as_uint8_rgb, descriptor_distance, detect_faces, \
    face_descriptor


def _hwc(image) -> np.ndarray:
    if isinstance(image, torch.Tensor):
        image = image.detach().cpu().float()
        if image.ndim == 3 and image.shape[0] in (1, 3):
            image = image.permute(1, 2, 0)
        image = image.numpy()
    return as_uint8_rgb(image)


def pair_id_distance(render, target, box: Sequence[float] | None = None, upsample: int = 1) -> float:
    """Descriptor distance of one render to its target (nan when the target shows no face)."""
    r, t = _hwc(render), _hwc(target)
    if box is None:
        faces = detect_faces(t, upsample=0) or detect_faces(t, upsample=upsample)
        if not faces:
            return float("nan")
        face = faces[0]
    else:
        face = Face(tuple(float(v) for v in box), 1.0)
    return descriptor_distance(face_descriptor(r, face), face_descriptor(t, face))


def id_distances(renders, targets, boxes=None) -> list[float]:
    """Per-pair distances; ``renders``/``targets`` (N,3,H,W) tensors in [0,1] or lists of images."""
    out = []
    for k in range(len(renders)):
        box = None if boxes is None else [float(v) for v in boxes[k]]
        out.append(pair_id_distance(renders[k], targets[k], box))
    return out


def id_distance_summary(distances: Sequence[float], prefix: str = "") -> dict[str, float | int | None]:
    """``{prefix}id_distance`` (mean), ``..._same_person`` (fraction < 0.6), ``..._frames`` (pairs with a face)."""
    d = np.asarray([x for x in distances if x is not None and math.isfinite(x)], dtype=np.float64)
    if len(d) == 0:
        return {f"{prefix}id_distance": None, f"{prefix}id_distance_same_person": None, f"{prefix}id_distance_frames": 0}
    return {f"{prefix}id_distance": float(d.mean()),
            f"{prefix}id_distance_same_person": float((d < SAME_PERSON_DISTANCE).mean()),
            f"{prefix}id_distance_frames": int(len(d))}
