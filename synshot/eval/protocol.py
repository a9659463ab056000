"""The evaluation protocol: held-out subjects x methods, metrics on novel views x novel expressions.

Methods (all see the same 3 input frames and are scored on the same held-out ``eval/`` frames):
  no_prior     Gaussians bound to the tracked head mesh, fitted from scratch (baseline 1)
  prior_only   the prior's encoder output on the unwrapped inputs, no optimisation (baseline 2)
  stage1_only  pivot search only: E_id optimised, decoders untouched (baseline 3)
  full         stage 1 + stage 2 pivotal tuning (the method)
  ablation:<n> the full method on a prior trained with one of the paper's ablation switches
Each (subject, method) result is a folder with ``result.json`` and ``renders.npy``; with
``reuse`` an existing result is read instead of recomputed, so an interrupted evaluation resumes.
"""

from __future__ import annotations

import glob
import hashlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from synshot.config import dump_config, load_config
from synshot.eval.config import EvalConfig
from synshot.eval.metrics import image_metrics
from synshot.eval.noprior import composite_target, fit_no_prior, render_frames
from synshot.invert.config import InvertConfig
from synshot.invert.subject import Frame, Subject, project_points

PRIOR_METHOD_OVERRIDES: dict[str, list[str]] = {
    "prior_only": ["stage1.steps=0", "stage2.steps=0", "refine.cameras=false"],
    "stage1_only": ["stage2.steps=0"],
    "full": [],
}


@dataclass
class MethodResult:
    subject: str
    method: str
    metrics: dict[str, Any]
    renders: np.ndarray  # (N,H,W,3) uint8 renders of the eval frames


def find_subjects(patterns: list[str]) -> list[Path]:
    """Subject folders matching ``patterns`` that have held-out ``eval/`` frames, sorted."""
    found: list[Path] = []
    for pat in patterns:
        matches = sorted(glob.glob(pat)) or ([pat] if Path(pat).exists() else [])
        found += [Path(m) for m in matches if Path(m).is_dir()]
    subjects = [p for p in dict.fromkeys(found) if (p / "eval").is_dir()]
    if not subjects:
        raise FileNotFoundError(f"no subject folder with eval/ frames matches {patterns}; "
                                f"make some with `make subjects`")
    return subjects


def _to_uint8(images: torch.Tensor) -> np.ndarray:
    return (images.clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255 + 0.5).astype(np.uint8)


