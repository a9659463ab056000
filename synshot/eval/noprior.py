"""Baseline (1), "no prior": Gaussians bound to the tracked head mesh, fitted from scratch on the inputs.

This is the GaussianAvatars recipe (Qian et al. 2024) at our scale and in our UV atlas: one
Gaussian per UV grid point of the head model, carried by the mesh (position on the posed surface,
rotation in the local TBN frame), with free per-Gaussian offset, rotation, log-scale, opacity and
colour optimised on the few input images only, with the inversion's loss terms and step budget and
about as many Gaussians as the prior (:func:`resolve_budget`). Novel expressions move the Gaussians with the mesh,
nothing else; there is no learned prior. It answers the question the paper asks: does a synthetic
prior beat fitting the few images directly?
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import torch
from torch import Tensor, nn

from synshot.camera import matrix_to_quat, pose_points, quat_multiply
from synshot.cli import UsageError, get_logger
from synshot.eval.config import NoPriorConfig
from synshot.invert.config import LossWeights
from synshot.invert.headio import HeadAdapter, atlas_mask
from synshot.invert.subject import Frame
from synshot.invert.unwrap import unwrap_texture
from synshot.losses import ssim
from synshot.model.geometry import tbn_frame, uv_derivatives
from synshot.render import rasterize


@dataclass
class SurfaceSamples:
    """Head-frame surface points of one expression at the Gaussians' texels."""

    position: Tensor  # (N, 3)
    frame: Tensor  # (N, 3, 3) TBN columns
    spacing: Tensor  # (N,) grid-neighbour distance in metres


class BoundGaussians(nn.Module):
    """Per-texel Gaussians riding on the head-model surface; all attributes are free parameters."""

    def __init__(self, head: HeadAdapter, cfg: NoPriorConfig, color_init: Tensor | None = None):
        super().__init__()
        self.head, self.cfg = head, cfg
        g = cfg.grid_size
        if g is None or cfg.steps is None:
            raise ValueError("no_prior: resolve grid_size and steps first (resolve_budget)")
        atlas = atlas_mask(head.region_masks(g))
        self.register_buffer("atlas", atlas, persistent=False)
        self.register_buffer("index", atlas.flatten().nonzero().squeeze(1), persistent=False)
        n = int(self.index.numel())
        if n == 0:
            raise ValueError(f"no_prior.grid_size={g}: the head atlas has no texel at this size; use >= 16")
        self._cache: dict[tuple, SurfaceSamples] = {}
        neutral = self.surface(torch.zeros(head.num_expressions))
        colors = color_init.reshape(3, -1).T[self.index] if color_init is not None else torch.full((n, 3), 0.5)
        self.color_logit = nn.Parameter(torch.logit(colors.clamp(0.02, 0.98)))
        self.opacity_logit = nn.Parameter(torch.full((n,), 2.0))
        spacing = neutral.spacing.clamp(1e-4, 2 * float(neutral.spacing.median()))  # seams give outliers
        self.log_scale = nn.Parameter((spacing * cfg.scale_init_mult).log()[:, None].repeat(1, 3))
        self.rotation = nn.Parameter(torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1))
        self.offset = nn.Parameter(torch.zeros(n, 3))
        self.register_buffer("spacing0", spacing.clone(), persistent=False)

    @property
    def num_gaussians(self) -> int:
        return int(self.index.numel())

    @torch.no_grad()
    def surface(self, expression: Tensor) -> SurfaceSamples:
        """Surface samples of ``expression`` (cached: the mesh does not change during fitting)."""
        key = tuple(round(float(x), 6) for x in expression)
        if key not in self._cache:
            maps = self.head.uv_maps(expression.detach().cpu(), self.cfg.grid_size)
            pos = (maps["verts"] + maps["exp"])[None]
            du, dv = uv_derivatives(pos, self.atlas.cpu())
            flat = lambda t: t[0].reshape(3, -1).T[self.index.cpu()]  # noqa: E731
            du_n, dv_n = flat(du), flat(dv)
            spacing = ((du_n.pow(2).sum(-1) + dv_n.pow(2).sum(-1)) * 0.5).sqrt() / self.cfg.grid_size
            self._cache[key] = SurfaceSamples(flat(pos), tbn_frame(du_n, dv_n), spacing)
        return self._cache[key]

    def forward(self, expression: Tensor, head_pose: Tensor) -> dict[str, Tensor]:
        """Gaussian attributes in the world frame for one expression and head pose."""
        dev = self.offset.device
        s = self.surface(expression)
        pos, frame = s.position.to(dev), s.frame.to(dev)
        local = pos + (frame @ self.offset[:, :, None])[..., 0]
        pose = head_pose.to(dev)
        means = pose_points(local, pose)
        base = matrix_to_quat(pose[:3, :3] @ frame)
        quats = quat_multiply(base, nn.functional.normalize(self.rotation, dim=-1))
        return {"means": means, "quats": quats, "scales": self.log_scale.exp(),
                "opacities": torch.sigmoid(self.opacity_logit), "colors": torch.sigmoid(self.color_logit)}

    def render(self, frame: Frame, background: Tensor, backend: str = "auto", with_alpha: bool = False):
        """(3,H,W) render of one frame (and its (1,H,W) alpha with ``with_alpha``)."""
        g = self(frame.expression, frame.head_pose)
        dev = self.offset.device
        out = rasterize(g["means"], g["quats"], g["scales"], g["opacities"], g["colors"],
                        frame.w2c[None].to(dev), frame.K[None].to(dev), frame.width, frame.height,
                        backgrounds=background[None].to(dev), backend=backend)
        rgb = out.rgb[0].permute(2, 0, 1)
        return (rgb, out.alpha[0].permute(2, 0, 1)) if with_alpha else rgb


