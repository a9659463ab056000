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
    are free parameters; no learned prior at all.
    """

    grid_size: int = Field(96, ge=8)  # UV grid over the whole atlas (~ the prior's Gaussian count)
    steps: int = Field(300, ge=0)
    lr_color: float = Field(2e-2, gt=0)
    lr_opacity: float = Field(5e-2, gt=0)
    lr_scale: float = Field(5e-3, gt=0)
    lr_rotation: float = Field(1e-3, gt=0)
    lr_offset: float = Field(1e-4, gt=0)  # metres per step scale (Adam), GaussianAvatars-like
    scale_init_mult: float = Field(1.0, gt=0)
    l1: float = Field(0.8, ge=0)
    ssim: float = Field(0.2, ge=0)
    offset_reg: float = Field(1.0, ge=0)  # L2 on offsets in units of the grid spacing
    seed: int = 0


class EvalConfig(ConfigBase):
    """Held-out subjects x methods (baselines, the full method, ablation priors) -> report.md."""

    subjects: list[str] = ["subjects/*"]  # folders or glob patterns of subject folders with eval/
    prior: str = "runs/export/prior_tiny.safetensors"
    ablations: dict[str, str] = {}  # name -> exported ablation prior, each inverted with the full method
    invert_config: str = "configs/invert/tiny.yaml"
    invert_overrides: list[str] = []
    methods: list[MethodName] = list(ALL_METHODS)
    no_prior: NoPriorConfig = NoPriorConfig()
    out: str = "runs/eval"
    reuse: bool = True  # a method whose result file exists for a subject is not run again
    lpips_backbone: str | None = None  # LPIPS metric backbone (torchvision state dict); None = not reported
    lpips_net: Literal["alex", "vgg"] = "alex"
    arcface_model: str | None = None  # ONNX ArcFace for the identity-cosine metric; None = not reported
    grid_frames: int = Field(4, ge=1)  # eval frames shown per subject in the image grid
