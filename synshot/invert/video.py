"""MP4 writer and reader for inversion outputs (imageio-ffmpeg's bundled ffmpeg, no system codec)."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

import numpy as np
import torch

from synshot.images import to_uint8


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