def composite_target(frame: Frame, background: Tensor) -> Tensor:
    return frame.rgb * frame.mask + background[:, None, None] * (1 - frame.mask)


def initial_colors(head: HeadAdapter, frames: list[Frame], grid_size: int, background: Tensor) -> Tensor:
    """Colours unwrapped from the inputs onto the atlas (same unwrapping the inversion uses)."""
    atlas = atlas_mask(head.region_masks(grid_size))
    pos_world = []
    for f in frames:
        maps = head.uv_maps(f.expression, grid_size)
        pos = (maps["verts"] + maps["exp"]).reshape(3, -1).T
        pos_world.append(pose_points(pos, f.head_pose).T.reshape(3, grid_size, grid_size))
    rgb = torch.stack([composite_target(f, background) for f in frames])
    tex, _ = unwrap_texture(torch.stack(pos_world), atlas, rgb, torch.stack([f.mask for f in frames]),
                            torch.stack([f.K for f in frames]), torch.stack([f.w2c for f in frames]),
                            head.mean_texture(grid_size))
    return tex


class FairnessError(UsageError):
    """A baseline configured outside the fairness rules (Gaussian count, step budget)."""


def atlas_count(head: HeadAdapter, grid_size: int) -> int:
    """Gaussians of a ``grid_size`` UV grid over the head atlas (one per atlas texel)."""
    # the UV atlas belongs to the head model, not to an identity: one count per grid size per process
    if grid_size not in _ATLAS_COUNTS:
        _ATLAS_COUNTS[grid_size] = int(atlas_mask(head.region_masks(grid_size)).sum())
    return _ATLAS_COUNTS[grid_size]


_ATLAS_COUNTS: dict[int, int] = {}


def matching_grid_size(head: HeadAdapter, target: int) -> int:
    """The UV grid size whose atlas Gaussian count is nearest ``target`` (the prior's count)."""
    g0 = max(8, round(64 * (target / max(1, atlas_count(head, 64))) ** 0.5))
    return min(range(max(8, g0 - 3), g0 + 4), key=lambda g: abs(atlas_count(head, g) - target))


