"""Subject folders: loading and validation of the few images an avatar is inverted from.

Layout (docs/inversion.md has the full description)::

    SUBJECT/
      images/000.png ...          >= 1 RGB(A) images (3 is the target case)
      masks/000.png ...           optional foreground masks (same stem); else alpha, else all foreground
      cameras.json                {"frames": [{"file", "K" 3x3, "w2c" 4x4 (OpenCV), "width", "height"}]}
      params.json                 {"head_model_version", "identity" (dict or null), "expression_names",
                                   "frames": [{"file", "expression" [E], "head_pose" 4x4}]}
      eval/                       optional, same layout; used only for metrics

Why so strict: a subject is usually produced by a tracker run by someone else. A silent mismatch
(wrong camera convention, images swapped, other head-model version) would give a bad avatar after
minutes of optimisation; every problem here is a :class:`SubjectError` naming the file and the fix.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from synshot.camera import project_points
from synshot.cli import UsageError
from synshot.invert.checks import MIN_MASK_AGREEMENT, UPSAMPLE_WARN, check_expression, mask_agreement

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff")


class SubjectError(UsageError, ValueError):
    """A problem with a subject folder, naming the file and how to fix it (exit 2)."""


@dataclass
class Frame:
    """One calibrated image of the subject (tensors at the working resolution)."""

    name: str
    rgb: torch.Tensor  # (3, H, W) float32 [0, 1], composited on the background where alpha < 1
    mask: torch.Tensor  # (1, H, W) float32 [0, 1]
    K: torch.Tensor  # (3, 3) pixels, at the working resolution
    w2c: torch.Tensor  # (4, 4) OpenCV world-to-camera
    expression: torch.Tensor  # (E,)
    head_pose: torch.Tensor  # (4, 4) head-to-world

    @property
    def height(self) -> int:
        return int(self.rgb.shape[-2])

    @property
    def width(self) -> int:
        return int(self.rgb.shape[-1])


@dataclass
class Subject:
    root: Path
    name: str
    head_model_version: str
    expression_names: list[str]
    identity: dict[str, Any] | None
    frames: list[Frame]
    eval_frames: list[Frame] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def stack(self, frames: Sequence[Frame] | None = None) -> dict[str, torch.Tensor]:
        """Batch tensors of frames of equal size: rgb (N,3,H,W), mask (N,1,H,W), K, w2c, expression, head_pose."""
        frames = list(self.frames if frames is None else frames)
        sizes = {(f.height, f.width) for f in frames}
        if len(sizes) != 1:
            raise SubjectError(f"{self.root}: frames have different sizes {sorted(sizes)} after resizing")
        return {
            "rgb": torch.stack([f.rgb for f in frames]),
            "mask": torch.stack([f.mask for f in frames]),
            "K": torch.stack([f.K for f in frames]),
            "w2c": torch.stack([f.w2c for f in frames]),
            "expression": torch.stack([f.expression for f in frames]),
            "head_pose": torch.stack([f.head_pose for f in frames]),
        }


# ---------------------------------------------------------------------------------------------
# images


def read_image(path: Path, background: Sequence[float] = (1.0, 1.0, 1.0), max_side: int = 8192
               ) -> tuple[np.ndarray, np.ndarray | None]:
    """Read any common image as float RGB (H,W,3) in [0,1] plus its alpha (H,W) when it has one.

    Handles RGBA/LA/palette transparency (composited on ``background``, alpha returned as a mask),
    grayscale (repeated to RGB), 16-bit and float images (rescaled to [0,1]).
    """
    try:
        with Image.open(path) as img:
            img.load()
            if max(img.size) > max_side:
                raise SubjectError(
                    f"{path}: image is {img.size[0]}x{img.size[1]}, larger than subject.max_image_side="
                    f"{max_side}; downscale it (and scale K in cameras.json) or raise subject.max_image_side")
            return pil_to_array(img, background)
    except SubjectError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as exc:
        raise SubjectError(f"{path}: cannot read this image ({exc}); re-save it as PNG or JPEG") from exc


def pil_to_array(img: Image.Image, background: Sequence[float] = (1.0, 1.0, 1.0)
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """A loaded PIL image of any mode -> float RGB (H,W,3) in [0,1] and alpha (H,W) or None (see read_image)."""
    mode = img.mode
    if mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
        mode = img.mode
    if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
        arr = np.asarray(img, dtype=np.float32) / 65535.0
        rgb, alpha = np.repeat(arr[..., None], 3, axis=2), None
    elif mode == "I":
        arr = np.asarray(img, dtype=np.float64)
        scale = 65535.0 if arr.max() > 255 else 255.0
        rgb, alpha = np.repeat((arr / scale).astype(np.float32)[..., None], 3, axis=2), None
    elif mode == "F":
        arr = np.asarray(img, dtype=np.float32)
        scale = 1.0 if arr.max() <= 1.0 else (255.0 if arr.max() <= 255 else 65535.0)
        rgb, alpha = np.repeat((arr / scale)[..., None], 3, axis=2), None
    elif mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        arr = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        rgb, alpha = arr[..., :3], arr[..., 3]
    else:  # RGB, L, 1, CMYK, YCbCr, LAB, HSV ...
        rgb, alpha = np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0, None
    rgb = np.clip(rgb, 0.0, 1.0)
    if alpha is not None:
        bg = np.asarray(background, dtype=np.float32)[None, None, :]
        rgb = rgb * alpha[..., None] + bg * (1.0 - alpha[..., None])
        if alpha.min() >= 1.0:  # an opaque RGBA file carries no mask information
            alpha = None
    return rgb.astype(np.float32), alpha


def read_mask(path: Path, max_side: int = 8192) -> np.ndarray:
    """Read a mask image as float (H,W) in [0,1] (alpha channel if present, else luminance)."""
    rgb, alpha = read_image(path, background=(0.0, 0.0, 0.0), max_side=max_side)
    if alpha is not None:
        return alpha
    return rgb.mean(axis=2)


def resize_frame_arrays(rgb: torch.Tensor, mask: torch.Tensor, K: torch.Tensor, size: int
                        ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Resize so that the long side is ``size`` and scale K to match (pixel centres at +0.5).

    Continuous pixel coordinates scale linearly (pixel i covers [i, i+1)), so fx, fy, cx, cy all
    scale by the per-axis factor.
    """
    h, w = rgb.shape[-2:]
    scale = size / max(h, w)
    nh, nw = max(1, round(h * scale)), max(1, round(w * scale))
    if (nh, nw) == (h, w):
        return rgb, mask, K
    antialias = nh < h
    rgb = torch.nn.functional.interpolate(rgb[None], size=(nh, nw), mode="bilinear", align_corners=False,
                                          antialias=antialias)[0].clamp(0, 1)
    mask = torch.nn.functional.interpolate(mask[None], size=(nh, nw), mode="bilinear", align_corners=False,
                                           antialias=antialias)[0].clamp(0, 1)
    K = K.clone()
    K[0] *= nw / w
    K[1] *= nh / h
    K[2] = torch.tensor([0.0, 0.0, 1.0])
    return rgb, mask, K


