"""The prior's own avatar of the average identity: look at an exported prior before any inversion.

``E_id`` encodes the head model's average identity (its neutral position map and mean albedo), the
code is quantised as in stage 1 of the inversion, and the result is an :class:`Avatar` with a frontal
reference camera. ``synshot view --prior FILE`` opens it; the viewer bench and tests use it too.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from synshot.invert.avatar import Avatar

REFERENCE_DISTANCE_M = 0.8  # frontal camera distance (the held-out subjects' input views use 0.7-0.9 m)
HEAD_SIZE_M = 0.30


def frontal_camera(size: int, distance: float = REFERENCE_DISTANCE_M, fill: float = 0.8) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, w2c) looking at the head centre from the front; the head fills ``fill`` of the image."""
    from synshot.camera import look_at_w2c

    target = np.array([0.0, -0.02, 0.0])
    f = fill * size * distance / HEAD_SIZE_M
    K = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]], dtype=torch.float32)
    w2c = torch.as_tensor(np.asarray(look_at_w2c(target + np.array([0.0, 0.0, distance]), target)),
                          dtype=torch.float32)
    return K, w2c


@torch.no_grad()
def average_avatar(model, mesh: str = "default", image_size: int = 256, subject: str = "prior") -> Avatar:
    """An avatar of the head model's average identity decoded by ``model`` (a SynShotPrior, eval mode)."""
    from synshot.invert.headio import HeadAdapter

    head = HeadAdapter(None, mesh=mesh)
    s = model.cfg.uv_size
    e = head.num_expressions
    verts = head.uv_maps(torch.zeros(e), s)["verts"][None]
    tex = head.mean_texture(s)[None]
    dev = next(model.parameters()).device
    z_id = model.E_id(torch.cat([tex * 2 - 1, verts / model.cfg.verts_unit], 1).to(dev))
    q_id = model.quantizer_id(z_id)[0] if model.cfg.vq else z_id
    K, w2c = frontal_camera(image_size)
    reference = {"K": K, "w2c": w2c, "width": image_size, "height": image_size,
                 "head_pose": torch.eye(4), "expression": torch.zeros(e)}
    assert math.isfinite(float(q_id.abs().sum())), "non-finite identity code"
    return Avatar(model=model, q_id=q_id, identity=None, expression_names=list(head.expression_names),
                  head_model_version=head.version, reference=reference,
                  invert_config={"head_mesh": mesh, "image_size": image_size}, subject=subject, _head=head)


def load_prior_avatar(path: str | Path, mesh: str = "default", device: str = "cpu") -> Avatar:
    """:func:`average_avatar` of an exported prior file (``train.export`` / ``save_exported``)."""
    from synshot.model import load_exported

    model, _ = load_exported(path, map_location=device)
    model.eval().requires_grad_(False)
    return average_avatar(model, mesh=mesh, subject=Path(path).stem)
