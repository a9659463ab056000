"""Head model configuration (mesh resolution, texture size)."""

from __future__ import annotations

from pydantic import Field, field_validator

from synshot.config import ConfigBase


class HeadConfig(ConfigBase):
    """Resolution of the procedural template. The UV layout and regions do not depend on it."""

    n_phi: int = Field(160, ge=32, description="columns around the head (even)")
    n_scalp_rows: int = Field(40, ge=8, description="rows from crown to hairline")
    n_face_rows: int = Field(96, ge=24, description="rows from hairline to under the chin")
    n_neck_rows: int = Field(14, ge=4, description="rows from under the chin to the neck bottom")
    eye_grid: int = Field(20, ge=8, description="latitude rows per eyeball (longitude = 1.6x)")
    ear_grid: int = Field(16, ge=6, description="rows per ear sheet")
    mouth_grid: int = Field(12, ge=6, description="rows per mouth-interior part")
    texture_size: int = Field(512, ge=64, le=4096, description="albedo texture for the ray tracer")

    @field_validator("n_phi")
    @classmethod
    def _even(cls, v: int) -> int:
        if v % 2:
            raise ValueError("n_phi must be even (the face is centred between two columns)")
        return v

    @classmethod
    def tiny(cls) -> "HeadConfig":
        """Small mesh for tests and the tiny pipeline config (~6k vertices)."""
        return cls(n_phi=96, n_scalp_rows=24, n_face_rows=56, n_neck_rows=8, eye_grid=12,
                   ear_grid=10, mouth_grid=8, texture_size=256)