# ---------------------------------------------------------------------------------------------
# JSON


def _read_json(path: Path, what: str) -> Any:
    if not path.is_file():
        raise SubjectError(f"{path}: missing; a subject folder needs {what} (see docs/inversion.md)")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise SubjectError(f"{path}: not valid JSON ({exc}); fix the file") from exc


def _matrix(value: Any, shape: tuple[int, int], where: str) -> torch.Tensor:
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise SubjectError(f"{where}: expected a {shape[0]}x{shape[1]} list of numbers ({exc})") from exc
    if arr.shape != shape:
        raise SubjectError(f"{where}: expected shape {shape[0]}x{shape[1]}, got {list(arr.shape)}")
    if not np.all(np.isfinite(arr)):
        raise SubjectError(f"{where}: contains NaN or infinity")
    return torch.tensor(arr, dtype=torch.float32)


def _check_rigid(m: torch.Tensor, where: str, fix: str) -> None:
    if not torch.allclose(m[3], torch.tensor([0.0, 0.0, 0.0, 1.0]), atol=1e-5):
        raise SubjectError(f"{where}: last row must be [0, 0, 0, 1], got {m[3].tolist()}; {fix}")
    rot = m[:3, :3].double()
    err = (rot @ rot.T - torch.eye(3, dtype=torch.float64)).abs().max().item()
    det = torch.linalg.det(rot).item()
    if err > 1e-3 or abs(det - 1.0) > 1e-3:
        raise SubjectError(f"{where}: rotation part is not a proper rotation (orthonormality error {err:.2g}, "
                           f"det {det:.3f}); {fix}")


