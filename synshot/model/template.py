"""Mean-head UV maps the identity decoder predicts residuals over.

With a template, an untrained prior already places its Gaussians on a plausible head (sensible
nearest-neighbour scales, cheap renders) and ``D_id`` only learns identity-specific residuals, as
GEM's regressors predict residuals over a canonical initialisation.
"""

from __future__ import annotations

import torch
from torch import Tensor


def mean_identity():
    """An 'average' synthetic person: zero shape/feature offsets, mid skin tone, medium hair."""
    from synshot.head import FEATURE_NAMES, N_SHAPE, IdentityParams

    return IdentityParams(
        shape=[0.0] * N_SHAPE, features=[0.0] * len(FEATURE_NAMES), age=0.45,
        skin_color=[0.80, 0.58, 0.45], lip_color=[0.72, 0.40, 0.35], eye_color=[0.35, 0.22, 0.12],
        hair_color=[0.20, 0.13, 0.08], hair_length=0.3, hair_volume=0.4, hair_density=0.9, freckles=0.0,
        texture_seed=0,
    )


def head_template(size: int) -> dict[str, Tensor]:
    """``{"tex": (3,S,S), "verts": (3,S,S)}`` of :func:`mean_identity`, neutral expression."""
    from synshot.head import EXPRESSION_NAMES, HeadModel

    maps = HeadModel().uv_maps(mean_identity(), torch.zeros(len(EXPRESSION_NAMES)), size)
    return {"tex": maps["tex"].float(), "verts": maps["verts"].float()}
