"""``RenderConfig``: the renderer settings other components embed in their configs."""

from __future__ import annotations

from typing import Literal, Optional

import torch
from pydantic import Field, model_validator

from synshot.config import ConfigBase


class RenderConfig(ConfigBase):
    """Backend choice, tiling and clipping planes, background colour (sRGB in [0, 1])."""

    backend: Literal["auto", "torch", "gsplat"] = "auto"
    tile_size: Optional[int] = Field(None, gt=0, le=64)  # None: backend's choice (speed only)
    near_plane: float = Field(0.01, gt=0.0)
    far_plane: float = Field(100.0, gt=0.0)
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @model_validator(mode="after")
    def _check(self) -> "RenderConfig":
        if self.far_plane <= self.near_plane:
            raise ValueError(f"far_plane ({self.far_plane}) must be greater than near_plane ({self.near_plane})")
        if any(not 0.0 <= c <= 1.0 for c in self.background):
            raise ValueError(f"background must be three values in [0, 1], got {self.background}")
        return self

    def backgrounds(self, num_cameras: int, device=None, dtype=torch.float32) -> torch.Tensor:
        """The background as the (C,3) tensor ``rasterize`` takes."""
        return torch.tensor(self.background, device=device, dtype=dtype).expand(num_cameras, 3).contiguous()

    def rasterize_kwargs(self, num_cameras: int, device=None, dtype=torch.float32) -> dict:
        """Keyword arguments for ``rasterize`` (backgrounds, backend, tile_size, near/far planes)."""
        return dict(
            backgrounds=self.backgrounds(num_cameras, device, dtype), backend=self.backend,
            tile_size=self.tile_size, near_plane=self.near_plane, far_plane=self.far_plane,
        )
