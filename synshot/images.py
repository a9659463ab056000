"""Image helpers shared by the head model, data, renderer, inversion and evaluation: one conversion to
uint8, one grid layout, one PNG writer (atomic, through :mod:`synshot.fsio`)."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from PIL import Image


def to_uint8(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3,H,W), (H,W,3), (H,W) float in [0,1] or uint8 -> (H,W,3) uint8 (rounded, clipped)."""
    if isinstance(img, torch.Tensor):
        img = img.detach().to("cpu", torch.float32)
        if img.ndim == 3 and img.shape[0] in (1, 3) and img.shape[-1] not in (1, 3):
            img = img.permute(1, 2, 0)
        img = img.numpy()
    img = np.asarray(img)
    if img.dtype != np.uint8:
        img = (np.clip(img, 0, 1) * 255.0 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        img = img[..., None]
    if img.shape[-1] == 1:
        img = np.repeat(img, 3, axis=-1)
    return img


def batch_to_uint8(images: torch.Tensor) -> np.ndarray:
    """(N,3,H,W) float in [0,1] -> (N,H,W,3) uint8."""
    return np.stack([to_uint8(im) for im in images]) if len(images) else np.zeros((0, 0, 0, 3), np.uint8)


def image_grid(rows: Sequence[Sequence[np.ndarray | torch.Tensor]], pad: int = 2) -> np.ndarray:
    """Tile images (rows of equal count; each cell resized to the first cell's size) with a white gap."""
    cells = [[to_uint8(c) for c in row] for row in rows]
    h, w = cells[0][0].shape[:2]
    ncol = max(len(r) for r in cells)
    out = np.full((len(cells) * (h + pad) - pad, ncol * (w + pad) - pad, 3), 255, np.uint8)
    for i, row in enumerate(cells):
        for j, cell in enumerate(row):
            if cell.shape[:2] != (h, w):
                cell = np.asarray(Image.fromarray(cell).resize((w, h), Image.BILINEAR))
            out[i * (h + pad):i * (h + pad) + h, j * (w + pad):j * (w + pad) + w] = cell
    return out


def save_png(path: str | Path, image: np.ndarray | torch.Tensor, **save_args) -> Path:
    """Write ``image`` as a PNG, atomically (a reader never sees half a file)."""
    from synshot.fsio import atomic_path

    with atomic_path(path) as tmp:
        Image.fromarray(to_uint8(image)).save(tmp, format="PNG", **save_args)
    return Path(path)
