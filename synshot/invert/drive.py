"""Drive an avatar with an expression sequence -> driven.mp4.

    synshot drive runs/tiny/invert/S/avatar.safetensors --expr SEQ.json --out driven.mp4
    synshot drive --subject S --expr subjects/OTHER   # the run's avatar of S; cross-reenactment

``SEQ.json``::

    {"fps": 12, "width": 128, "height": 128,          # optional; default: the avatar's reference view
     "K": 3x3, "w2c": 4x4, "head_pose": 4x4,          # optional defaults for every frame
     "frames": [{"expression": [E numbers] | {"jaw_open": 0.6, ...}, "head_pose": 4x4, "K": .., "w2c": ..}]}

A subject folder as ``--expr`` supplies the expressions, head poses and cameras of its frames (input
frames, then eval/ frames); ``--side-by-side`` puts the source images next to the renders.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path

import torch
from pydantic import Field

from synshot.cli import CheckpointFileError, Command, SynshotError, UsageError, get_logger
from synshot.config import ConfigBase
from synshot.invert.avatar import Avatar, AvatarError, load_avatar
from synshot.invert.checks import check_expression
from synshot.runs import DEFAULT_RUN, avatar_path
from synshot.images import image_grid
from synshot.invert.video import write_mp4


log = get_logger(__name__)


class DriveError(UsageError, ValueError):
    """A driving sequence that cannot be used; names the file/frame and the fix (exit 2)."""


@dataclass
class DriveSequence:
    expressions: torch.Tensor  # (T,E)
    head_poses: torch.Tensor  # (T,4,4)
    K: torch.Tensor  # (T,3,3)
    w2c: torch.Tensor  # (T,4,4)
    width: int
    height: int
    fps: int = 12
    sources: list[torch.Tensor] | None = None  # (3,H,W) per frame for side-by-side


def _expression(value, names: list[str], where: str) -> torch.Tensor:
    if isinstance(value, dict):
        unknown = sorted(set(value) - set(names))
        if unknown:
            raise DriveError(f"{where}: unknown expression names {unknown}; valid: {names}")
        out = torch.zeros(len(names))
        for k, v in value.items():
            try:
                out[names.index(k)] = float(v)
            except (TypeError, ValueError):
                raise DriveError(f"{where}: expression value of '{k}' must be a number, got {v!r}") from None
        check_expression(out, names, f"{where}.expression", DriveError)
        return out
    try:
        out = torch.tensor([float(v) for v in value])
    except (TypeError, ValueError) as exc:
        raise DriveError(f"{where}: expression must be a list of {len(names)} numbers or a name->value object") from exc
    if out.numel() != len(names):
        raise DriveError(f"{where}: {out.numel()} expression coefficients, the avatar's head model has "
                         f"{len(names)} ({names})")
    check_expression(out, names, f"{where}.expression", DriveError)
    return out


def _mat(value, shape, where: str) -> torch.Tensor:
    from synshot.invert.subject import SubjectError, _check_rigid

    try:
        t = torch.tensor(value, dtype=torch.float32)
    except (TypeError, ValueError) as exc:
        raise DriveError(f"{where}: expected a {shape[0]}x{shape[1]} list of numbers ({exc})") from None
    if tuple(t.shape) != shape:
        raise DriveError(f"{where}: expected shape {shape}, got {tuple(t.shape)}")
    if not bool(torch.isfinite(t).all()):
        raise DriveError(f"{where}: contains NaN or infinity")
    try:
        if shape == (4, 4):
            _check_rigid(t, where, "give a rigid transform (w2c: world-to-camera, OpenCV)")
        elif shape == (3, 3) and (t[0, 0] <= 0 or t[1, 1] <= 0 or not torch.allclose(t[2], torch.tensor([0.0, 0.0, 1.0]))):
            raise SubjectError(f"{where}: expected [[fx,0,cx],[0,fy,cy],[0,0,1]] with fx, fy > 0 (pixels)")
    except SubjectError as exc:
        raise DriveError(str(exc)) from None
    return t


def _fps(value, where: str) -> int:
    try:
        fps = float(value)
    except (TypeError, ValueError):
        raise DriveError(f"{where}: fps must be a number, got {value!r}") from None
    if not (fps >= 1 and fps == int(fps) and fps <= 240):
        raise DriveError(f"{where}: fps must be a whole number in [1, 240], got {value!r}")
    return int(fps)


def sequence_from_json(path: Path, avatar: Avatar) -> DriveSequence:
    try:
        data = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise DriveError(f"{path}: cannot read the sequence JSON ({exc})") from exc
    if not isinstance(data, dict) or not isinstance(data.get("frames"), list) or not data["frames"]:
        raise DriveError(f"{path}: expected an object with a non-empty 'frames' list (see synshot/invert/drive.py)")
    ref = avatar.reference
    width, height = int(data.get("width", ref["width"])), int(data.get("height", ref["height"]))
    K0 = _mat(data["K"], (3, 3), f"{path}: K") if "K" in data else ref["K"].float().clone()
    if "K" not in data and (width, height) != (int(ref["width"]), int(ref["height"])):
        K0[0] *= width / int(ref["width"])
        K0[1] *= height / int(ref["height"])
        K0[2] = torch.tensor([0.0, 0.0, 1.0])
    w2c0 = _mat(data["w2c"], (4, 4), f"{path}: w2c") if "w2c" in data else ref["w2c"].float()
    pose0 = _mat(data["head_pose"], (4, 4), f"{path}: head_pose") if "head_pose" in data else ref["head_pose"].float()
    ex, poses, Ks, w2cs = [], [], [], []
    for i, fr in enumerate(data["frames"]):
        where = f"{path}: frames[{i}]"
        if not isinstance(fr, dict) or "expression" not in fr:
            raise DriveError(f"{where}: needs an 'expression'")
        ex.append(_expression(fr["expression"], avatar.expression_names, where))
        poses.append(_mat(fr["head_pose"], (4, 4), f"{where}.head_pose") if "head_pose" in fr else pose0)
        Ks.append(_mat(fr["K"], (3, 3), f"{where}.K") if "K" in fr else K0)
        w2cs.append(_mat(fr["w2c"], (4, 4), f"{where}.w2c") if "w2c" in fr else w2c0)
    if not (0 < width <= 8192 and 0 < height <= 8192):
        raise DriveError(f"{path}: width/height must be in [1, 8192], got {width}x{height}")
    return DriveSequence(torch.stack(ex), torch.stack(poses), torch.stack(Ks), torch.stack(w2cs), width, height,
                         _fps(data.get("fps", 12), f"{path}"))


def sequence_from_subject(path: Path, avatar: Avatar, size: int) -> DriveSequence:
    """Cross-reenactment: expressions, head poses and cameras of another subject's frames."""
    from synshot.invert.subject import load_subject

    from synshot.invert.subject import check_cameras_see_head

    subj = load_subject(path, size=size, head_model_version=avatar.head_model_version,
                        expression_names=avatar.expression_names)
    min_visible = float(avatar.invert_config.get("subject", {}).get("min_head_visible", 0.5))
    check_cameras_see_head(subj, [avatar.head.vertices(f.expression) for f in subj.frames], min_visible)
    if subj.eval_frames:
        check_cameras_see_head(subj, [avatar.head.vertices(f.expression) for f in subj.eval_frames], min_visible,
                               eval_frames=True)
    frames = subj.frames + subj.eval_frames
    sizes = {(f.height, f.width) for f in frames}
    if len(sizes) != 1:
        raise DriveError(f"{path}: frames have different sizes {sorted(sizes)}; use frames of one size")
    h, w = sizes.pop()
    return DriveSequence(torch.stack([f.expression for f in frames]), torch.stack([f.head_pose for f in frames]),
                         torch.stack([f.K for f in frames]), torch.stack([f.w2c for f in frames]), w, h, 4,
                         sources=[f.rgb * f.mask + (1 - f.mask) for f in frames])


