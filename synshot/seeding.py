"""One way to seed every random generator a run uses (python, numpy, torch)."""

from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int, rank: int = 0) -> None:
    """Seed python/numpy/torch from ``seed`` with a per-rank offset (rank 0 of seed 0 is 0).

    Data order is the loader's own business (it has its own seeded stream).
    """
    s = int(seed) * 1000 + int(rank)
    random.seed(s)
    np.random.seed(s % 2**32)
    torch.manual_seed(s)
