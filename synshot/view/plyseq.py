"""Animated exports: a driven sequence baked to world-space 3DGS ``.ply`` files, one per frame.

An avatar's Gaussians ride on the head model's mesh; splat viewers know nothing of that, so each
frame is decoded by the prior (expression -> ``E_expr`` -> decoders -> Gaussians), posed by the
frame's head pose and written as a plain 3DGS ``.ply`` (layout: :mod:`synshot.invert.ply`). The
folder gets an index, ``frames.json``, and is published whole (:func:`synshot.fsio.publish_dir`)::

    OUT/frame_0000.ply ...           standard 3DGS layout, world frame (OpenCV axes), metres
    OUT/frame_0000.compressed.ply    with compressed=True: SuperSplat's chunked 8-11 bit layout
    OUT/frames.json                  {"format", "fps", "files", "compressed_files", "expression_names",
                                      "frames": [{"file", "expression", "head_pose", "K", "w2c", ...}]}

SuperSplat and Brush sort a dropped set of files by their trailing frame number, so the names play in
order there. The compressed form is gsplat's exporter (``gsplat.exporter``, the SuperSplat
``.compressed.ply`` layout: positions/scales 11-10-11 bits and colour+opacity 8 bits per channel
relative to per-256-splat chunk bounds, rotations as smallest-three 10 bits, higher SH 8 bits).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from synshot.cli import UsageError, get_logger
from synshot.invert.avatar import Avatar
from synshot.invert.drive import DriveSequence
from synshot.invert.ply import write_ply

INDEX_NAME = "frames.json"
INDEX_FORMAT = "synshot-ply-sequence-1"
LOG = get_logger(__name__)


class ExportError(UsageError):
    """An export target that cannot be written without losing something; names the folder and the fix."""


def frame_name(i: int, compressed: bool = False) -> str:
    return f"frame_{i:04d}" + (".compressed.ply" if compressed else ".ply")


def write_compressed_ply(path: str | Path, means, quats, scales, opacities, sh) -> Path:
    """SuperSplat ``.compressed.ply`` via gsplat's exporter (activated inputs, like :func:`write_ply`)."""
    from gsplat.exporter import export_splats

    t = {k: torch.as_tensor(np.asarray(v, np.float32)) for k, v in
         dict(means=means, quats=quats, scales=scales, opacities=opacities, sh=sh).items()}
    op = t["opacities"].reshape(-1).clamp(1e-6, 1 - 1e-6)
    sh = t["sh"] if t["sh"].dim() == 3 else t["sh"][:, None, :]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    export_splats(means=t["means"], scales=t["scales"].clamp_min(1e-12).log(),
                  quats=torch.nn.functional.normalize(t["quats"], dim=1), opacities=torch.logit(op),
                  sh0=sh[:, :1], shN=sh[:, 1:] if sh.shape[1] > 1 else sh[:, :0],
                  format="ply_compressed", save_to=str(path))
    return path


def _check_target(out: Path) -> None:
    """Refuse to replace a folder that is not an earlier export (its files would be moved aside)."""
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / INDEX_NAME).is_file())):
        raise ExportError(f"{out}: exists and is not a .ply sequence export (no {INDEX_NAME}); "
                          f"choose another folder or remove it")


@torch.no_grad()
def export_ply_sequence(avatar: Avatar, seq: DriveSequence, out: str | Path, compressed: bool = False,
                        chunk: int = 4) -> Path:
    """Bake every frame of ``seq`` to world space and write ``out/frame_XXXX.ply`` + ``frames.json``."""
    from synshot.fsio import publish_dir

    out = Path(out)
    _check_target(out)
    with publish_dir(out, keep_previous=False, purpose="ply sequence export") as stage:
        frames, files, cfiles = [], [], []
        n_frames = int(seq.expressions.shape[0])
        num_gaussians = 0
        for start in range(0, n_frames, chunk):
            sl = slice(start, start + chunk)
            g = avatar.gaussians(seq.expressions[sl], seq.head_poses[sl])
            for b in range(g.means.shape[0]):
                i = start + b
                arrays = {k: v.cpu() for k, v in g.sample(b).items()}
                num_gaussians = int(arrays["means"].shape[0])
                files.append(write_ply(stage / frame_name(i), **arrays).name)
                if compressed:
                    cfiles.append(write_compressed_ply(stage / frame_name(i, True), **arrays).name)
                frames.append({
                    "file": files[-1], **({"compressed_file": cfiles[-1]} if compressed else {}),
                    "time_s": i / seq.fps,
                    "expression": [round(float(v), 6) for v in seq.expressions[i]],
                    "head_pose": seq.head_poses[i].tolist(), "K": seq.K[i].tolist(), "w2c": seq.w2c[i].tolist(),
                })
            LOG.debug("baked frames %d..%d of %d", start, start + g.means.shape[0] - 1, n_frames)
        index = {
            "format": INDEX_FORMAT, "fps": seq.fps, "num_frames": n_frames, "num_gaussians": num_gaussians,
            "sh_degree": int(avatar.model.cfg.sh_degree), "units": "metres",
            "frame": "world (OpenCV axes: x right, y down, z forward of the reference camera's world)",
            "width": seq.width, "height": seq.height, "subject": avatar.subject,
            "head_model_version": avatar.head_model_version, "expression_names": list(avatar.expression_names),
            "files": files, **({"compressed_files": cfiles} if compressed else {}), "frames": frames,
        }
        (stage / INDEX_NAME).write_text(json.dumps(index, indent=1))
    LOG.info("%d world-space .ply frames (%d Gaussians each%s) -> %s", n_frames, num_gaussians,
             ", + compressed" if compressed else "", out)
    return out / INDEX_NAME


def read_index(path: str | Path) -> dict:
    """The index of an export folder (or its frames.json), with its files checked to exist."""
    path = Path(path)
    index_path = path / INDEX_NAME if path.is_dir() else path
    try:
        index = json.loads(index_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ExportError(f"{index_path}: not a readable {INDEX_NAME} ({exc}); re-run the export") from None
    if index.get("format") != INDEX_FORMAT:
        raise ExportError(f"{index_path}: format {index.get('format')!r}, expected {INDEX_FORMAT!r}")
    missing = [f for f in index["files"] + index.get("compressed_files", []) if not (index_path.parent / f).is_file()]
    if missing:
        raise ExportError(f"{index_path}: frames missing: {missing[:3]}; re-run the export")
    return index
