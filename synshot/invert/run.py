"""End-to-end inversion of one subject folder: load, validate, two PTI stages, write every output."""

from __future__ import annotations

import json
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from synshot import fsio
from synshot.cli import get_logger
from synshot.config import dump_config
from synshot.invert.avatar import Avatar, save_avatar
from synshot.invert.config import InvertConfig
from synshot.invert.export import (
    eval_metrics,
    export_ply,
    id_distance_metrics,
    peak_memory_mb,
    render_turntable,
    write_comparison,
    write_metrics,
)
from synshot.invert.headio import HeadAdapter
from synshot.invert.pti import Inversion, resolve_device
from synshot.invert.subject import SubjectError, check_cameras_see_head, load_subject
from synshot.priors import describe as describe_prior
from synshot.runs import resolve_prior
from synshot.seeding import seed_everything

_log = get_logger("invert")
from synshot.track.invert_input import discard_tracked_subject, keep_tracked_subject, track_if_needed

OUTPUT_FILES = ("avatar.safetensors", "avatar.ply", "turntable.mp4", "metrics.json", "inputs_vs_renders.png")


def load_prior(path: str | Path, device: torch.device):
    """The exported prior (head-model version checked by load_exported; errors name the file)."""
    from synshot.model import load_exported

    model, model_cfg = load_exported(path, map_location=device)
    return model, model_cfg


def prepare_subject(cfg: InvertConfig, subject_dir: str | Path, head: HeadAdapter | None = None):
    """Load + validate the subject against the running head model (cameras must see the head)."""
    import json

    params_path = Path(subject_dir) / "params.json"
    identity = None
    if params_path.is_file():
        try:
            identity = json.loads(params_path.read_text()).get("identity")
        except (json.JSONDecodeError, AttributeError):
            identity = None  # load_subject reports the problem with the file name
    if head is None:
        try:
            head = HeadAdapter(identity if isinstance(identity, dict) else None, mesh=cfg.head_mesh)
        except ValueError as exc:
            raise SubjectError(f"{params_path}: {exc}") from None
    subject = load_subject(subject_dir, size=cfg.image_size, background=cfg.background,
                           max_image_side=cfg.subject.max_image_side, mask_threshold=cfg.subject.mask_threshold,
                           head_model_version=head.version, expression_names=head.expression_names)
    check_cameras_see_head(subject, [head.vertices(f.expression) for f in subject.frames],
                           cfg.subject.min_head_visible)
    if subject.eval_frames and cfg.subject.check_eval_cameras:
        check_cameras_see_head(subject, [head.vertices(f.expression) for f in subject.eval_frames],
                               cfg.subject.min_head_visible, eval_frames=True)
    return subject, head


