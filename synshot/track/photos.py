"""Reading the user's photos: EXIF rotation honoured, any pixel format, EXIF focal length.

Why EXIF matters twice: phones store portrait photos sideways with an orientation tag (a face on
its side is not detected), and the 35 mm-equivalent focal length fixes the camera's field of view,
which landmarks alone barely constrain.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from synshot.cli import UsageError
from synshot.invert.subject import IMAGE_SUFFIXES, pil_to_array

EXIF_FOCAL_35MM = 0xA405
EXIF_MAKE, EXIF_MODEL = 0x010F, 0x0110
EXIF_IFD = 0x8769


class PhotoError(UsageError):
    """A photo (or the folder of photos) that cannot be tracked; the message names the file and the fix."""


@dataclass
class Photo:
    path: Path
    rgb: np.ndarray              # (H, W, 3) float32 [0, 1], EXIF-rotated, transparency on white
    alpha: np.ndarray | None     # (H, W) float32 when the file had transparency
    focal_35mm: float | None     # EXIF FocalLengthIn35mmFilm
    camera: str | None           # EXIF make + model

    @property
    def name(self) -> str:
        return self.path.name

    @property
    def size(self) -> tuple[int, int]:
        """(width, height)."""
        return self.rgb.shape[1], self.rgb.shape[0]

    def focal_px(self) -> float | None:
        """Focal length in pixels from the 35 mm equivalent (36 mm film width along the long side)."""
        if not self.focal_35mm:
            return None
        return float(self.focal_35mm) / 36.0 * max(self.size)

    def uint8(self) -> np.ndarray:
        return (np.clip(self.rgb, 0, 1) * 255 + 0.5).astype(np.uint8)


def _exif(img: Image.Image) -> tuple[float | None, str | None]:
    try:
        exif = img.getexif()
        sub = exif.get_ifd(EXIF_IFD)
    except Exception:  # noqa: BLE001 - damaged EXIF must not stop tracking
        return None, None
    f35 = sub.get(EXIF_FOCAL_35MM) or exif.get(EXIF_FOCAL_35MM)
    make, model = exif.get(EXIF_MAKE), exif.get(EXIF_MODEL)
    camera = " ".join(str(x).strip() for x in (make, model) if x) or None
    return (float(f35) if f35 else None), camera


def read_photo(path: Path, max_side: int = 8192) -> Photo:
    """One photo, upright (EXIF orientation applied), as float RGB."""
    try:
        with Image.open(path) as img:
            img.load()
            focal, camera = _exif(img)
            img = ImageOps.exif_transpose(img)
            if max(img.size) > max_side:
                raise PhotoError(f"{path}: {img.size[0]}x{img.size[1]} is larger than {max_side} px; downscale it")
            rgb, alpha = pil_to_array(img)
    except PhotoError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise PhotoError(f"{path}: cannot read this image ({exc}); re-save it as PNG or JPEG") from exc
    return Photo(Path(path), rgb, alpha, focal, camera)


def list_photos(source: str | Path | list) -> list[Path]:
    """The photos of a folder (or of its images/ subfolder), or an explicit list of files, sorted."""
    if isinstance(source, (list, tuple)):
        paths = [Path(p) for p in source]
        for p in paths:
            if not p.is_file():
                raise PhotoError(f"{p}: no such photo")
        return paths
    folder = Path(source)
    if folder.is_file():
        return [folder]
    if not folder.is_dir():
        raise PhotoError(f"{folder}: no such folder of photos")
    if (folder / "images").is_dir():
        folder = folder / "images"
    paths = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
    if not paths:
        raise PhotoError(f"{folder}: no photos ({', '.join(IMAGE_SUFFIXES)}); put 1-3 photos of one person there")
    return paths


def user_mask(photo_path: Path, size: tuple[int, int]) -> np.ndarray | None:
    """A user-provided mask ``masks/<stem>.*`` beside the photos' folder (or inside it), or None."""
    folder = photo_path.parent
    for masks in (folder / "masks", folder.parent / "masks"):
        if masks.is_dir():
            found = sorted(masks.glob(photo_path.stem + ".*"))
            if found:
                try:
                    with Image.open(found[0]) as img:
                        img.load()
                        img = ImageOps.exif_transpose(img)
                        rgb, alpha = pil_to_array(img, background=(0.0, 0.0, 0.0))
                except (UnidentifiedImageError, OSError, ValueError) as exc:
                    raise PhotoError(f"{found[0]}: cannot read this mask ({exc}); re-save it as PNG") from exc
                m = alpha if alpha is not None else rgb.mean(2)
                if (m.shape[1], m.shape[0]) != size:
                    raise PhotoError(f"{found[0]}: mask is {m.shape[1]}x{m.shape[0]} but {photo_path.name} is "
                                     f"{size[0]}x{size[1]}; masks must match their photos")
                return m.astype(np.float32)
    return None
