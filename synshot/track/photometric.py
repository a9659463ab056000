"""Photometric pose refinement: align the fitted head, rendered, with the photo itself.

Why: 68 dlib landmarks leave a near-frontal head pose several degrees uncertain (the tracking bench's
landmark floor: ~7 degrees even when the face is known exactly), while every pixel of the face
carries pose information the landmarks discard. So each landmark-fitted photo's head-to-camera pose is
refined by analysis by synthesis: the face region of the fitted mesh becomes one small Gaussian per
UV texel, coloured by the head model's albedo with the skin, lip and brow colours read from the photo
at its landmarks (optionally fitted: the face albedo is linear in them), shaded by a per-photo
second-order spherical-harmonics irradiance, rendered with the project's splatting renderer and
compared with the photo under a robust per-pixel loss (hair over the forehead, specular highlights
and the albedo's missing detail are outliers, not signal).

Only the pose, lighting and colours move; identity and expression stay those of the landmark fit,
which explains the landmarks to ~1 px (fitting the shape here too is the natural next step).
A refinement is not kept when it does not lower the loss, rotates the head further than
``max_change_deg``, or makes the detected landmarks fit worse by more than ``max_landmark_drift``
(a pose must still explain them); ``tracking.json`` records the outcome either way.

Experimental and off by default (``photometric.enabled``): with the head model's approximate albedo
and the landmark fit's approximate shape it does not yet improve the pose reliably (docs/tracking.md
has the measurement); the same loop with the true albedo and shape does.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from synshot.head import HeadModel, IdentityParams
from synshot.head.landmarks import landmark_embedding
from synshot.head.model import vertex_normals
from synshot.head.uvraster import gather_uv
from synshot.render import rasterize
from synshot.render.project import sh_basis
from synshot.track.config import PhotometricConfig
from synshot.track.geometry import axis_angle_to_matrix, project, rotation_error_deg

BROWS = np.arange(17, 27)
INNER = np.arange(17, 68)
SH_DC = 0.28209479177387814


@dataclass
class FaceSplats:
    """The face region of one posed head as isotropic Gaussians, one per UV texel (head frame)."""

    means: torch.Tensor      # (N, 3)
    sh: torch.Tensor         # (N, 9) SH basis at the unit normals, for the irradiance
    albedo: torch.Tensor     # (N, 3) sRGB
    scale: float             # Gaussian standard deviation, metres (~ texel spacing)
    landmarks: torch.Tensor  # (68, 3) the landmark points on this mesh (jaw at its nominal place)
    colours: torch.Tensor    # (3, 3) the albedo's skin, lip and hair (brow) colours
    colour_basis: torch.Tensor | None = None  # (3, N, 3): albedo = colour_offset + sum_k basis[k] * colours[k]
    colour_offset: torch.Tensor | None = None  # (N, 3); both only with face_splats(..., colour_basis=True)

    def albedo_with(self, colours: torch.Tensor) -> torch.Tensor:
        """(N, 3) albedo for other (3, 3) colours: the head model's face albedo is linear in them."""
        if self.colour_basis is None:
            raise ValueError("these splats have no colour basis: make them with face_splats(..., colour_basis=True)")
        return self.colour_offset + (self.colour_basis * colours[:, None, :]).sum(0)


@dataclass
class PhotometricResult:
    rotation: np.ndarray     # (3, 3) head -> camera (the input pose when not accepted)
    translation: np.ndarray  # (3,)
    accepted: bool
    loss_before: float       # at the landmark pose, after fitting the lighting alone
    loss_after: float
    change_deg: float        # rotation between the landmark pose and the refined one
    landmark_drift: float    # increase of the inner landmarks' RMSE, in face sizes (nan without landmarks)
    seconds: float

    def record(self) -> dict:
        return {"accepted": self.accepted, "loss_before": round(self.loss_before, 5),
                "loss_after": round(self.loss_after, 5), "rotation_change_deg": round(self.change_deg, 3),
                "landmark_drift": None if math.isnan(self.landmark_drift) else round(self.landmark_drift, 5),
                "seconds": round(self.seconds, 2)}


def _median_colour(rgb: np.ndarray, points: np.ndarray) -> np.ndarray | None:
    h, w = rgb.shape[:2]
    ij = np.round(points - 0.5).astype(int)
    ok = (ij[:, 0] >= 0) & (ij[:, 0] < w) & (ij[:, 1] >= 0) & (ij[:, 1] < h)
    return np.median(rgb[ij[ok, 1], ij[ok, 0]], 0) if ok.sum() >= 3 else None


