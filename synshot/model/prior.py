"""The SynShot prior: dual-branch VQ-VAE in UV space -> part-sampled 3D Gaussians.

``E_id(tex, verts)`` and ``E_expr(exp)`` encode, two EMA quantisers quantise, ``D_feat`` (both codes,
fused by channel concatenation at the latent resolution), ``D_id`` and ``D_expr`` decode, the part
sampler places Gaussians on the *decoded* geometry, ``R_color`` / ``R_gauss`` regress SH colour and
corrections. Submodule names are a contract: the inversion freezes by name, exports use them as
key prefixes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from synshot.model.config import ModelConfig
from synshot.camera import matrix_to_quat, quat_multiply
from synshot.model.nets import MLP, Decoder, Encoder
from synshot.model.sampler import MaskFn, PartSampler
from synshot.model.vq import VectorQuantizer

TemplateMaps = dict[str, Tensor]

SH_C0 = 0.28209479177387814  # Y_0^0; rgb = SH_C0 * dc + 0.5 (3DGS / gsplat convention)

SUBMODULES = ("E_id", "E_expr", "quantizer_id", "quantizer_expr", "D_feat", "D_id", "D_expr", "R_color", "R_gauss")


@dataclass
class Quantized:
    q_id: Tensor  # (B, code_dim, s, s), straight-through
    q_expr: Tensor
    loss: Tensor  # commitment loss of both quantisers (0 without VQ)
    stats: dict[str, Tensor]  # perplexity_id, usage_id, restarted_id, ..._expr
    indices_id: Tensor | None = None  # (B, s, s) code indices (None without VQ)
    indices_expr: Tensor | None = None


@dataclass
class Decoded:
    feat: Tensor  # (B, F, S, S)
    tex: Tensor  # (B, 3, S, S) in [0, 1]
    verts: Tensor  # (B, 3, S, S) metres, head frame, neutral
    exp: Tensor  # (B, 3, S, S) metres, expression offsets


@dataclass
class GaussianBatch:
    """Per-sample Gaussians (same N for every sample), world frame, renderer conventions."""

    means: Tensor  # (B, N, 3) metres
    quats: Tensor  # (B, N, 4) wxyz, unit
    scales: Tensor  # (B, N, 3) linear, metres
    opacities: Tensor  # (B, N) in (0, 1)
    sh: Tensor  # (B, N, (sh_degree + 1) ** 2, 3)
    sh_degree: int
    part_ids: Tensor  # (N,) int64, index into part_names
    part_names: list[str]
    delta_position: Tensor  # (B, N, 3) in units of max_offset (in [-1, 1]), local TBN frame
    delta_log_scale: Tensor  # (B, N, 3)
    delta_rotation: Tensor  # (B, N, 4) unnormalised quaternion correction minus identity

    @property
    def num_gaussians(self) -> int:
        return int(self.means.shape[1])

    def corrections(self) -> dict[str, Tensor]:
        return {"position": self.delta_position, "log_scale": self.delta_log_scale, "rotation": self.delta_rotation}

    def sample(self, b: int) -> dict[str, Tensor]:
        """Sample ``b``'s Gaussians as renderer/.ply arrays."""
        return {"means": self.means[b], "quats": self.quats[b], "scales": self.scales[b],
                "opacities": self.opacities[b], "sh": self.sh[b]}


@dataclass
class PriorOutput:
    decoded: Decoded
    gaussians: GaussianBatch
    quantized: Quantized
    extras: dict[str, Tensor] = field(default_factory=dict)


def _check_maps(name: str, x: Tensor, channels: int, size: int) -> None:
    if x.dim() != 4 or x.shape[1] != channels or x.shape[2] != size or x.shape[3] != size:
        raise ValueError(f"{name}: expected (B, {channels}, {size}, {size}), got {tuple(x.shape)} "
                         f"(model uv_size={size}; resize the maps or use a matching config)")


class IdentityDecoder(nn.Module):
    """``D_id``: decoder whose tex / verts outputs are residuals over a mean-head template.

    tex = sigmoid(logit(template_tex) + out[:3]); verts = template_verts + out[3:] * verts_unit.
    The template is a persistent buffer (saved in exports); all zeros when ``cfg.template`` is off.
    """

    def __init__(self, cfg: ModelConfig, template: TemplateMaps) -> None:
        super().__init__()
        self.net = Decoder(cfg.code_dim, cfg.dec_channels, 6, cfg.norm_groups, cfg.single_layer, out_gain=0.01)
        self.verts_unit = cfg.verts_unit
        s = cfg.uv_size
        for key in ("tex", "verts"):
            if tuple(template[key].shape) != (3, s, s):
                raise ValueError(f"template {key}: expected (3, {s}, {s}), got {tuple(template[key].shape)}")
        tex = template["tex"].float().clamp(0.02, 0.98)
        self.register_buffer("template_tex_logit", torch.log(tex / (1 - tex)))
        self.register_buffer("template_verts", template["verts"].float().clone())

    def forward(self, q_id: Tensor) -> tuple[Tensor, Tensor]:
        out = self.net(q_id)
        tex = torch.sigmoid(self.template_tex_logit + out[:, :3])
        return tex, self.template_verts + out[:, 3:] * self.verts_unit


