"""Pivotal tuning of the SynShot prior on a few images (paper §4.3; PTI-style, two stages).

Stage 1 (pivot): only the weights of ``E_id`` are optimised (every other weight and buffer stays
bit-identical); ``E_expr`` is frozen and ``z_expr`` comes from the per-image expression maps.
Optional small per-frame camera (se(3)) and expression corrections are optimised alongside.
Stage 2 (pivotal tuning): the quantised identity code from stage 1 is frozen (the pivot) and the
configured modules (default ``D_feat``, ``R_color``, ``R_gauss``, ``D_id``) are tuned around it.

Losses on masked images: L1 + (1 - SSIM) + LPIPS (when a backbone file is configured) + alpha-vs-mask
L1, plus ArcFace identity (1 - cos) and feature matching when an ONNX model is configured.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor, nn

from synshot.invert.arcface import IdentityLoss, crop_resize, load_arcface, square_boxes
from synshot.invert.config import InvertConfig
from synshot.camera import apply_camera_delta, pose_points, project_points
from synshot.cli import get_logger
from synshot.invert.headio import HeadAdapter, atlas_mask
from synshot.invert.subject import Subject
from synshot.invert.unwrap import posed_uv_positions, unwrap_texture


@dataclass
class InversionInputs:
    """Everything stage 1/2 optimise against, on the run's device."""

    tex: Tensor  # (1,3,S,S) unwrapped from the images
    verts: Tensor  # (1,3,S,S) identity's neutral positions
    coverage: Tensor  # (S,S) how well the images cover each texel
    rgb: Tensor  # (N,3,H,W) targets composited on the background
    mask: Tensor  # (N,1,H,W)
    K: Tensor  # (N,3,3)
    w2c: Tensor  # (N,4,4) as given (before refinement)
    head_pose: Tensor  # (N,4,4)
    expression: Tensor  # (N,E) as given
    face_boxes: Tensor  # (N,4) square crops for ArcFace


@dataclass
class StageResult:
    losses: list[float] = field(default_factory=list)
    terms: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device=cuda but CUDA is not available; use device=cpu or device=auto")
    return torch.device(name)


def load_lpips(cfg: InvertConfig, device: torch.device):
    """The configured LPIPS network (loss term when its weight > 0, eval metric always), or None."""
    if cfg.lpips_backbone is None:
        return None
    from synshot.losses import LPIPS

    return LPIPS(cfg.lpips_backbone, net=cfg.lpips_net).to(device)