def appearance_from_photo(identity: IdentityParams, rgb: np.ndarray, landmarks: np.ndarray,
                          skin: np.ndarray | None) -> IdentityParams:
    """``identity`` with skin, lip and hair (= brow) colours read from the photo at its landmarks.

    The lips are sampled halfway between the outer and inner lip contours; the brows on their
    landmarks, inverted through the head model's brow colour (``0.63 x hair + 0.02`` for dark hair).
    Colours stay unchanged where a sample falls outside the photo."""
    out = identity.copy()
    if skin is not None:
        out.skin_color = np.clip(skin, 0, 1).tolist()
    mid = 0.5 * (landmarks[[49, 50, 51, 52, 53, 55, 56, 57, 58, 59]] + landmarks[[61, 61, 62, 63, 63, 65, 65, 66, 67, 67]])
    lip = _median_colour(rgb, mid)
    if lip is not None:
        out.lip_color = np.clip(lip, 0, 1).tolist()
    brow = _median_colour(rgb, landmarks[BROWS])
    if brow is not None:
        out.hair_color = np.clip((brow - 0.02) / 0.63, 0, 0.5).tolist()
    return out


def face_splats(head: HeadModel, identity: IdentityParams, expression: np.ndarray, texture_size: int,
                colour_basis: bool = False) -> FaceSplats:
    """One Gaussian per texel of the face UV region, at the deformed surface, with its albedo and normal;
    with ``colour_basis`` also the albedo's linear basis in its colours (four more texture syntheses,
    needed only to fit the colours)."""
    with torch.no_grad():
        verts = head.vertices(identity, torch.as_tensor(expression, dtype=torch.float32))
        normals = vertex_normals(verts, head.faces, head.weld)
        raster = head.raster(texture_size)
        keep = head.uv_region_masks(texture_size)["face"].reshape(-1) & torch.from_numpy(raster.mask.reshape(-1))
        grid = gather_uv(verts, head.faces, raster)
        means = grid.reshape(3, -1).T[keep]
        n = gather_uv(normals, head.faces, raster).reshape(3, -1).T[keep]
        albedo = head.texture(identity, texture_size).reshape(3, -1).T[keep]
        offset, basis = _colour_basis(head, identity, texture_size, keep) if colour_basis else (None, None)
        step = (grid[:, :, 1:] - grid[:, :, :-1]).norm(dim=0)
        both = torch.from_numpy(raster.mask[:, 1:] & raster.mask[:, :-1])
        spacing = float(step[both].median())
        points = landmark_embedding(head.cfg).points(verts)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-8)
    colours = torch.tensor([identity.skin_color, identity.lip_color, identity.hair_color], dtype=torch.float32)
    return FaceSplats(means.float(), sh_basis(2, n).float(), albedo.float(), 0.75 * spacing, points.float(),
                      colours, basis, offset)


def _colour_basis(head: HeadModel, identity: IdentityParams, size: int, keep: torch.Tensor
                  ) -> tuple[torch.Tensor, torch.Tensor]:
    """Offset (N, 3) and basis (3, N, 3) of the face albedo as a linear function of its skin, lip and
    hair colours (every face-skin operation of ``synshot.head.texture`` scales or mixes them per
    channel). Probed at 0.5 so that no texel clips, and so that the brows take the dark-hair branch."""
    def texture(skin, lip, hair) -> torch.Tensor:
        probe = identity.copy()
        probe.skin_color, probe.lip_color, probe.hair_color = skin, lip, hair
        return head.texture(probe, size).reshape(3, -1).T[keep]

    zero, half = [0.0] * 3, [0.5] * 3
    offset = texture(zero, zero, zero)
    basis = torch.stack([texture(half, zero, zero), texture(zero, half, zero), texture(zero, zero, half)]) - offset
    return offset.float(), (basis / 0.5).float()


def _landmark_rmse(splats: FaceSplats, landmarks: np.ndarray, rvec: torch.Tensor, tvec: torch.Tensor, focal: float,
                   width: int, height: int) -> float:
    """RMSE (pixels) of the inner landmarks projected at pose (rvec, tvec) against the detected ones."""
    with torch.no_grad():
        px = project(splats.landmarks[INNER], axis_angle_to_matrix(rvec), tvec, torch.tensor(float(focal)),
                     torch.tensor([width / 2, height / 2]))
    return float(((px - torch.as_tensor(np.asarray(landmarks)[INNER], dtype=torch.float32)) ** 2).sum(-1).mean().sqrt())