class Evaluator:
    """Runs every method on every subject and collects :class:`MethodResult` s."""

    def __init__(self, cfg: EvalConfig, log: Callable[[str], None] = print):
        self.cfg, self.log = cfg, log
        self.out = Path(cfg.out)
        self.lpips = None
        if cfg.lpips_backbone is not None:
            from synshot.losses import LPIPS

            self.lpips = LPIPS(cfg.lpips_backbone, net=cfg.lpips_net)
        from synshot.invert.arcface import load_arcface

        self.arcface = load_arcface(cfg.arcface_model)

    # -- configs ------------------------------------------------------------------------------------
    def invert_config(self, method: str, ckpt: str) -> InvertConfig:
        overrides = list(self.cfg.invert_overrides) + PRIOR_METHOD_OVERRIDES[method] + [
            f"ckpt={ckpt}", "output.video=false", "output.ply=false", "tensorboard=false", "progress=false"]
        return load_config(InvertConfig, self.cfg.invert_config, overrides)

    def result_digest(self, method: str, inv_cfg: InvertConfig) -> str:
        """What a cached result depends on: the method's config and the prior file (size, mtime)."""
        prior = Path(inv_cfg.ckpt)
        stat = prior.stat() if prior.is_file() else None
        parts = [method, dump_config(inv_cfg), dump_config(self.cfg.no_prior) if method == "no_prior" else "",
                 f"{stat.st_size}:{stat.st_mtime_ns}" if stat else "missing"]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()

    # -- metrics ------------------------------------------------------------------------------------
    def score(self, pred: torch.Tensor, frames: list[Frame], head, background) -> dict[str, Any]:
        bg = torch.tensor(background, dtype=torch.float32)
        target = torch.stack([composite_target(f, bg) for f in frames])
        id_cos = None
        if self.arcface is not None:
            from synshot.invert.arcface import cosine_similarity, crop_resize, square_boxes
            from synshot.invert.geometry import pose_points

            boxes = square_boxes([project_points(pose_points(head.face_points(f.expression), f.head_pose),
                                                 f.K, f.w2c)[0] for f in frames])
            bgv = float(bg.mean())

            def id_cos(a, b):
                return cosine_similarity(self.arcface, crop_resize(a, boxes, background=bgv),
                                         crop_resize(b, boxes, background=bgv))
        return image_metrics(pred, target, lpips=self.lpips, identity_cosine=id_cos)

    # -- one (subject, method) ----------------------------------------------------------------------
    def run_one(self, subject_dir: Path, method: str, ckpt: str | None = None) -> MethodResult:
        name = method if ckpt is None else f"ablation:{method}"
        folder = self.out / subject_dir.name / name.replace(":", "_")
        result_file = folder / "result.json"
        inv_method = "full" if ckpt is not None else method
        inv_cfg = self.invert_config("full" if method == "no_prior" else inv_method, ckpt or self.cfg.prior)
        digest = self.result_digest(method, inv_cfg)
        if self.cfg.reuse and result_file.is_file() and (folder / "renders.npy").is_file():
            data = json.loads(result_file.read_text())
            if data.get("digest") == digest:
                return MethodResult(subject_dir.name, name, data["metrics"], np.load(folder / "renders.npy"))
        folder.mkdir(parents=True, exist_ok=True)
        start = time.perf_counter()
        from synshot.invert.run import prepare_subject

        subject, head = prepare_subject(inv_cfg, subject_dir)
        frames = subject.eval_frames
        if method == "no_prior":
            model, summary = fit_no_prior(head, subject.frames, self.cfg.no_prior, inv_cfg.background,
                                          inv_cfg.backend, log=self.log)
            pred = render_frames(model, frames, inv_cfg.background, inv_cfg.backend)
            extra = {"fit": summary}
        else:
            pred, extra = self._invert(inv_cfg, subject_dir, folder, frames)
        metrics = self.score(pred, frames, head, inv_cfg.background)
        metrics["wall_s"] = time.perf_counter() - start
        metrics.update({k: v for k, v in extra.items() if not isinstance(v, dict)})
        renders = _to_uint8(pred)
        np.save(folder / "renders.npy", renders)
        tmp = result_file.with_suffix(".tmp")
        tmp.write_text(json.dumps({"subject": subject_dir.name, "method": name, "metrics": metrics,
                                   "details": extra, "digest": digest}, indent=2, default=float))
        tmp.replace(result_file)
        self.log(f"[eval] {subject_dir.name} {name}: PSNR {metrics['psnr']:.2f} dB, SSIM {metrics['ssim']:.4f}, "
                 f"L1 {metrics['l1']:.4f} ({metrics['wall_s']:.0f} s)")
        return MethodResult(subject_dir.name, name, metrics, renders)

    def _invert(self, inv_cfg: InvertConfig, subject_dir: Path, folder: Path, frames: list[Frame]):
        from synshot.invert.avatar import load_avatar
        from synshot.invert.run import run_inversion

        inv_metrics = run_inversion(inv_cfg, subject_dir, folder / "invert", log=self.log)
        avatar = load_avatar(folder / "invert" / "avatar.safetensors")
        pred, _ = avatar.render(torch.stack([f.expression for f in frames]), torch.stack([f.head_pose for f in frames]),
                                torch.stack([f.K for f in frames]), torch.stack([f.w2c for f in frames]),
                                frames[0].height, frames[0].width, background=tuple(inv_cfg.background),
                                backend=inv_cfg.backend)
        keep = ("loss_first", "loss_final", "stage1_s", "stage2_s", "inputs_l1")
        return pred.cpu(), {k: inv_metrics[k] for k in keep if k in inv_metrics}

    # -- everything ---------------------------------------------------------------------------------
    def run(self) -> tuple[list[MethodResult], dict[str, Subject]]:
        subjects = find_subjects(self.cfg.subjects)
        self.log(f"[eval] {len(subjects)} subjects x {len(self.cfg.methods)} methods "
                 f"+ {len(self.cfg.ablations)} ablation priors -> {self.out}")
        results: list[MethodResult] = []
        loaded: dict[str, Subject] = {}
        for sdir in subjects:
            for method in self.cfg.methods:
                results.append(self.run_one(sdir, method))
            for abl, ckpt in self.cfg.ablations.items():
                if not Path(ckpt).is_file():
                    raise FileNotFoundError(f"ablation '{abl}': prior {ckpt} not found; train and export it "
                                            f"(make eval-ablations) or remove it from ablations")
                results.append(self.run_one(sdir, abl, ckpt))
            from synshot.invert.run import prepare_subject

            loaded[sdir.name] = prepare_subject(self.invert_config("full", self.cfg.prior), sdir)[0]
        return results, loaded