def _zero_template(size: int) -> TemplateMaps:
    return {"tex": torch.full((3, size, size), 0.5), "verts": torch.zeros(3, size, size)}


class SynShotPrior(nn.Module):
    """The prior. ``mask_fn`` (UV region masks) and ``template`` default to the head model's."""

    def __init__(self, cfg: ModelConfig, mask_fn: MaskFn | None = None, template: TemplateMaps | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        ch, g = cfg.enc_channels, cfg.norm_groups
        self.E_id = Encoder(6, ch, cfg.code_dim, g)
        self.E_expr = Encoder(3, ch, cfg.code_dim, g)
        vq_kw = dict(decay=cfg.ema_decay, eps=cfg.ema_eps, commitment=cfg.commitment,
                     dead_threshold=cfg.dead_code_threshold)
        self.quantizer_id = VectorQuantizer(cfg.codebook_size, cfg.code_dim, seed=cfg.restart_seed, **vq_kw)
        self.quantizer_expr = VectorQuantizer(cfg.codebook_size, cfg.code_dim, seed=cfg.restart_seed + 1, **vq_kw)
        dch = cfg.dec_channels
        self.D_feat = Decoder(2 * cfg.code_dim, dch, cfg.feature_channels, g, cfg.single_layer)
        if template is None:
            if cfg.template:
                from synshot.model.template import head_template

                template = head_template(cfg.uv_size)
            else:
                template = _zero_template(cfg.uv_size)
        self.D_id = IdentityDecoder(cfg, template)
        self.D_expr = Decoder(cfg.code_dim, dch, 3, g, cfg.single_layer, out_gain=0.01)
        self.sampler = PartSampler(cfg, mask_fn)
        n_parts = len(self.sampler.part_names)
        reg_in = cfg.feature_channels + 3 + n_parts  # features, decoded albedo, part one-hot
        self.R_color = MLP(reg_in, cfg.regressor_hidden, cfg.regressor_layers, cfg.num_sh * 3)
        self.R_gauss = MLP(reg_in, cfg.regressor_hidden, cfg.regressor_layers, 3 + 4 + 3 + 1)
        with torch.no_grad():
            self.R_gauss.last.bias[-1] = math.log(cfg.opacity_init / (1 - cfg.opacity_init))

    # -- stages -----------------------------------------------------------------------------------
    def encode_identity(self, tex: Tensor, verts: Tensor) -> Tensor:
        """z_id of (B,3,S,S) albedo in [0,1] and (B,3,S,S) vertex positions in metres (the UV maps)."""
        s = self.cfg.uv_size
        _check_maps("tex", tex, 3, s)
        _check_maps("verts", verts, 3, s)
        return self.E_id(torch.cat([tex * 2 - 1, verts / self.cfg.verts_unit], 1))

    def encode_expression(self, exp: Tensor) -> Tensor:
        """z_expr of (B,3,S,S) expression offset maps in metres."""
        _check_maps("exp", exp, 3, self.cfg.uv_size)
        return self.E_expr(exp / self.cfg.exp_unit)

    def encode(self, tex: Tensor, verts: Tensor, exp: Tensor) -> tuple[Tensor, Tensor]:
        return self.encode_identity(tex, verts), self.encode_expression(exp)

    def quantize_identity(self, z_id: Tensor) -> Tensor:
        """The identity code the decoders see (z_id itself without VQ)."""
        return self.quantizer_id(z_id)[0] if self.cfg.vq else z_id

    def quantize_expression(self, z_expr: Tensor) -> Tensor:
        return self.quantizer_expr(z_expr)[0] if self.cfg.vq else z_expr

    def quantize(self, z_id: Tensor, z_expr: Tensor) -> Quantized:
        if not self.cfg.vq:
            zero = z_id.new_zeros(())
            stats = {f"{k}_{b}": zero.detach() for k in ("perplexity", "usage", "restarted") for b in ("id", "expr")}
            return Quantized(z_id, z_expr, zero, stats)
        q_id, l_id, i_id, s_id = self.quantizer_id(z_id)
        q_ex, l_ex, i_ex, s_ex = self.quantizer_expr(z_expr)
        stats = {f"{k}_id": v for k, v in s_id.items()} | {f"{k}_expr": v for k, v in s_ex.items()}
        return Quantized(q_id, q_ex, l_id + l_ex, stats, i_id, i_ex)

    def decode(self, q_id: Tensor, q_expr: Tensor) -> Decoded:
        feat = self.D_feat(torch.cat([q_id, q_expr], 1))
        tex, verts = self.D_id(q_id)
        exp = self.D_expr(q_expr) * self.cfg.exp_unit
        return Decoded(feat=feat, tex=tex, verts=verts, exp=exp)

    def gaussians(self, decoded: Decoded, head_pose: Tensor) -> GaussianBatch:
        cfg = self.cfg
        b = decoded.feat.shape[0]
        if head_pose.shape != (b, 4, 4):
            raise ValueError(f"head_pose: expected ({b}, 4, 4), got {tuple(head_pose.shape)}")
        pts = self.sampler(decoded.feat, decoded.tex, decoded.verts + decoded.exp)
        n = pts.feat.shape[1]
        onehot = F.one_hot(self.sampler.part_ids, len(self.sampler.part_names)).to(pts.feat)
        x = torch.cat([pts.feat, pts.tex, onehot[None].expand(b, n, -1)], -1)

        sh = self.R_color(x).view(b, n, cfg.num_sh, 3)
        dc = (pts.tex.clamp(1e-3, 1 - 1e-3) - 0.5) / SH_C0  # colour starts at the decoded albedo
        sh = torch.cat([sh[:, :, :1] + dc[:, :, None], sh[:, :, 1:]], 2)

        g = self.R_gauss(x)
        d_pos = torch.tanh(g[..., 0:3])
        d_rot = g[..., 3:7]
        d_ls = torch.tanh(g[..., 7:10] / cfg.max_log_scale) * cfg.max_log_scale
        opac = torch.sigmoid(g[..., 10])

        frame = pts.frame  # (B, N, 3, 3) head frame
        local = pts.position + (frame @ (d_pos * cfg.max_offset)[..., None])[..., 0]
        rot, trans = head_pose[:, None, :3, :3].to(local), head_pose[:, None, :3, 3].to(local)
        means = (rot @ local[..., None])[..., 0] + trans
        identity = torch.tensor([1.0, 0, 0, 0], device=g.device, dtype=g.dtype)
        q_corr = F.normalize(identity + d_rot, dim=-1)
        q_local = quat_multiply(matrix_to_quat(frame), q_corr)
        quats = F.normalize(quat_multiply(matrix_to_quat(head_pose[:, :3, :3].to(g))[:, None], q_local), dim=-1)
        scales = pts.scale[..., None] * torch.exp(d_ls)
        return GaussianBatch(
            means=means, quats=quats, scales=scales, opacities=opac, sh=sh, sh_degree=cfg.sh_degree,
            part_ids=self.sampler.part_ids, part_names=list(self.sampler.part_names),
            delta_position=d_pos, delta_log_scale=d_ls, delta_rotation=d_rot,
        )

    def forward(self, tex: Tensor, verts: Tensor, exp: Tensor, head_pose: Tensor) -> PriorOutput:
        z_id, z_expr = self.encode(tex, verts, exp)
        quantized = self.quantize(z_id, z_expr)
        decoded = self.decode(quantized.q_id, quantized.q_expr)
        return PriorOutput(decoded=decoded, gaussians=self.gaussians(decoded, head_pose), quantized=quantized)

    def gaussian_counts(self) -> dict[str, int]:
        return self.sampler.counts()


def _background(background, b: int, v: int, like: Tensor) -> Tensor:
    bg = torch.as_tensor(background, dtype=like.dtype, device=like.device)
    if bg.dim() == 0:
        bg = bg.expand(3)
    if bg.shape == (3,):
        return bg.expand(b, v, 3)
    if bg.shape == (b, 3):
        return bg[:, None].expand(b, v, 3)
    if bg.shape == (b, v, 3):
        return bg
    raise ValueError(f"background: expected a float, (3,), (B, 3) or (B, V, 3), got {tuple(bg.shape)}")


def render_gaussians(
    gaussians: GaussianBatch,
    K: Tensor,
    w2c: Tensor,
    height: int,
    width: int,
    background=1.0,
    backend: str = "auto",
) -> tuple[Tensor, Tensor]:
    """Render every sample's Gaussians into its ``V`` cameras -> rgb (B,V,3,H,W), alpha (B,V,1,H,W)."""
    from synshot.render import rasterize

    b, v = K.shape[:2]
    if gaussians.means.shape[0] != b or w2c.shape[:2] != (b, v):
        raise ValueError(f"render_gaussians: {gaussians.means.shape[0]} samples of Gaussians, K {tuple(K.shape)}, "
                         f"w2c {tuple(w2c.shape)}; expected K (B,V,3,3) and w2c (B,V,4,4) with the same B")
    bg = _background(background, b, v, gaussians.means)
    rgbs, alphas = [], []
    for i in range(b):
        out = rasterize(
            gaussians.means[i], gaussians.quats[i], gaussians.scales[i], gaussians.opacities[i], gaussians.sh[i],
            w2c[i], K[i], width, height, sh_degree=gaussians.sh_degree, backgrounds=bg[i], backend=backend,
        )
        rgbs.append(out.rgb.permute(0, 3, 1, 2))
        alphas.append(out.alpha.permute(0, 3, 1, 2))
    return torch.stack(rgbs), torch.stack(alphas)