def _blur(img: torch.Tensor, k: int) -> torch.Tensor:
    """(H, W, C) box blur of odd width ``k``: widens the basin of the pose's photometric loss."""
    if k <= 1:
        return img
    return F.avg_pool2d(img.permute(2, 0, 1)[None], k, 1, k // 2, count_include_pad=False)[0].permute(1, 2, 0)


def refine_pose(splats: FaceSplats, rgb: np.ndarray, R: np.ndarray, t: np.ndarray, focal: float,
                face_size: float, cfg: PhotometricConfig, landmarks: np.ndarray | None = None) -> PhotometricResult:
    """Refine one photo's head-to-camera pose (R, t) by the photometric loss; see the module docstring.

    ``landmarks`` (68, 2), the detected points in ``rgb``'s pixels: a refined pose must still explain
    them (its inner points' RMSE may grow by at most ``cfg.max_landmark_drift`` face sizes).

    The photo is worked on at a scale where the face is ``cfg.face_px`` pixels across (at most 1):
    what matters is the face's pixels, and the renderer's cost grows with them."""
    start = time.perf_counter()
    s = min(1.0, cfg.face_px / max(face_size, 1.0))
    h0, w0 = rgb.shape[:2]
    w, h = max(1, round(w0 * s)), max(1, round(h0 * s))
    img = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_AREA) if (w, h) != (w0, h0) else rgb
    target = torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))
    K = torch.tensor([[focal * w / w0, 0, w / 2], [0, focal * h / h0, h / 2], [0, 0, 1.0]])[None]
    rvec0 = torch.tensor(cv2.Rodrigues(np.asarray(R, dtype=np.float64))[0][:, 0], dtype=torch.float32)
    tvec0 = torch.tensor(np.asarray(t), dtype=torch.float32)
    rvec, tvec = rvec0.clone().requires_grad_(True), tvec0.clone().requires_grad_(True)
    light = torch.zeros(9, 3)
    light[0] = 1.0 / SH_DC
    light.requires_grad_(True)
    colours = splats.colours.clone().requires_grad_(cfg.fit_colours)
    n = len(splats.means)
    quats = torch.zeros(n, 4)
    quats[:, 0] = 1
    scales = torch.full((n, 3), splats.scale)
    opacity = torch.full((n,), cfg.opacity)
    bottom = torch.tensor([[0.0, 0.0, 0.0, 1.0]])

    def loss_at() -> torch.Tensor:
        view = torch.cat([torch.cat([axis_angle_to_matrix(rvec), tvec[:, None]], 1), bottom], 0)[None]
        albedo = splats.albedo_with(colours.clamp(0, 1)) if cfg.fit_colours else splats.albedo
        colour = albedo * (splats.sh @ light).clamp_min(0)
        out = rasterize(splats.means, quats, scales, opacity, colour, view, K, w, h, backend="torch")
        alpha = out.alpha[0]
        inside = (alpha > 0.5).float()
        d = (_blur(out.rgb[0], cfg.blur_px) - _blur(target * alpha, cfg.blur_px)).abs().sum(-1, keepdim=True)
        return (d / (d + cfg.robust) * inside).sum() / inside.sum().clamp_min(1.0)

    opt = torch.optim.Adam([{"params": [rvec], "lr": cfg.lr}, {"params": [tvec], "lr": cfg.lr * 0.1},
                            {"params": [light] + ([colours] if cfg.fit_colours else []), "lr": cfg.light_lr}])
    before = after = math.inf
    for step in range(cfg.light_steps + cfg.steps):
        opt.zero_grad()
        loss = loss_at()
        loss.backward()
        if step < cfg.light_steps:           # lighting first: a pose step against wrong shading is noise
            rvec.grad.zero_()
            tvec.grad.zero_()
        if step == cfg.light_steps:
            before = float(loss.detach())
        opt.step()
    with torch.no_grad():
        after = float(loss_at())
        if not cfg.steps:
            before = after
    R_new = axis_angle_to_matrix(rvec.detach()).double().numpy()
    change = rotation_error_deg(R_new, R)
    ok = bool(np.isfinite(after) and after < before and change <= cfg.max_change_deg)
    drift = math.nan
    if landmarks is not None:
        drift = (_landmark_rmse(splats, landmarks, rvec.detach(), tvec.detach(), focal, w0, h0)
                 - _landmark_rmse(splats, landmarks, rvec0, tvec0, focal, w0, h0)) / face_size
        ok = ok and drift <= cfg.max_landmark_drift
    return PhotometricResult(R_new if ok else np.asarray(R, dtype=np.float64),
                             tvec.detach().double().numpy() if ok else np.asarray(t, dtype=np.float64),
                             ok, before, after, change, drift, time.perf_counter() - start)