def _frames_by_file(data: Any, path: Path) -> dict[str, dict]:
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list):
        raise SubjectError(f"{path}: expected an object with a 'frames' list (see docs/inversion.md)")
    out: dict[str, dict] = {}
    for i, entry in enumerate(data["frames"]):
        if not isinstance(entry, dict) or not isinstance(entry.get("file"), str):
            raise SubjectError(f"{path}: frames[{i}] needs a 'file' key naming an image in images/")
        if entry["file"] in out:
            raise SubjectError(f"{path}: frames[{i}]: '{entry['file']}' is listed twice")
        out[entry["file"]] = entry
    return out


# ---------------------------------------------------------------------------------------------
# folders


def _load_frames(folder: Path, *, expression_names: list[str] | None, size: int,
                 background: Sequence[float], max_side: int, mask_threshold: float,
                 warnings: list[str]) -> tuple[list[Frame], dict]:
    images_dir = folder / "images"
    if not images_dir.is_dir():
        raise SubjectError(f"{images_dir}: missing; put the subject's images (PNG/JPEG) there")
    files = sorted(p for p in images_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise SubjectError(f"{images_dir}: no images ({', '.join(IMAGE_SUFFIXES)}); at least 1 is needed, 3 is best")
    cameras_path, params_path = folder / "cameras.json", folder / "params.json"
    cameras = _frames_by_file(_read_json(cameras_path, "cameras.json with K and w2c per image"), cameras_path)
    params_raw = _read_json(params_path, "params.json with per-image expression and head pose")
    params = _frames_by_file(params_raw, params_path)
    names = [p.name for p in files]
    for listing, path in ((cameras, cameras_path), (params, params_path)):
        extra = sorted(set(listing) - set(names))
        missing = sorted(set(names) - set(listing))
        if extra:
            raise SubjectError(f"{path}: lists {extra} but {images_dir} has no such image; "
                               f"add the image or remove the entry")
        if missing:
            raise SubjectError(f"{path}: has no entry for {missing} (in {images_dir}); "
                               f"add an entry per image or remove the image")
    if expression_names is None:
        expression_names = params_raw.get("expression_names")
    masks_dir = folder / "masks"
    frames: list[Frame] = []
    for img_path in files:
        cam, par = cameras[img_path.name], params[img_path.name]
        where_c, where_p = f"{cameras_path} [{img_path.name}]", f"{params_path} [{img_path.name}]"
        for key in ("K", "w2c", "width", "height"):
            if key not in cam:
                raise SubjectError(f"{where_c}: missing key '{key}'")
        K = _matrix(cam["K"], (3, 3), f"{where_c}.K")
        if K[0, 0] <= 0 or K[1, 1] <= 0 or not torch.allclose(K[2], torch.tensor([0.0, 0.0, 1.0]), atol=1e-6):
            raise SubjectError(f"{where_c}.K: expected [[fx,0,cx],[0,fy,cy],[0,0,1]] with fx, fy > 0 (pixels)")
        w2c = _matrix(cam["w2c"], (4, 4), f"{where_c}.w2c")
        _check_rigid(w2c, f"{where_c}.w2c", "give the world-to-camera matrix (OpenCV: x right, y down, z forward)")
        rgb_np, alpha = read_image(img_path, background, max_side)
        h, w = rgb_np.shape[:2]
        if (int(cam["width"]), int(cam["height"])) != (w, h):
            raise SubjectError(f"{where_c}: width x height {cam['width']}x{cam['height']} does not match the image "
                               f"{img_path} ({w}x{h}); fix cameras.json (and scale K) or the image")
        mask_np = None
        mask_candidates = sorted(masks_dir.glob(img_path.stem + ".*")) if masks_dir.is_dir() else []
        if masks_dir.is_dir() and not mask_candidates:
            raise SubjectError(f"{masks_dir}: no mask for {img_path.name} (expected {img_path.stem}.png); "
                               f"add it or remove the masks/ folder to use alpha / the whole image")
        if mask_candidates:
            mask_np = read_mask(mask_candidates[0], max_side)
            if mask_np.shape != (h, w):
                raise SubjectError(f"{mask_candidates[0]}: mask is {mask_np.shape[1]}x{mask_np.shape[0]} but the image "
                                   f"{img_path.name} is {w}x{h}; masks must match their images")
        elif alpha is not None:
            mask_np = alpha
        if mask_np is None:
            warnings.append(f"{img_path}: no mask and no alpha channel; the whole image counts as foreground")
            mask_np = np.ones((h, w), dtype=np.float32)
        if (mask_np > mask_threshold).mean() < 1e-3:
            raise SubjectError(f"{mask_candidates[0] if mask_candidates else img_path}: mask is empty "
                               f"(nothing above {mask_threshold}); the mask must be white on the head")
        if "expression" not in par or "head_pose" not in par:
            raise SubjectError(f"{where_p}: needs 'expression' (list of coefficients) and 'head_pose' (4x4)")
        try:
            expr = torch.tensor(np.asarray(par["expression"], dtype=np.float32))
        except (TypeError, ValueError) as exc:
            raise SubjectError(f"{where_p}.expression: expected a list of numbers ({exc})") from exc
        if expr.ndim != 1 or (expression_names is not None and expr.numel() != len(expression_names)):
            n = len(expression_names) if expression_names is not None else "?"
            raise SubjectError(f"{where_p}.expression: has {expr.numel()} coefficients, the head model has {n} "
                               f"({expression_names}); re-track with this head model")
        check_expression(expr, expression_names, f"{where_p}.expression", SubjectError)
        pose = _matrix(par["head_pose"], (4, 4), f"{where_p}.head_pose")
        _check_rigid(pose, f"{where_p}.head_pose", "give the head-to-world rigid transform")
        rgb = torch.from_numpy(rgb_np).permute(2, 0, 1).contiguous()
        mask = torch.from_numpy(np.ascontiguousarray(mask_np, dtype=np.float32))[None]
        if size / max(h, w) > UPSAMPLE_WARN:
            warnings.append(f"{img_path}: {w}x{h} is upsampled {size / max(h, w):.1f}x to image_size={size}; "
                            f"the avatar cannot be sharper than the input: use a larger image or a smaller "
                            f"image_size")
        rgb, mask, K = resize_frame_arrays(rgb, mask, K, size)
        frames.append(Frame(img_path.name, rgb, mask, K, w2c, expr, pose))
    return frames, params_raw


def load_subject(root: str | Path, *, size: int = 128, background: Sequence[float] = (1.0, 1.0, 1.0),
                 max_image_side: int = 8192, mask_threshold: float = 0.5, head_model_version: str | None = None,
                 expression_names: list[str] | None = None, load_eval: bool = True) -> Subject:
    """Load and validate a subject folder; images resized so their long side is ``size``.

    ``head_model_version`` / ``expression_names`` are the running head model's (checked against
    params.json); pass None to skip the check (e.g. when only reading images).
    """
    root = Path(root)
    if not root.is_dir():
        raise SubjectError(f"{root}: subject folder not found (make subjects, or synshot data subject)")
    warnings: list[str] = []
    kw = dict(size=size, background=background, max_side=max_image_side, mask_threshold=mask_threshold,
              warnings=warnings)
    frames, params = _load_frames(root, expression_names=expression_names, **kw)
    params_path = root / "params.json"
    version = params.get("head_model_version")
    if not isinstance(version, str):
        raise SubjectError(f"{params_path}: missing 'head_model_version' (the head model the tracking used)")
    if head_model_version is not None and version != head_model_version:
        raise SubjectError(f"{params_path}: tracked with head model '{version}' but this code has "
                           f"'{head_model_version}'; re-track the subject (or regenerate it with "
                           f"synshot data subject) with the current head model")
    names = params.get("expression_names") or expression_names or []
    if expression_names is not None and params.get("expression_names") not in (None, expression_names):
        raise SubjectError(f"{params_path}: expression_names differ from the head model's {expression_names}; "
                           f"re-track with the current head model")
    identity = params.get("identity")
    if identity is not None and not isinstance(identity, dict):
        raise SubjectError(f"{params_path}: 'identity' must be an object of head-model identity params or null")
    eval_frames: list[Frame] = []
    if load_eval and (root / "eval").is_dir():
        eval_frames, _ = _load_frames(root / "eval", expression_names=expression_names or names, **kw)
    return Subject(root, root.name, version, list(names), identity, frames, eval_frames, warnings)


# ---------------------------------------------------------------------------------------------
# geometry checks


def visible_fraction(points_world: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor, width: int, height: int) -> float:
    """Fraction of points in front of the camera and inside the image."""
    pix, z = project_points(points_world, K, w2c)
    inside = (z > 1e-6) & (pix[:, 0] >= 0) & (pix[:, 0] < width) & (pix[:, 1] >= 0) & (pix[:, 1] < height)
    return float(inside.float().mean())


def check_cameras_see_head(subject: Subject, head_vertices: Sequence[torch.Tensor], min_fraction: float,
                           eval_frames: bool = False) -> None:
    """Raise if a camera sees less than ``min_fraction`` of the posed head-model vertices.

    ``head_vertices[i]`` are frame i's head-model vertices in the head frame (posed here with the
    frame's head_pose).
    """
    frames = subject.eval_frames if eval_frames else subject.frames
    cams = subject.root / ("eval" if eval_frames else "") / "cameras.json"
    for frame, verts in zip(frames, head_vertices):
        world = verts @ frame.head_pose[:3, :3].T + frame.head_pose[:3, 3]
        frac = visible_fraction(world, frame.K, frame.w2c, frame.width, frame.height)
        if frac < min_fraction:
            centre = world.mean(0)
            depth = float((frame.w2c[:3, :3] @ centre + frame.w2c[:3, 3])[2])
            hint = ("the head is behind the camera: w2c is probably camera-to-world; invert it"
                    if depth <= 0 else "check that w2c is world-to-camera in OpenCV convention and K is in pixels")
            raise SubjectError(f"{cams} [{frame.name}]: the camera sees only {100 * frac:.0f}% of the head "
                               f"(need {100 * min_fraction:.0f}%); {hint}")
        if float(frame.mask.mean()) < 0.98:  # a real mask (not the whole-image fallback): check orientation
            agree = mask_agreement(world, frame.K, frame.w2c, frame.mask[0])
            if agree < MIN_MASK_AGREEMENT:
                raise SubjectError(
                    f"{cams} [{frame.name}]: the head projected with this camera lands on the mask for only "
                    f"{100 * agree:.0f}% of its points (need {100 * MIN_MASK_AGREEMENT:.0f}%): the camera does not "
                    f"look at the head the way the image shows it. w2c is probably camera-to-world (invert it) "
                    f"or in OpenGL convention (flip the y and z camera axes); or the entry belongs to another image")
