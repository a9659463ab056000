"""The silhouette cue: head pose (and hair volume/length) of a photo from its mask alone.

Why: dlib finds no face in strong profiles (our synthetic subjects include a 65 degree profile as one
of their three inputs), but the outline of a head in profile pins its yaw well (nose, chin and the
back of the head are all on it). The identity comes from the photos with landmarks; this fits the
rigid pose by matching a soft silhouette of the posed mesh to the mask.

The soft silhouette splats the mesh's vertices as isotropic Gaussians at a low resolution
(occupancy ``1 - exp(-sum_i g_i)``): differentiable, cheap on a CPU, and blind to occlusion, which a
silhouette does not need. The hair shell is linear in ``hair_volume`` and ``hair_length`` (the head
model adds ``N * thickness(volume)`` and a hang proportional to the length), so three meshes give
the exact shell for any value of both, fitted with the pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from synshot.head import HeadModel, IdentityParams
from synshot.head.template import PART
from synshot.track.config import SilhouetteConfig
from synshot.track.geometry import axis_angle_to_matrix, project


@dataclass
class SilhouetteFit:
    rotation: np.ndarray      # (3, 3) head -> camera
    translation: np.ndarray   # (3,)
    hair_volume: float
    hair_length: float
    iou: float
    loss: float


class HairLinearMesh:
    """Vertices of one identity as an exact linear function of hair volume and length."""

    def __init__(self, head: HeadModel, identity: IdentityParams, n_points: int, seed: int = 0):
        expr = torch.zeros(len(head.expression_names))

        def verts(vol: float, length: float) -> torch.Tensor:
            ident = identity.copy()
            ident.shape = torch.as_tensor(np.asarray(identity.shape, dtype=np.float32))
            ident.features = torch.as_tensor(np.asarray(identity.features, dtype=np.float32))
            ident.hair_volume, ident.hair_length = vol, length
            with torch.no_grad():
                return head.vertices(ident, expr).float()

        base = verts(0.0, 0.0)
        d_vol = verts(1.0, 0.0) - base
        d_len = verts(0.0, 1.0) - base
        keep = np.nonzero((head.template.part != PART["teeth"]) & (head.template.part != PART["tongue"])
                          & (head.template.part != PART["cavity"]))[0]
        rng = np.random.default_rng(seed)
        if len(keep) > n_points:
            keep = np.sort(rng.choice(keep, n_points, replace=False))
        idx = torch.as_tensor(keep)
        self.base, self.d_vol, self.d_len = base[idx], d_vol[idx], d_len[idx]

    def __call__(self, vol: torch.Tensor, length: torch.Tensor) -> torch.Tensor:
        return self.base + vol * self.d_vol + length * self.d_len


def soft_silhouette(px: torch.Tensor, height: int, width: int, sigma: float) -> torch.Tensor:
    """(H, W) occupancy in [0, 1] of points (P, 2) given in raster pixels."""
    ys = torch.arange(height, dtype=px.dtype) + 0.5
    xs = torch.arange(width, dtype=px.dtype) + 0.5
    gy = torch.exp(-((ys[:, None] - px[None, :, 1]) ** 2) / (2 * sigma ** 2))   # (H, P)
    gx = torch.exp(-((xs[:, None] - px[None, :, 0]) ** 2) / (2 * sigma ** 2))   # (W, P)
    density = gy @ gx.T                                                        # separable Gaussian sum
    return 1 - torch.exp(-density)


def facing_penalty(R: torch.Tensor, max_deg: float) -> torch.Tensor:
    """Zero while the head faces the camera within ``max_deg``, then quadratic in the cosine.

    Why: a head's outline barely changes between a profile and the same head turned further away
    (with voluminous hair it is a round blob either way), and the silhouette loss alone has picked
    poses 120 degrees off, showing the back of the head. A photo given to the tracker shows the
    person's face, at most in profile."""
    cos_facing = -R[2, 2]                          # head forward axis towards the camera
    return 0.1 * torch.relu(math.cos(math.radians(max_deg)) - cos_facing) ** 2


def _downsample_mask(mask: np.ndarray, res: int) -> tuple[torch.Tensor, float]:
    h, w = mask.shape
    s = res / max(h, w)
    nh, nw = max(1, round(h * s)), max(1, round(w * s))
    t = torch.nn.functional.interpolate(torch.as_tensor(mask, dtype=torch.float32)[None, None], size=(nh, nw),
                                        mode="area")[0, 0]
    return t, s


