"""Test-time augmentation of a 68-point landmark reader: the mean of 14 reads of one face.

Why: a cascade of regression trees (the head-model predictor of ``synshot.track.landmark_predictor``)
reads a face relative to its box; its error on one face depends on where the box falls and on which side
of the face it sees, and part of that error averages out over small moves of the box and over the mirror
image (docs/tracking.md, "Averaged reads"). The moves come in mirrored pairs, so the points read in a
mirrored photo are exactly the mirrored points.
"""

from __future__ import annotations

import math
from typing import Callable

import numpy as np

Box = tuple[float, float, float, float]      # left, top, right, bottom (pixels)
Reader = Callable[[np.ndarray, Box], np.ndarray]


def mirror_box(box, width: int) -> Box:
    """``box`` in the left-right mirror image of a photo ``width`` pixels wide."""
    left, top, right, bottom = box
    return (width - right, top, width - left, bottom)


def unmirror(points: np.ndarray, width: int) -> np.ndarray:
    """68 points read in the mirror image, back in the photo (x reflected, left and right points swapped;
    its own inverse)."""
    from synshot.head.landmarks import MIRROR

    pts = np.asarray(points, dtype=np.float64)[MIRROR].copy()
    pts[:, 0] = width - pts[:, 0]
    return pts


def augmented_boxes(box, shift: float) -> list[Box]:
    """``box``, then moved by ``shift`` of its size along -x, +x, -y, +y, and scaled by exp(+-``shift``)."""
    left, top, right, bottom = (float(v) for v in box)
    w, h = right - left, bottom - top
    cx, cy = (left + right) / 2, (top + bottom) / 2
    out = []
    for dx, dy, ds in ((0, 0, 0), (-shift, 0, 0), (shift, 0, 0), (0, -shift, 0), (0, shift, 0), (0, 0, shift),
                       (0, 0, -shift)):
        x, y, s = cx + dx * w, cy + dy * h, math.exp(ds)
        out.append((x - s * w / 2, y - s * h / 2, x + s * w / 2, y + s * h / 2))
    return out


def averaged_read(read: Reader, image: np.ndarray, box, shift: float) -> np.ndarray:
    """(68, 2) points of ``read`` (image, box -> points) in ``box``: one read when ``shift`` is 0, else the
    mean of 14: each of :func:`augmented_boxes` read as is and in the mirror image."""
    if shift <= 0:
        return read(image, box)
    width = image.shape[1]
    flipped = np.ascontiguousarray(image[:, ::-1])
    reads = []
    for moved in augmented_boxes(box, shift):
        reads.append(read(image, moved))
        reads.append(unmirror(read(flipped, mirror_box(moved, width)), width))
    return np.mean(reads, axis=0)
