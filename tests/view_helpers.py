"""A tiny avatar for the viewer and export tests: a freshly initialised tiny prior's average identity."""

from __future__ import annotations

import torch

from synshot.config import load_config

from tiny_fixtures import TINY_PRIOR  # the tiny prior every inversion test uses


def tiny_prior(seed: int = 0):
    from synshot.model import ModelConfig, SynShotPrior

    cfg = load_config(ModelConfig, None, TINY_PRIOR)
    torch.manual_seed(seed)
    return SynShotPrior(cfg).eval().requires_grad_(False)


def tiny_avatar(seed: int = 0, image_size: int = 64):
    from synshot.view.prior_avatar import average_avatar

    return average_avatar(tiny_prior(seed), mesh="tiny", image_size=image_size)