def resolve_budget(cfg: NoPriorConfig, head: HeadAdapter, prior_gaussians: int, method_steps: int) -> NoPriorConfig:
    """Fix the baseline's grid to the prior's Gaussian count and its steps to the full method's budget;
    refuse a fixed grid whose count is further than ``max_count_gap`` from the prior's."""
    grid = cfg.grid_size if cfg.grid_size is not None else matching_grid_size(head, prior_gaussians)
    n = atlas_count(head, grid)
    gap = abs(n / prior_gaussians - 1)
    if gap > cfg.max_count_gap:
        raise FairnessError(f"no_prior.grid_size={grid} gives {n} Gaussians, {gap:.0%} away from the prior's "
                         f"{prior_gaussians} (allowed {cfg.max_count_gap:.0%}); leave no_prior.grid_size unset "
                         f"to match it")
    return cfg.model_copy(update={"grid_size": grid, "steps": method_steps if cfg.steps is None else cfg.steps})


def fit_no_prior(head: HeadAdapter, frames: list[Frame], cfg: NoPriorConfig, weights: LossWeights,
                 background=(1.0, 1.0, 1.0), backend: str = "auto", device: str | torch.device = "cpu",
                 log: Callable[[str], None] | None = None) -> tuple[BoundGaussians, dict]:
    """Fit :class:`BoundGaussians` to ``frames`` with the inversion's image loss terms (``weights``:
    L1, D-SSIM, alpha-vs-mask) plus the offset prior; returns the model and a summary."""
    log = log or get_logger("eval").info
    torch.manual_seed(cfg.seed)
    bg = torch.tensor(background, dtype=torch.float32)
    start = time.perf_counter()
    model = BoundGaussians(head, cfg, initial_colors(head, frames, cfg.grid_size, bg)).to(device)
    opt = torch.optim.Adam([
        {"params": [model.color_logit], "lr": cfg.lr_color},
        {"params": [model.opacity_logit], "lr": cfg.lr_opacity},
        {"params": [model.log_scale], "lr": cfg.lr_scale},
        {"params": [model.rotation], "lr": cfg.lr_rotation},
        {"params": [model.offset], "lr": cfg.lr_offset},
    ])
    targets = [composite_target(f, bg).to(device) for f in frames]
    masks = [f.mask.to(device) for f in frames]
    losses: list[float] = []
    for step in range(cfg.steps):
        opt.zero_grad(set_to_none=True)
        total = torch.zeros((), device=device)
        for f, t, m in zip(frames, targets, masks):
            pred, alpha = model.render(f, bg, backend, with_alpha=True)
            loss = weights.l1 * (pred - t).abs().mean()
            if weights.ssim > 0:
                loss = loss + weights.ssim * (1 - ssim(pred[None], t[None]))
            if weights.mask > 0:
                loss = loss + weights.mask * (alpha - m).abs().mean()
            total = total + loss / len(frames)
        reg = (model.offset.pow(2).sum(-1) / model.spacing0.to(device).pow(2)).mean()
        total = total + cfg.offset_reg * reg
        total.backward()
        opt.step()
        losses.append(float(total.detach()))
        if step % 50 == 0 or step == cfg.steps - 1:
            log(f"no-prior step {step + 1}/{cfg.steps} loss {losses[-1]:.4f}")
    summary = {"steps": cfg.steps, "gaussians": model.num_gaussians, "grid_size": cfg.grid_size,
               "fit_s": time.perf_counter() - start,
               "loss_first": losses[0] if losses else None, "loss_final": losses[-1] if losses else None}
    return model, summary


@torch.no_grad()
def render_frames(model: BoundGaussians, frames: list[Frame], background=(1.0, 1.0, 1.0),
                  backend: str = "auto") -> Tensor:
    bg = torch.tensor(background, dtype=torch.float32)
    return torch.stack([model.render(f, bg, backend).cpu() for f in frames])
