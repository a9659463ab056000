"""Differentiable 3D Gaussian splatting renderer (gsplat semantics; pure-torch CPU/GPU backend).

``rasterize(...) -> RenderOutput(rgb, alpha, depth)``; see docs/render.md.
"""

from synshot.render.config import RenderConfig
from synshot.render.api import RenderOutput, rasterize, rasterize_torch

__all__ = ["RenderConfig", "RenderOutput", "rasterize", "rasterize_torch"]