class Inversion:
    """One subject, one prior: prepares inputs, runs both stages, renders."""

    def __init__(self, cfg: InvertConfig, model: nn.Module, head: HeadAdapter, subject: Subject,
                 device: torch.device | None = None, writer=None, log: Callable[[str], None] | None = None):
        self.cfg = cfg
        self.device = device or resolve_device(cfg.device)
        self.model = model.to(self.device)
        self.model.eval()  # no EMA codebook updates, no dropout: nothing but the optimised weights changes
        self.model.requires_grad_(False)
        self.head = head
        self.subject = subject
        self.writer = writer
        self.log = log or get_logger("invert").info
        self.uv_size = int(model.cfg.uv_size)
        self.bg = torch.tensor(cfg.background, dtype=torch.float32, device=self.device)
        self.lpips = load_lpips(cfg, self.device)
        needs_arc = cfg.weights.id > 0 or cfg.weights.arc_feat > 0
        self.arcface = load_arcface(cfg.arcface_model) if needs_arc or cfg.arcface_model else None
        if self.arcface is not None:
            self.arcface = self.arcface.to(self.device)
        self.id_loss = IdentityLoss(self.arcface) if (self.arcface is not None and needs_arc) else None
        self.inputs = self.prepare()
        n, e = self.inputs.expression.shape
        self.cam_delta = torch.zeros(n, 6, device=self.device, requires_grad=cfg.refine.cameras)
        self.expr_delta = torch.zeros(n, e, device=self.device, requires_grad=cfg.refine.expressions)
        self.q_id: Tensor | None = None  # the pivot, set after stage 1
        self.q_expr: Tensor | None = None  # per input frame, fixed in stage 2

    # -- inputs -----------------------------------------------------------------------------------
    @torch.no_grad()
    def prepare(self) -> InversionInputs:
        """Composite targets, unwrap the texture, build verts from the identity params, face boxes."""
        d, s = self.device, self.uv_size
        batch = {k: v.to(d) for k, v in self.subject.stack().items()}
        rgb = batch["rgb"] * batch["mask"] + self.bg[None, :, None, None] * (1 - batch["mask"])
        neutral = torch.zeros(self.head.num_expressions)
        verts = self.head.uv_maps(neutral, s)["verts"].to(d)  # the identity's neutral shape
        masks = self.head.region_masks(s)
        valid = atlas_mask(masks).to(d)
        pos_world = posed_uv_positions(verts, self.head.exp_maps(batch["expression"].cpu(), s).to(d),
                                       batch["head_pose"])
        fill = self._fill_texture(s).to(d)
        tex, coverage = unwrap_texture(pos_world, valid, rgb, batch["mask"], batch["K"], batch["w2c"],
                                       fill, mask_threshold=self.cfg.subject.mask_threshold)
        boxes = []
        for i in range(rgb.shape[0]):
            pts = pose_points(self.head.face_points(batch["expression"][i].cpu()).to(d), batch["head_pose"][i])
            pix, _ = project_points(pts, batch["K"][i], batch["w2c"][i])
            boxes.append(pix)
        return InversionInputs(tex=tex[None], verts=verts[None], coverage=coverage, rgb=rgb, mask=batch["mask"],
                               K=batch["K"], w2c=batch["w2c"], head_pose=batch["head_pose"],
                               expression=batch["expression"], face_boxes=square_boxes(boxes))

    def _fill_texture(self, s: int) -> Tensor:
        if self.cfg.texture_fill == "mean_texture":
            return self.head.mean_texture(s)
        return torch.full((3, s, s), 0.5)

    # -- forward ----------------------------------------------------------------------------------
    def current_w2c(self) -> Tensor:
        return apply_camera_delta(self.inputs.w2c, self.cam_delta) if self.cfg.refine.cameras else self.inputs.w2c

    def current_expression(self) -> Tensor:
        return self.inputs.expression + self.expr_delta if self.cfg.refine.expressions else self.inputs.expression

    def exp_maps(self, expression: Tensor) -> Tensor:
        """(N,3,S,S) expression maps; differentiable in ``expression`` (head model in torch)."""
        return self.head.exp_maps(expression.cpu(), self.uv_size).to(self.device)

    def encode_identity(self, quantize: bool = True) -> tuple[Tensor, Tensor]:
        """(z_id, q_id) from the current E_id weights."""
        z_id = self.model.encode_identity(self.inputs.tex, self.inputs.verts)
        return z_id, (self.model.quantize_identity(z_id) if quantize else z_id)

    def encode_expression(self, expression: Tensor) -> Tensor:
        return self.model.quantize_expression(self.model.encode_expression(self.exp_maps(expression)))

    def render_codes(self, q_id: Tensor, q_expr: Tensor, head_pose: Tensor, K: Tensor, w2c: Tensor,
                     height: int, width: int) -> tuple[Tensor, Tensor]:
        """Render one view per sample -> rgb (B,3,H,W), alpha (B,1,H,W)."""
        from synshot.model import render_gaussians

        b = q_expr.shape[0]
        decoded = self.model.decode(q_id.expand(b, -1, -1, -1), q_expr)
        gauss = self.model.gaussians(decoded, head_pose)
        rgb, alpha = render_gaussians(gauss, K[:, None], w2c[:, None], height, width,
                                      background=self.bg, backend=self.cfg.backend)
        return rgb[:, 0], alpha[:, 0]

    # -- losses -----------------------------------------------------------------------------------
    def losses(self, rgb: Tensor, alpha: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        from synshot.losses import ssim

        w, inp = self.cfg.weights, self.inputs
        terms: dict[str, Tensor] = {"l1": (rgb - inp.rgb).abs().mean()}
        if w.ssim > 0:
            terms["ssim"] = 1 - ssim(rgb, inp.rgb)
        if w.lpips > 0 and self.lpips is not None:
            terms["lpips"] = self.lpips(rgb, inp.rgb).mean()
        if w.mask > 0:
            terms["mask"] = (alpha - inp.mask).abs().mean()
        if self.id_loss is not None:
            idt = self.id_loss(crop_resize(rgb, inp.face_boxes, background=float(self.bg.mean())))
            terms["id"], terms["arc_feat"] = idt["id"], idt["arc_feat"]
        if self.cfg.refine.cameras:
            r = self.cfg.refine
            rot = self.cam_delta[:, :3] / math.radians(r.camera_sigma_deg)
            trans = self.cam_delta[:, 3:] / r.camera_sigma_m
            terms["camera_reg"] = (rot.pow(2).sum(1) + trans.pow(2).sum(1)).mean()
        if self.cfg.refine.expressions:
            terms["expression_reg"] = self.expr_delta.pow(2).mean()
        total = sum(getattr(w, k) * v for k, v in terms.items())
        return total, terms

    def _set_identity_target(self) -> None:
        if self.id_loss is not None:
            self.id_loss.set_target(crop_resize(self.inputs.rgb, self.inputs.face_boxes,
                                                background=float(self.bg.mean())))

    # -- stages -----------------------------------------------------------------------------------
    def _loop(self, name: str, steps: int, params: list[dict], forward: Callable[[], tuple[Tensor, Tensor]],
              step_offset: int) -> StageResult:
        from tqdm import tqdm

        result = StageResult()
        if steps == 0 or not params:
            return result
        opt = torch.optim.Adam(params)
        start = time.perf_counter()
        bar = tqdm(range(steps), desc=name, disable=not self.cfg.progress, leave=False, dynamic_ncols=True)
        for step in bar:
            rgb, alpha = forward()
            loss, terms = self.losses(rgb, alpha)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            value = float(loss.detach())
            result.losses.append(value)
            result.terms.append({k: float(v.detach()) for k, v in terms.items()})
            bar.set_postfix(loss=f"{value:.4f}")
            if self.writer is not None and (step % self.cfg.log_every == 0 or step == steps - 1):
                self.writer.add_scalar(f"{name}/loss", value, step_offset + step)
                for k, v in result.terms[-1].items():
                    self.writer.add_scalar(f"{name}/{k}", v, step_offset + step)
        bar.close()
        result.seconds = time.perf_counter() - start
        if self.writer is not None:
            self.writer.add_images(f"{name}/render", rgb.detach().clamp(0, 1).cpu(), step_offset + steps - 1)
        return result

    def stage1(self) -> StageResult:
        """Optimise E_id's weights (+ optional camera/expression corrections); then fix the pivot."""
        cfg, inp = self.cfg, self.inputs
        self._set_identity_target()
        self.model.E_id.requires_grad_(True)
        params = [{"params": list(self.model.E_id.parameters()), "lr": cfg.stage1.lr}]
        if cfg.refine.cameras:
            params.append({"params": [self.cam_delta], "lr": cfg.refine.camera_lr})
        if cfg.refine.expressions:
            params.append({"params": [self.expr_delta], "lr": cfg.refine.expression_lr})
        fixed_q_expr = None if cfg.refine.expressions else self.encode_expression(inp.expression).detach()
        h, w = inp.rgb.shape[-2:]

        def forward():
            _, q_id = self.encode_identity(quantize=cfg.stage1.quantize)
            q_expr = fixed_q_expr if fixed_q_expr is not None else self.encode_expression(self.current_expression())
            return self.render_codes(q_id, q_expr, inp.head_pose, inp.K, self.current_w2c(), h, w)

        result = self._loop("stage1", cfg.stage1.steps, params, forward, 0)
        self.model.E_id.requires_grad_(False)
        with torch.no_grad():
            self.q_id = self.encode_identity(quantize=cfg.stage1.quantize)[1].detach()
            self.q_expr = self.encode_expression(self.current_expression()).detach()
        self.cam_delta.requires_grad_(False)
        self.expr_delta.requires_grad_(False)
        return result

    def stage2(self) -> StageResult:
        """Tune the configured modules around the frozen pivot (cameras/expressions stay as refined)."""
        cfg, inp = self.cfg, self.inputs
        if self.q_id is None:
            raise RuntimeError("stage2 needs the pivot: run stage1 first")
        self._set_identity_target()
        modules = [getattr(self.model, name) for name in cfg.stage2.modules]
        for mod in modules:
            mod.requires_grad_(True)
        params = [{"params": [p for mod in modules for p in mod.parameters()], "lr": cfg.stage2.lr}]
        w2c = self.current_w2c().detach()
        h, w = inp.rgb.shape[-2:]

        def forward():
            return self.render_codes(self.q_id, self.q_expr, inp.head_pose, inp.K, w2c, h, w)

        result = self._loop("stage2", cfg.stage2.steps, params, forward, cfg.stage1.steps)
        for mod in modules:
            mod.requires_grad_(False)
        return result

    @torch.no_grad()
    def render_inputs(self) -> tuple[Tensor, Tensor]:
        """The avatar rendered at the (refined) input cameras and expressions."""
        inp = self.inputs
        q_id = self.q_id if self.q_id is not None else self.encode_identity()[1]
        q_expr = self.q_expr if self.q_expr is not None else self.encode_expression(self.current_expression())
        h, w = inp.rgb.shape[-2:]
        return self.render_codes(q_id, q_expr, inp.head_pose, inp.K, self.current_w2c(), h, w)
