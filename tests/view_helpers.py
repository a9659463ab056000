"""A tiny avatar for the viewer and export tests: a freshly initialised tiny prior's average identity."""

from __future__ import annotations

import torch

from synshot.config import load_config

TINY_PRIOR = [
    "uv_size=32", "enc_channels=[8,16]", "dec_channels=[16,8]", "norm_groups=4", "code_dim=8", "codebook_size=32",
    "feature_channels=8", "regressor_hidden=16", "sh_degree=1",
    "parts={face: {grid_size: 32, regions: [face, ears, neck, eyes, mouth]}, scalp: {grid_size: 32, regions: [scalp]}}",
]


def tiny_prior(seed: int = 0):
    from synshot.model import ModelConfig, SynShotPrior

    cfg = load_config(ModelConfig, None, TINY_PRIOR)
    torch.manual_seed(seed)
    return SynShotPrior(cfg).eval().requires_grad_(False)


def tiny_avatar(seed: int = 0, image_size: int = 64):
    from synshot.view.prior_avatar import average_avatar

    return average_avatar(tiny_prior(seed), mesh="tiny", image_size=image_size)