def drive(avatar: Avatar, seq: DriveSequence, out: str | Path, side_by_side: bool = False,
          background=(1.0, 1.0, 1.0), backend: str = "auto") -> Path:
    rgb, _ = avatar.render(seq.expressions, seq.head_poses, seq.K, seq.w2c, seq.height, seq.width,
                           background=background, backend=backend)
    if not bool(torch.isfinite(rgb).all()):
        from synshot.cli import NonFiniteError

        raise NonFiniteError(f"{out}: not written, the rendered frames hold NaN/inf (avatar or sequence values "
                             f"out of the prior's range); check the avatar with a plain inversion render")
    frames = list(rgb.cpu())
    if side_by_side and seq.sources is not None:
        frames = [image_grid([[src, r]]) for src, r in zip(seq.sources, frames)]
    return write_mp4(out, frames, fps=seq.fps)


class DriveConfig(ConfigBase):
    """Which avatar to drive, with what, and how to render it."""

    run: str = DEFAULT_RUN  # with ``subject``: drive <run>/invert/<subject>/avatar.safetensors
    avatar: str | None = None  # an avatar file (overrides run + subject)
    subject: str | None = None  # the inverted subject (its folder or name)
    expr: str | None = None  # sequence JSON, or another subject folder (cross-reenactment)
    side_by_side: bool = False  # source frame | render (subject folders)
    size: int | None = Field(None, ge=16)  # image long side for subject folders (default: the avatar's)
    device: str = "cpu"
    ply: str | None = None  # also bake every frame to a world-space 3DGS .ply in this folder (+ frames.json)
    compressed: bool = False  # with ply: also a SuperSplat .compressed.ply per frame
    video: bool = True  # false (with ply): skip the MP4


