"""Input checks shared by inversion and driving: expressions, camera orientation, image scale.

Why these exist: each problem otherwise surfaces late and misleadingly. A NaN expression makes the
head vertices NaN, which the visibility check reports as "the camera sees 0% of the head"; a
camera-to-world matrix given as world-to-camera often still projects the head into the image (a
mirrored view from the wrong side), so the visibility check passes and minutes of optimisation
produce a bad avatar. Every check raises the caller's error class with the file, the frame and the fix.
"""

from __future__ import annotations

from typing import Sequence

import torch

# The head model's blendshape activations are trained in [0, 1] (synshot.head.sample_expression);
# a tracker may overshoot a little, values far outside are a unit or convention error.
EXPRESSION_RANGE = (-0.5, 1.5)
# Fraction of the posed head-model vertices (those projecting inside the image) that must land on
# the foreground mask. Measured on a synthetic subject (data_tools.subject, seed 2001, 64 px): correct
# cameras 0.95-0.99; camera-to-world given as world-to-camera 0.39 at 12 deg yaw (where 58 % of the head
# is still in the frame, so the visibility check passes) and 0.00 at larger angles; OpenGL axes 0.00.
MIN_MASK_AGREEMENT = 0.7
UPSAMPLE_WARN = 2.0


def check_expression(expr: torch.Tensor, names: Sequence[str] | None, where: str, error: type[Exception]) -> None:
    """Refuse non-finite and out-of-range expression coefficients (each with its own message)."""
    def label(i: int) -> str:
        return f"{names[i]} (#{i})" if names is not None and i < len(names) else f"#{i}"

    bad = (~torch.isfinite(expr)).nonzero().flatten().tolist()
    if bad:
        raise error(f"{where}: expression coefficient(s) {', '.join(label(i) for i in bad[:6])} are NaN/inf; "
                    f"fix the tracking output (every coefficient must be a finite number)")
    lo, hi = EXPRESSION_RANGE
    out = ((expr < lo) | (expr > hi)).nonzero().flatten().tolist()
    if out:
        shown = ", ".join(f"{label(i)}={float(expr[i]):.3g}" for i in out[:6])
        raise error(f"{where}: expression coefficient(s) {shown} outside [{lo}, {hi}] (the head model's "
                    f"activations are in [0, 1]); check the tracker's units/ordering of expression_names")


def mask_agreement(points_world: torch.Tensor, K: torch.Tensor, w2c: torch.Tensor, mask: torch.Tensor,
                   threshold: float = 0.5) -> float:
    """Fraction of the points projecting inside the image (in front of the camera) that fall on the mask."""
    h, w = mask.shape[-2:]
    cam = points_world @ w2c[:3, :3].T + w2c[:3, 3]
    z = cam[:, 2]
    pix = (cam[:, :2] / z.clamp_min(1e-8)[:, None]) @ K[:2, :2].T + K[:2, 2]
    inside = (z > 1e-6) & (pix[:, 0] >= 0) & (pix[:, 0] < w) & (pix[:, 1] >= 0) & (pix[:, 1] < h)
    if not bool(inside.any()):
        return 0.0
    px = pix[inside].floor().long()
    on = mask.reshape(h, w)[px[:, 1], px[:, 0]] > threshold
    return float(on.float().mean())


def require_finite_output(path, what: str, **arrays) -> None:
    """Refuse to write ``path`` when any of ``arrays`` (name -> tensor) holds NaN/inf (exit 4)."""
    from synshot.cli import NonFiniteError

    bad = []
    for name, a in arrays.items():
        if a is None:
            continue
        t = torch.as_tensor(a)
        if t.is_floating_point():
            n = int((~torch.isfinite(t)).sum())
            if n:
                bad.append(f"{name} ({n} of {t.numel()})")
    if bad:
        raise NonFiniteError(f"{path}: not written, the {what} holds NaN/inf in {', '.join(bad)}; the avatar or "
                             f"its prior is damaged or the inversion diverged (lower stage1.lr/stage2.lr)")
