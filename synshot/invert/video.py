"""MP4 and image-grid writers for inversion outputs (imageio-ffmpeg's bundled ffmpeg, no system codec)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch
from PIL import Image


def to_uint8(img: torch.Tensor | np.ndarray) -> np.ndarray:
    """(3,H,W) or (H,W,3) float [0,1] -> (H,W,3) uint8."""
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


def _even(frame: np.ndarray) -> np.ndarray:
    """yuv420p needs even sizes: pad by edge replication."""
    h, w = frame.shape[:2]
    return np.pad(frame, ((0, h % 2), (0, w % 2), (0, 0)), mode="edge") if (h % 2 or w % 2) else frame


def write_mp4(path: str | Path, frames: Iterable[np.ndarray | torch.Tensor], fps: int = 12) -> Path:
    """Write RGB frames to an H.264 MP4 playable everywhere (yuv420p)."""
    import imageio.v2 as imageio

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = imageio.get_writer(str(path), fps=fps, codec="libx264", quality=8, pixelformat="yuv420p",
                                macro_block_size=1, ffmpeg_log_level="error")
    count = 0
    try:
        for frame in frames:
            writer.append_data(_even(to_uint8(frame)))
            count += 1
    finally:
        writer.close()
    if count == 0:
        path.unlink(missing_ok=True)
        raise ValueError(f"{path}: no frames to write")
    return path


def read_mp4_frames(path: str | Path) -> list[np.ndarray]:
    """Decode all frames (for tests and inspection)."""
    import imageio.v2 as imageio

    reader = imageio.get_reader(str(path))
    try:
        return [np.asarray(f) for f in reader]
    finally:
        reader.close()


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


def save_png(path: str | Path, image: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)
    return path
