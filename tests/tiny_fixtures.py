"""The tiny prior and ray-traced subject the inversion tests share (fixtures in tests/conftest.py)."""

from __future__ import annotations

from pathlib import Path

SIZE = 32
TINY_PRIOR = [
    "uv_size=32", "enc_channels=[8,16]", "dec_channels=[16,8]", "norm_groups=4", "code_dim=8", "codebook_size=32",
    "feature_channels=8", "regressor_hidden=16", "sh_degree=1",
    "parts={face: {grid_size: 32, regions: [face, ears, neck, eyes, mouth]}, scalp: {grid_size: 32, regions: [scalp]}}",
]


def make_tiny_subject(root: Path) -> Path:
    """Seed 7 at 32 px: 3 input frames, 1 novel view x 2 novel expressions."""
    from data_tools.subject import make_subject

    return make_subject(7, root / "s7", size=SIZE, spp=4, eval_views=1, eval_expressions=2, tiny_head=True)


def make_tiny_prior(root: Path) -> Path:
    """An untrained tiny prior (seed 0) exported as a user would get it from `synshot export`."""
    import torch

    from synshot.config import load_config
    from synshot.model import ModelConfig, SynShotPrior, save_exported

    mcfg = load_config(ModelConfig, None, TINY_PRIOR)
    torch.manual_seed(0)
    return save_exported(SynShotPrior(mcfg), mcfg, root / "prior.safetensors")
