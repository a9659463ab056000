"""The SynShot Gaussian head prior (see docs/model.md and the "Prior" contract in docs/DESIGN.md)."""

from synshot.model.config import HEAD_REGIONS, ModelConfig, PartConfig
from synshot.model.io import ExportError, load_exported, save_exported
from synshot.model.prior import (
    SUBMODULES,
    Decoded,
    GaussianBatch,
    PriorOutput,
    Quantized,
    SynShotPrior,
    render_gaussians,
)

__all__ = [
    "HEAD_REGIONS", "SUBMODULES", "Decoded", "ExportError", "GaussianBatch", "ModelConfig", "PartConfig",
    "PriorOutput", "Quantized", "SynShotPrior", "load_exported", "render_gaussians", "save_exported",
]
