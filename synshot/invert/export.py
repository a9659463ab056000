"""Inversion outputs: avatar.ply (3DGS layout), turntable.mp4, metrics.json, inputs_vs_renders.png."""

from __future__ import annotations

import json
import math
import resource
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from synshot.invert.arcface import ArcFace, cosine_similarity, crop_resize, square_boxes
from synshot.invert.avatar import Avatar
from synshot.invert.checks import require_finite_output
from synshot.camera import orbit_w2c, pose_points, project_points
from synshot.invert.geometry import turntable_angles
from synshot.invert.ply import write_ply
from synshot.invert.subject import Frame
from synshot.images import image_grid, save_png
from synshot.invert.video import write_mp4


def export_ply(avatar: Avatar, path: str | Path) -> Path:
    """The avatar's Gaussians in the neutral expression, in the head frame (identity pose)."""
    e = len(avatar.expression_names)
    g = avatar.gaussians(torch.zeros(1, e), torch.eye(4)[None])
    fields = g.sample(0)
    require_finite_output(path, "avatar's Gaussians", **{k: v for k, v in fields.items() if isinstance(v, Tensor)})
    return write_ply(path, **fields)


def turntable_cameras(avatar: Avatar, frames: int, degrees: float) -> tuple[Tensor, Tensor]:
    """(T,3,3) K and (T,4,4) w2c swinging about the head's vertical axis from the reference view."""
    ref = avatar.reference
    w2c, pose = ref["w2c"].float(), ref["head_pose"].float()
    centre, up = pose[:3, 3], pose[:3, 1]
    mats = torch.stack([orbit_w2c(w2c, centre, up, a) for a in turntable_angles(frames, degrees)])
    return ref["K"].float().expand(frames, 3, 3), mats


def render_turntable(avatar: Avatar, path: str | Path, frames: int, fps: int, degrees: float,
                     background=(1.0, 1.0, 1.0), backend: str = "auto") -> Path:
    K, w2c = turntable_cameras(avatar, frames, degrees)
    e = len(avatar.expression_names)
    poses = avatar.reference["head_pose"].float().expand(frames, 4, 4)
    rgb, _ = avatar.render(torch.zeros(frames, e), poses, K, w2c, int(avatar.reference["height"]),
                           int(avatar.reference["width"]), background=background, backend=backend)
    require_finite_output(path, "turntable render", frames=rgb)
    return write_mp4(path, list(rgb.cpu()), fps=fps)


def face_boxes(avatar: Avatar, frames: list[Frame]) -> Tensor:
    pts = []
    for f in frames:
        world = pose_points(avatar.head.face_points(f.expression), f.head_pose)
        pts.append(project_points(world, f.K, f.w2c)[0])
    return square_boxes(pts)


@torch.no_grad()
def eval_metrics(avatar: Avatar, frames: list[Frame], background, backend: str, lpips=None,
                 arcface: ArcFace | None = None) -> tuple[dict[str, float], Tensor, Tensor]:
    """Image metrics of the avatar against held-out frames (synshot.eval.metrics: the evaluation's
    definitions, full frame on the background and over the head mask), mean over frames."""
    from synshot.eval.metrics import frame_metrics, mean_over_frames

    dev = avatar.device
    rgb_t = torch.stack([f.rgb for f in frames]).to(dev)
    mask = torch.stack([f.mask for f in frames]).to(dev)
    bg = torch.tensor(background, dtype=torch.float32, device=dev)[None, :, None, None]
    target = rgb_t * mask + bg * (1 - mask)
    h, w = target.shape[-2:]
    pred, _ = avatar.render(torch.stack([f.expression for f in frames]), torch.stack([f.head_pose for f in frames]),
                            torch.stack([f.K for f in frames]), torch.stack([f.w2c for f in frames]), h, w,
                            background=tuple(background), backend=backend)
    out: dict[str, float] = mean_over_frames(frame_metrics(pred, target, mask, lpips=lpips))
    out["num_frames"] = len(frames)
    if arcface is not None:
        boxes = face_boxes(avatar, frames).to(dev)
        bgv = float(bg.mean())
        cos = cosine_similarity(arcface, crop_resize(pred, boxes, background=bgv),
                                crop_resize(target, boxes, background=bgv))
        out["id_cosine"] = float(cos.mean())
    out.update(id_distance_metrics(pred, target, face_boxes(avatar, frames)))
    return out, pred.cpu(), target.cpu()


def id_distance_metrics(pred: Tensor, target: Tensor, boxes: Tensor | None = None, prefix: str = "") -> dict[str, Any]:
    """dlib descriptor distance of renders to targets (synshot.faces.metrics): the detected face box of
    the target, else ``boxes`` (the projected head model)."""
    from synshot.faces import id_distance_summary, pair_id_distance

    dists = []
    for k in range(len(pred)):
        d = pair_id_distance(pred[k], target[k])
        if not math.isfinite(d) and boxes is not None:
            d = pair_id_distance(pred[k], target[k], box=boxes[k].tolist())
        dists.append(d)
    return id_distance_summary(dists, prefix)


def peak_memory_mb(device: torch.device | None = None) -> dict[str, float]:
    out = {"peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0}
    if device is not None and device.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return out


def write_metrics(path: str | Path, metrics: dict[str, Any]) -> Path:
    path = Path(path)
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    path.write_text(json.dumps(clean, indent=2, sort_keys=True))
    return path


def write_comparison(path: str | Path, inputs: Tensor, renders: Tensor, eval_targets: Tensor | None = None,
                     eval_renders: Tensor | None = None) -> Path:
    require_finite_output(path, "comparison", renders=renders, eval_renders=eval_renders)
    rows = [list(inputs), list(renders)]
    if eval_targets is not None and eval_renders is not None and len(eval_targets):
        rows += [list(eval_targets), list(eval_renders)]
    return save_png(path, image_grid(rows))
