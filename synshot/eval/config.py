"""Typed configuration of the evaluation protocol (configs/eval/*.yaml)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from synshot.config import ConfigBase

MethodName = Literal["no_prior", "prior_only", "stage1_only", "full"]
ALL_METHODS: tuple[str, ...] = ("no_prior", "prior_only", "stage1_only", "full")


class NoPriorConfig(ConfigBase):
    """Baseline (1): Gaussians bound to the head-model surface, fitted from scratch on the inputs.

    The GaussianAvatars recipe at our scale: one Gaussian per UV grid point, positions/rotations
    follow the tracked mesh (TBN frame), per-Gaussian offset, rotation, scale, opacity and colour
    are free parameters; no learned prior. Fair by construction: the same step budget as the full
    method, a Gaussian count within ``max_count_gap`` of the prior's, and the inversion's own
    image loss terms (L1, D-SSIM, alpha-vs-mask with the same weights). Its learning rates are
    tuned on the validation subjects with the same budget as the full method (synshot.eval.tune).
    """

    grid_size: int | None = Field(None, ge=8)  # None = the grid whose Gaussian count is nearest the prior's
    steps: int | None = Field(None, ge=0)  # None = the full method's stage1.steps + stage2.steps
    lr_color: float = Field(2e-2, gt=0)
    lr_opacity: float = Field(5e-2, gt=0)
    lr_scale: float = Field(5e-3, gt=0)
    lr_rotation: float = Field(1e-3, gt=0)
    lr_offset: float = Field(1e-4, gt=0)  # metres per step scale (Adam), GaussianAvatars-like
    scale_init_mult: float = Field(1.0, gt=0)
    offset_reg: float = Field(1.0, ge=0)  # L2 on offsets in units of the grid spacing
    max_count_gap: float = Field(0.10, ge=0)  # |N_baseline / N_prior - 1| allowed
    seed: int = 0


class EvalConfig(ConfigBase):
    """Held-out subjects of one split x methods (baselines, the full method, ablation priors) -> report.md."""

    subjects: list[str] = ["subjects/*"]  # folders or glob patterns of subject folders with eval/
    split: Literal["validation", "test"] = "test"  # reports use test subjects; tuning uses validation ones
    train_identities: int = Field(2000, ge=0)  # identity indices 0..N-1 are training identities (paper: ~2k)
    prior: str = "runs/tiny/prior.safetensors"  # the run layout (synshot.runs): `synshot export runs/tiny`
    ablations: dict[str, str] = {}  # name -> exported ablation prior, each inverted with the full method
    # per ablation: inversion overrides chosen by the same validation search as the main prior, given
    # directly or read from that search's tuning.json (its best trial per ablation)
    ablation_overrides: dict[str, list[str]] = {}
    ablation_tuning: str | None = None
    # training seed -> the main prior retrained with that seed (same data and config), inverted with the full
    # method and the main prior's inversion config: rows "full (training seed N)" (the training-seed spread)
    train_seed_priors: dict[int, str] = {}
    invert_config: str = "configs/invert/tiny.yaml"
    invert_overrides: list[str] = []
    methods: list[MethodName] = list(ALL_METHODS)
    seeds: list[int] = Field([0], min_length=1)  # inversion / fitting seeds of the compared pair (full, no_prior)
    no_prior: NoPriorConfig = NoPriorConfig()
    out: str = "runs/eval"
    reuse: bool = True  # a result whose config digest matches is read, not recomputed (resume)
    lpips_backbone: str | None = None  # LPIPS metric backbone (torchvision state dict); None = column absent
    lpips_net: Literal["alex", "vgg"] = "alex"
    bootstrap_replicates: int = Field(2000, ge=100)
    grid_frames: int = Field(4, ge=1)  # eval frames shown per subject in the image grid
    tile_size: int = Field(128, ge=128)  # pixels per tile in the image grids (upscaled, nearest)
    # Geometry every method is given (docs/evaluation.md): "tracked" = the face tracker fitted to the
    # subject's 3 input images only (synshot.eval.tracked); "oracle" = the generator's true identity,
    # expressions, poses and cameras (measures inversion with perfect tracking).
    geometry: Literal["tracked", "oracle"] = "tracked"
    track_config: str = "configs/track/default.yaml"
    track_overrides: list[str] = []
    tracked_dir: str | None = None  # None = tracked/ beside the subjects' parent folder (shared by demo/eval/tune)
    # with geometry=tracked: also the full method on the oracle geometry, a labelled upper bound, never in the verdict
    oracle_row: bool = False
    # independent (subject, method, seed) runs in parallel processes; None = min(CPUs, runs)
    workers: int | None = Field(None, ge=1)
    threads_per_worker: int | None = Field(None, ge=1)  # None = max(1, CPUs // workers)
