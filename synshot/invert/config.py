"""Typed configuration of the few-shot inversion (pivotal tuning), loaded from configs/invert/*.yaml.

Why a config class: step counts, learning rates and loss weights are the knobs the paper leaves
open; they must be visible, overridable from the CLI and stored with every avatar.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator

from synshot.config import ConfigBase
from synshot.track.config import TrackConfig

TUNABLE_MODULES = ("D_feat", "R_color", "R_gauss", "D_id", "D_expr")


class Stage1Config(ConfigBase):
    """Pivot search: only the weights of E_id are optimised."""

    steps: int = Field(300, ge=0)
    lr: float = Field(1e-4, ge=0)
    # Render through the quantiser (straight-through) while searching the pivot, and freeze the
    # quantised code as the pivot (paper). False: search and freeze a continuous z_id (PTI-like).
    quantize: bool = True


class Stage2Config(ConfigBase):
    """Pivotal tuning: z_id frozen, the listed modules tuned around it."""

    steps: int = Field(300, ge=0)
    lr: float = Field(1e-4, ge=0)
    # D_id included: measured better on novel views x expressions (docs/decisions.md); D_expr optional
    modules: list[Literal["D_feat", "R_color", "R_gauss", "D_id", "D_expr"]] = ["D_feat", "R_color", "R_gauss", "D_id"]

    @field_validator("modules")
    @classmethod
    def _unique(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"modules listed twice: {value}")
        return value


class LossWeights(ConfigBase):
    """Inversion loss weights; a weight of 0 switches the term off (and skips its computation)."""

    l1: float = Field(1.0, ge=0)
    ssim: float = Field(0.2, ge=0)
    lpips: float = Field(0.1, ge=0)
    mask: float = Field(0.1, ge=0)  # L1 between rendered alpha and the foreground mask
    id: float = Field(0.1, ge=0)  # ArcFace 1 - cos
    arc_feat: float = Field(0.05, ge=0)  # ArcFace intermediate-layer L1
    camera_reg: float = Field(1e-3, ge=0)  # squared corrections in units of refine.camera_sigma_*
    expression_reg: float = Field(0.1, ge=0)  # L2 on the expression deltas


class RefineConfig(ConfigBase):
    """Small corrections of noisy tracking, optimised during stage 1 only."""

    cameras: bool = True
    camera_lr: float = Field(1e-3, ge=0)
    camera_sigma_deg: float = Field(1.0, gt=0)  # expected tracking error: rotation
    camera_sigma_m: float = Field(0.005, gt=0)  # expected tracking error: camera position
    expressions: bool = False
    expression_lr: float = Field(1e-2, ge=0)


class SubjectConfig(ConfigBase):
    """How subject folders are read (see docs/inversion.md for the format)."""

    max_image_side: int = Field(8192, gt=0)  # larger images are refused (downscale them first)
    min_head_visible: float = Field(0.5, ge=0, le=1)  # fraction of head vertices that must project inside
    # eval/ frames get the same camera checks as the inputs; the evaluation on tracked geometry turns them off:
    # there, a tracked head that misses an eval frame's mask is the tracking error being measured, not a bad file
    check_eval_cameras: bool = True
    mask_threshold: float = Field(0.5, gt=0, lt=1)


class OutputConfig(ConfigBase):
    turntable_frames: int = Field(36, ge=2)
    turntable_fps: int = Field(12, gt=0)
    turntable_degrees: float = Field(60.0, gt=0, le=180)  # sweep +-degrees around the frontal view
    ply: bool = True
    video: bool = True


class InvertConfig(ConfigBase):
    """Everything one inversion run needs besides the subject folder and the prior checkpoint."""

    run: str = "runs/tiny"  # run folder (synshot.runs): its prior is inverted, outputs go to <run>/invert/<subject>
    ckpt: str | None = None  # exported prior; None: the run's prior (synshot.runs.resolve_prior)
    seed: int = 0
    device: Literal["auto", "cpu", "cuda"] = "auto"
    backend: Literal["auto", "torch", "gsplat"] = "auto"
    image_size: int = Field(128, ge=16)  # long side of the images the inversion works on
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    stage1: Stage1Config = Stage1Config()
    stage2: Stage2Config = Stage2Config()
    weights: LossWeights = LossWeights()
    refine: RefineConfig = RefineConfig()
    subject: SubjectConfig = SubjectConfig()
    output: OutputConfig = OutputConfig()
    lpips_backbone: str | None = None  # local torchvision AlexNet/VGG state dict; None = no LPIPS term
    lpips_net: Literal["alex", "vgg"] = "alex"
    arcface_model: str | None = None  # ONNX ArcFace (insightface layout); None = no identity terms
    head_mesh: Literal["default", "tiny"] = "default"  # head-model mesh resolution (tiny: CPU tests)
    texture_fill: Literal["mean_texture", "observed_mean"] = "mean_texture"
    log_every: int = Field(10, gt=0)
    tensorboard: bool = True
    progress: bool = True
    track: TrackConfig = TrackConfig()  # used when the subject folder holds photos only (synshot.track)