def run_inversion(cfg: InvertConfig, subject_dir: str | Path, out_dir: str | Path,
                  log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Invert ``subject_dir`` with the prior ``cfg.ckpt`` (default: the run's) and write the outputs to ``out_dir``."""
    log = log or _log.info
    start = time.perf_counter()
    seed_everything(cfg.seed)
    device = resolve_device(cfg.device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    subject_dir = track_if_needed(subject_dir, out_dir, cfg.track, log=log)
    try:
        prior = resolve_prior(cfg.ckpt, cfg.run)
        log(f"loading {describe_prior(prior)}")
        model, _ = load_prior(prior, device)
        subject, head = prepare_subject(cfg, subject_dir)
        for w in subject.warnings:
            warnings.warn(w, stacklevel=2)
        # every output is written into a staging folder and published as one set: a failed or diverged
        # run leaves the previous outputs untouched, a re-run never leaves stale files beside new ones,
        # and two inversions into one folder are refused (lock)
        with fsio.publish_dir(out_dir, purpose="invert") as out:
            metrics = _invert_into(cfg, subject, head, model, prior, device, out, start, log)
            keep_tracked_subject(subject_dir, out_dir, out)
    except BaseException:
        discard_tracked_subject(subject_dir, out_dir)   # a failed run leaves no hidden tracked subject
        raise
    log(f"done in {metrics['wall_s']:.1f} s: loss {metrics['loss_first']:.4f} -> {metrics['loss_final']:.4f}"
        + (f", eval PSNR (full frame) {metrics['eval_psnr_full']:.2f} dB" if "eval_psnr_full" in metrics else "")
        + f"; outputs in {out_dir}")
    return metrics


def write_refined_cameras(path: Path, frames, w2c: torch.Tensor) -> None:
    """The input cameras after stage 1's corrections, in the subject format (cameras.json) at the
    working resolution: what the avatar was fitted with, and a tracked pose corrected by the prior."""
    path.write_text(json.dumps({"frames": [
        {"file": f.name, "K": f.K.tolist(), "w2c": w.tolist(), "width": f.width, "height": f.height}
        for f, w in zip(frames, w2c.double())]}, indent=1))


def _invert_into(cfg: InvertConfig, subject, head, model, prior, device, out: Path, start: float, log
                 ) -> dict[str, Any]:
    """The two PTI stages and every output file, written into ``out`` (a staging folder)."""
    writer = None
    if cfg.tensorboard:
        from torch.utils.tensorboard import SummaryWriter

        writer = SummaryWriter(str(out / "tb"))
        writer.add_text("config", "```\n" + dump_config(cfg) + "\n```")
    log(f"{subject.name}: {len(subject.frames)} input frames, {len(subject.eval_frames)} eval frames, "
        f"prior {prior} ({sum(model.gaussian_counts().values())} Gaussians), device {device}")
    inv = Inversion(cfg, model, head, subject, device=device, writer=writer, log=log)
    t_prep = time.perf_counter() - start
    s1 = inv.stage1()
    s2 = inv.stage2()
    renders, _ = inv.render_inputs()
    ref = subject.frames[0]
    w2c_refined = inv.current_w2c().detach().cpu()
    avatar = Avatar(model=inv.model, q_id=inv.q_id, identity=head.identity_to_dict(),
                    expression_names=head.expression_names, head_model_version=head.version,
                    reference={"K": ref.K, "w2c": w2c_refined[0], "width": ref.width, "height": ref.height,
                               "head_pose": ref.head_pose, "expression": ref.expression},
                    invert_config=cfg.model_dump(mode="json"), subject=subject.name, _head=head)
    save_avatar(out / "avatar.safetensors", avatar)
    if cfg.output.ply:
        export_ply(avatar, out / "avatar.ply")
    if cfg.output.video:
        render_turntable(avatar, out / "turntable.mp4", cfg.output.turntable_frames, cfg.output.turntable_fps,
                         cfg.output.turntable_degrees, background=cfg.background, backend=cfg.backend)
    metrics: dict[str, Any] = {
        "subject": subject.name, "num_inputs": len(subject.frames), "image_size": cfg.image_size,
        "stage1_steps": cfg.stage1.steps, "stage2_steps": cfg.stage2.steps,
        "stage2_modules": list(cfg.stage2.modules), "device": str(device),
        "loss_first": (s1.losses or s2.losses or [float("nan")])[0],
        "loss_after_stage1": s1.losses[-1] if s1.losses else float("nan"),
        "loss_final": (s2.losses or s1.losses or [float("nan")])[-1],
        "stage1_s": s1.seconds, "stage2_s": s2.seconds, "prepare_s": t_prep,
        "inputs_l1": float((renders - inv.inputs.rgb).abs().mean()),
        "texture_coverage": float(inv.inputs.coverage.mean()),
        "lpips_enabled": inv.lpips is not None, "arcface_enabled": inv.arcface is not None,
    }
    if cfg.refine.cameras:
        write_refined_cameras(out / "cameras_refined.json", subject.frames, w2c_refined)
        metrics["camera_correction_rot_deg"] = float(inv.cam_delta[:, :3].norm(dim=1).max()) * 57.29578
        metrics["camera_correction_trans_m"] = float(inv.cam_delta[:, 3:].norm(dim=1).max())
    eval_t = eval_r = None
    if subject.eval_frames:
        em, eval_r, eval_t = eval_metrics(avatar, subject.eval_frames, cfg.background, cfg.backend,
                                          lpips=inv.lpips, arcface=inv.arcface)
        metrics.update({f"eval_{k}": v for k, v in em.items()})
    metrics.update(id_distance_metrics(renders, inv.inputs.rgb, prefix="inputs_"))
    write_comparison(out / "inputs_vs_renders.png", inv.inputs.rgb.cpu(), renders.cpu(), eval_t, eval_r)
    metrics["wall_s"] = time.perf_counter() - start
    metrics.update(peak_memory_mb(device))
    write_metrics(out / "metrics.json", metrics)
    (out / "invert_config.json").write_text(dump_config(cfg))
    if writer is not None:
        for k, v in metrics.items():
            if isinstance(v, (int, float)) and not isinstance(v, bool):
                writer.add_scalar(f"metrics/{k}", v, 0)
        writer.close()
    return metrics
