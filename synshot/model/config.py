"""Typed configuration of the SynShot prior (sizes, VQ, part grids, regressors, ablations).

Presets live in ``configs/model/{tiny,base,paper}.yaml``; ablations are overrides, e.g.
``vq=false``, ``sampling=false``, ``single_layer=true``, ``feature_channels=32``.
"""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator

from synshot.config import ConfigBase

# Region names the head model defines (synshot.head.uv_region_masks); parts select from these.
HEAD_REGIONS = ("face", "scalp", "ears", "neck", "eyes", "mouth")


class PartConfig(ConfigBase):
    """One part of the head sampled on its own UV grid (``grid_size`` x ``grid_size`` candidates)."""

    grid_size: int = Field(gt=1, le=4096)
    regions: list[str] = Field(min_length=1)

    @field_validator("regions")
    @classmethod
    def _known_regions(cls, v: list[str]) -> list[str]:
        bad = [r for r in v if r not in HEAD_REGIONS]
        if bad:
            raise ValueError(f"unknown head region(s) {bad}; valid: {list(HEAD_REGIONS)}")
        return v


def _default_parts() -> dict[str, PartConfig]:
    return {
        "face": PartConfig(grid_size=256, regions=["face", "ears", "neck", "eyes", "mouth"]),
        "scalp": PartConfig(grid_size=704, regions=["scalp"]),
    }


class ModelConfig(ConfigBase):
    """Architecture of the prior. Defaults = ``configs/model/base.yaml`` (one GPU)."""

    # --- UV maps and the conv encoder/decoder -------------------------------------------------
    uv_size: int = Field(256, ge=16, le=2048)  # input maps and decoder output (S)
    enc_channels: list[int] = Field(default_factory=lambda: [32, 64, 128, 256], min_length=1)
    dec_channels: list[int] = Field(default_factory=lambda: [256, 128, 64, 32], min_length=1)
    # The number of down (= up) levels is len(enc_channels); latent size = uv_size / 2**levels.
    norm_groups: int = Field(8, ge=1)
    # Input normalisation: metres per network unit (verts ~0.1 m from the head centre -> ~1).
    verts_unit: float = Field(0.1, gt=0)
    exp_unit: float = Field(0.01, gt=0)
    # D_id predicts residuals over the head model's mean-identity tex/verts maps (synshot.model.template)
    template: bool = True

    # --- vector quantisation -------------------------------------------------------------------
    vq: bool = True  # False = "w/o VQ" ablation: plain auto-encoder, no quantisation
    codebook_size: int = Field(512, ge=2)
    code_dim: int = Field(64, ge=1)  # = latent channels of both encoders
    commitment: float = Field(0.25, ge=0)
    ema_decay: float = Field(0.99, gt=0, lt=1)
    ema_eps: float = Field(1e-5, gt=0)
    dead_code_threshold: float = Field(1e-2, ge=0)  # EMA count below which a code is re-seeded
    restart_seed: int = 0  # seeds the (deterministic) choice of re-seeding vectors

    # --- decoders ------------------------------------------------------------------------------
    feature_channels: int = Field(128, ge=1)  # F of D_feat (paper: 128; ablation: 32)
    single_layer: bool = False  # "Single Layer" ablation: each decoder = upsample + one conv

    # --- part-based sampling -------------------------------------------------------------------
    sampling: bool = True  # False = "No Sampling" ablation: one Gaussian per texel in the atlas
    parts: dict[str, PartConfig] = Field(default_factory=_default_parts)
    scale_init_mult: float = Field(1.0, gt=0)  # initial sigma = mult * grid-neighbour distance
    min_scale: float = Field(1e-4, gt=0)  # metres; floor of the initial scale
    max_init_scale: float = Field(0.02, gt=0)  # metres; cap of the initial scale (bounds early render cost)
    dilate_iters: int = Field(2, ge=0)  # pad decoded maps outside the atlas before sampling

    # --- regressors ----------------------------------------------------------------------------
    sh_degree: int = Field(3, ge=0, le=3)
    regressor_hidden: int = Field(128, ge=1)
    regressor_layers: int = Field(2, ge=1)  # hidden layers of R_color and R_gauss
    max_offset: float = Field(0.01, gt=0)  # metres; |delta position| <= this (tanh bound)
    max_log_scale: float = Field(2.0, gt=0)  # |delta log-scale| <= this (tanh bound)
    opacity_init: float = Field(0.7, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> "ModelConfig":
        levels = len(self.enc_channels)
        if len(self.dec_channels) != levels:
            raise ValueError(
                f"dec_channels has {len(self.dec_channels)} entries but enc_channels has {levels}; "
                "they must match (one entry per down/up level)"
            )
        if self.uv_size % (2**levels):
            raise ValueError(f"uv_size={self.uv_size} must be divisible by 2**len(enc_channels)={2**levels}")
        for name, ch in (("enc_channels", self.enc_channels), ("dec_channels", self.dec_channels)):
            bad = [c for c in ch if c % self.norm_groups]
            if bad:
                raise ValueError(f"{name} {bad} not divisible by norm_groups={self.norm_groups}")
        if self.sampling and not self.parts:
            raise ValueError("parts is empty; give at least one part or set sampling=false")
        return self

    @property
    def latent_size(self) -> int:
        return self.uv_size // (2 ** len(self.enc_channels))

    @property
    def num_sh(self) -> int:
        return (self.sh_degree + 1) ** 2
