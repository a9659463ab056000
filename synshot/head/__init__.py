"""Procedural parametric head (no FLAME weights): template mesh with a UV atlas and named regions,
identity (shape, features, age, skin, eyes, hair as a shell), >= 10 expressions, head pose, and
seeded samplers for identities, expressions, poses and cameras. See docs/head.md."""

from synshot.head.config import HeadConfig
from synshot.head.model import HEAD_MODEL_VERSION, HeadMesh, HeadModel, uv_region_masks
from synshot.head.params import (
    EXPRESSION_NAMES,
    FEATURE_NAMES,
    N_SHAPE,
    IdentityParams,
    look_at_w2c,
    sample_cameras,
    sample_expression,
    sample_head_pose,
    sample_identity,
)
from synshot.head.template import PART_NAMES, REGION_NAMES

__all__ = [
    "EXPRESSION_NAMES", "FEATURE_NAMES", "HEAD_MODEL_VERSION", "N_SHAPE", "PART_NAMES", "REGION_NAMES",
    "HeadConfig", "HeadMesh", "HeadModel", "IdentityParams", "look_at_w2c", "sample_cameras",
    "sample_expression", "sample_head_pose", "sample_identity", "uv_region_masks",
]