CLI = Command("drive", "Render an avatar driven by an expression sequence (or another subject's frames).",
              config_cls=DriveConfig, out_help="output MP4 (default: next to the avatar, driven.mp4)",
              example="synshot drive --subject subjects/s3001 --expr subjects/s3002 --side-by-side")
CLI.option("avatar", key="avatar", help="avatar.safetensors from synshot invert")
CLI.option("--avatar", key="avatar", help=argparse.SUPPRESS)  # older spelling
CLI.option("--subject", key="subject", help="drive the run's avatar of this subject")
CLI.option("--expr", key="expr", help="sequence JSON, or another subject folder")
CLI.option("--side-by-side", key="side_by_side", action="store_true", help="source frame | render")
CLI.option("--size", key="size", type=int, help="image long side for subject folders")
CLI.option("--device", key="device", help="cpu or cuda")
CLI.option("--ply", key="ply", help="also bake every frame to a world-space 3DGS .ply in this folder (+ frames.json)")
CLI.option("--compressed", key="compressed", action="store_true", help="with --ply: also SuperSplat .compressed.ply")
CLI.option("--no-video", key="video", action="store_false", help="with --ply: skip the MP4")


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, cfg: DriveConfig) -> int:
    from synshot.invert.subject import SubjectError

    if cfg.avatar is None and cfg.subject is None:
        raise UsageError("which avatar? pass AVATAR (a file) or --subject NAME (its avatar under the run)")
    if cfg.expr is None:
        raise UsageError("no expressions: pass --expr SEQ.json or --expr SUBJECT_DIR")
    avatar_file = Path(cfg.avatar) if cfg.avatar else avatar_path(cfg.run, cfg.subject)
    try:
        avatar = load_avatar(avatar_file, device=cfg.device)
        expr = Path(cfg.expr)
        size = cfg.size or int(avatar.invert_config.get("image_size", avatar.reference["width"]))
        seq = sequence_from_subject(expr, avatar, size) if expr.is_dir() else sequence_from_json(expr, avatar)
        out = Path(args.out) if args.out else avatar_file.parent / "driven.mp4"
        bg = tuple(avatar.invert_config.get("background", (1.0, 1.0, 1.0)))
        if cfg.ply:
            from synshot.view.plyseq import export_ply_sequence

            index = export_ply_sequence(avatar, seq, cfg.ply, compressed=cfg.compressed)
            log.info("%d world-space .ply frames -> %s", seq.expressions.shape[0], index)
        if not (cfg.ply and not cfg.video):
            drive(avatar, seq, out, side_by_side=cfg.side_by_side, background=bg,
                  backend=avatar.invert_config.get("backend", "auto"))
            log.info("%d frames -> %s", seq.expressions.shape[0], out)
    except SynshotError:
        raise
    except AvatarError as exc:
        raise CheckpointFileError(str(exc)) from None
    except (DriveError, SubjectError, ValueError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