def fit_silhouette(mesh: HairLinearMesh, mask: np.ndarray, focal: float, depth_guess: float,
                   cfg: SilhouetteConfig, hair: tuple[float, float] = (0.5, 0.3),
                   init: tuple[np.ndarray, np.ndarray] | None = None, only_init: bool = False,
                   yaw_sign: int = 0) -> SilhouetteFit:
    """Fit head-to-camera pose (+ hair) of one photo to its (H, W) mask in [0, 1] (original pixels).

    Starts from several yaws (``cfg.yaw_inits_deg``) and, if given, from ``init`` (R, t); with
    ``only_init`` just from ``init`` (a local refinement). ``yaw_sign`` (+1: nose towards the image's
    right, -1: left) keeps only the yaw starts on that side."""
    target, s = _downsample_mask(mask, cfg.resolution)
    h, w = target.shape
    H, W = mask.shape
    c = torch.tensor([W / 2 * s, H / 2 * s])
    f = torch.tensor(focal * s)
    sigma = 0.9
    ys, xs = np.nonzero(mask > 0.5)
    if len(xs) == 0:
        raise ValueError("empty mask")
    centroid = np.array([xs.mean() + 0.5, ys.mean() + 0.5])
    base_R = axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0]))

    def run(yaw_deg: float | None, steps: int, state=None):
        if state is None and yaw_deg is None:
            R0 = torch.as_tensor(init[0], dtype=torch.float32)
            rvec = torch.zeros(3, requires_grad=True)
            tvec = torch.tensor(np.asarray(init[1], dtype=np.float32), requires_grad=True)
            hv = torch.tensor(float(hair[0]), requires_grad=True)
            hl = torch.tensor(float(hair[1]), requires_grad=True)
        elif state is None:
            R0 = base_R @ axis_angle_to_matrix(torch.tensor([0.0, math.radians(yaw_deg), 0.0]))
            centre3 = mesh.base.mean(0)
            cam_c = R0 @ centre3
            tx = (centroid[0] - W / 2) * depth_guess / focal - cam_c[0]
            ty = (centroid[1] - H / 2) * depth_guess / focal - cam_c[1]
            rvec = torch.zeros(3, requires_grad=True)
            tvec = torch.tensor([float(tx), float(ty), depth_guess - float(cam_c[2])], requires_grad=True)
            hv = torch.tensor(float(hair[0]), requires_grad=True)
            hl = torch.tensor(float(hair[1]), requires_grad=True)
        else:
            R0, rvec, tvec, hv, hl = state
        opt = torch.optim.Adam([{"params": [rvec], "lr": cfg.lr}, {"params": [tvec], "lr": cfg.lr * 0.02},
                                {"params": [hv, hl], "lr": cfg.lr * 2}])
        loss = torch.tensor(0.0)
        for _ in range(steps):
            opt.zero_grad()
            R = axis_angle_to_matrix(rvec) @ R0
            px = project(mesh(hv.clamp(0, 1), hl.clamp(0, 1)), R, tvec, f, c)
            occ = soft_silhouette(px, h, w, sigma)
            loss = ((occ - target) ** 2).mean() + facing_penalty(R, cfg.max_facing_deg)
            loss.backward()
            opt.step()
        return float(loss.detach()), (R0, rvec, tvec, hv, hl)

    short = max(1, cfg.steps // 3)
    yaws = [y for y in cfg.yaw_inits_deg if yaw_sign == 0 or y * yaw_sign > 0] or list(cfg.yaw_inits_deg)
    starts = ([] if only_init else yaws) + ([None] if init is not None else [])
    trials = [run(y, short) for y in starts]
    best = min(range(len(trials)), key=lambda k: trials[k][0])
    loss, state = run(0.0, cfg.steps, trials[best][1])
    R0, rvec, tvec, hv, hl = state
    with torch.no_grad():
        R = axis_angle_to_matrix(rvec) @ R0
        occ = soft_silhouette(project(mesh(hv.clamp(0, 1), hl.clamp(0, 1)), R, tvec, f, c), h, w, sigma)
        inter = float(torch.minimum(occ, target).sum())
        union = float(torch.maximum(occ, target).sum())
    return SilhouetteFit(R.numpy().astype(np.float64), tvec.detach().numpy().astype(np.float64),
                         float(hv.clamp(0, 1)), float(hl.clamp(0, 1)), inter / max(union, 1e-6), loss)
