"""HeadModel: the public face of the procedural head (UV maps, meshes, region masks)."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from synshot.head.config import HeadConfig
from synshot.head.deform import Deformer
from synshot.head.params import EXPRESSION_NAMES, IdentityParams
from synshot.head.params import sample_cameras as _sample_cameras
from synshot.head.params import sample_expression as _sample_expression
from synshot.head.params import sample_head_pose as _sample_head_pose
from synshot.head.params import sample_identity as _sample_identity
from synshot.head.template import PART_NAMES, REGION_NAMES, Template, build_template
from synshot.head.texture import NoiseBank, synthesize_albedo
from synshot.head.uvraster import UVRaster, gather_uv, rasterize_uv

HEAD_MODEL_VERSION = "synhead-1"


@dataclass
class HeadMesh:
    """A posed head. ``vertices``/``normals`` in the world frame (``head_pose @ x_head``).

    ``uvs`` follow docs/DESIGN.md (v down); UV seams are duplicated vertices. ``albedo`` is the
    sRGB texture (T, T, 3) in [0, 1]; ``regions``/``parts`` index REGION_NAMES/PART_NAMES.
    """

    vertices: torch.Tensor       # (V, 3) float32
    normals: torch.Tensor        # (V, 3) float32
    faces: torch.Tensor          # (F, 3) int64
    uvs: torch.Tensor            # (V, 2) float32
    regions: torch.Tensor        # (V,) int64
    parts: torch.Tensor          # (V,) int64
    albedo: torch.Tensor         # (T, T, 3) float32
    head_pose: torch.Tensor      # (4, 4) float32
    hair_weight: torch.Tensor | None = None   # (V,) 1 on the scalp, tapering to 0 at the hairline; else 0
    hair_length_m: float = 0.0   # length of the fuzz strands the ray tracer adds on the shell (0: none)
    region_names: tuple[str, ...] = REGION_NAMES
    part_names: tuple[str, ...] = PART_NAMES


class RegionMasks(dict):
    """``{region: (S, S) bool}``; an unknown name raises a KeyError listing the valid ones."""

    def __missing__(self, key):
        raise KeyError(f"unknown region '{key}'; regions are {', '.join(REGION_NAMES)}")


def _as_pose(head_pose, dtype, device) -> torch.Tensor:
    if head_pose is None:
        return torch.eye(4, dtype=dtype, device=device)
    T = torch.as_tensor(np.asarray(head_pose) if not isinstance(head_pose, torch.Tensor) else head_pose)
    if tuple(T.shape) != (4, 4):
        raise ValueError(f"head_pose: expected a 4x4 matrix, got shape {tuple(T.shape)}")
    return T.to(dtype=dtype, device=device)


def vertex_normals(P: torch.Tensor, faces: torch.Tensor, weld: torch.Tensor) -> torch.Tensor:
    """Area-weighted normals, shared by coincident seam copies (no shading seams)."""
    v0, v1, v2 = P[faces[:, 0]], P[faces[:, 1]], P[faces[:, 2]]
    fn = torch.cross(v1 - v0, v2 - v0, dim=-1)
    acc = torch.zeros(int(weld.max()) + 1, 3, dtype=P.dtype, device=P.device)
    for k in range(3):
        acc.index_add_(0, weld[faces[:, k]], fn)
    return torch.nn.functional.normalize(acc[weld], dim=-1, eps=1e-12)


def dilate_islands(tex: torch.Tensor, iters: int) -> torch.Tensor:
    """(3, T, T): fill ``iters`` texels around each UV island with the mean of filled neighbours."""
    img = tex[None]
    filled = (img.abs().sum(1, keepdim=True) > 0).float()
    for _ in range(iters):
        s = torch.nn.functional.avg_pool2d(img * filled, 3, stride=1, padding=1)
        n = torch.nn.functional.avg_pool2d(filled, 3, stride=1, padding=1)
        grow = (filled == 0) & (n > 0)
        img = torch.where(grow, s / n.clamp(min=1e-6), img)
        filled = torch.maximum(filled, grow.float())
    return img[0]


class HeadModel:
    """Procedural parametric head; differentiable in shape (identity) and expression parameters."""

    expression_names: list[str] = list(EXPRESSION_NAMES)
    region_names: tuple[str, ...] = REGION_NAMES

    def __init__(self, cfg: HeadConfig | None = None, device: torch.device | str = "cpu") -> None:
        self.cfg = cfg or HeadConfig()
        self.device = torch.device(device)
        self.template: Template = build_template(self.cfg)
        self.deformer = Deformer(self.template, self.device)
        t = self.template
        self.faces = torch.as_tensor(t.faces, device=self.device)
        self.weld = torch.as_tensor(t.weld, device=self.device)
        self.uvs = torch.as_tensor(t.uv, dtype=torch.float32, device=self.device)
        self.regions = torch.as_tensor(t.region, device=self.device)
        self.parts = torch.as_tensor(t.part, device=self.device)
        r = np.clip(t.scalp_r, 0, 1)
        w = np.where(t.scalp_r >= 0, 1 - np.clip((r - 0.8) / 0.2, 0, 1) ** 2, 0.0)
        self.hair_weight = torch.as_tensor(w, dtype=torch.float32, device=self.device)
        self._rasters: dict[int, UVRaster] = {}
        self._texel_attrs: dict[int, dict[str, np.ndarray]] = {}
        self._tex_cache: dict[tuple[str, int, int], torch.Tensor] = {}
        self._banks: dict[int, NoiseBank] = {}

    @property
    def n_verts(self) -> int:
        return self.template.n_verts

    # ---- UV space -------------------------------------------------------------------------
    def raster(self, size: int) -> UVRaster:
        if size not in self._rasters:
            self._rasters[size] = rasterize_uv(self.template.uv, self.template.faces, size)
        return self._rasters[size]

    def uv_region_masks(self, size: int) -> dict[str, torch.Tensor]:
        """{region name: (S, S) bool}; disjoint; their union is the atlas."""
        r = self.raster(size)
        reg = np.where(r.mask, self.template.region[self.template.faces[r.tri.clip(0), 0]], -1)
        return RegionMasks({name: torch.from_numpy(reg == i) for i, name in enumerate(REGION_NAMES)})

    def _attrs(self, size: int) -> dict[str, np.ndarray]:
        if size not in self._texel_attrs:
            t, r = self.template, self.raster(size)
            m = r.mask
            fidx = t.faces[r.tri[m]]                                    # (N, 3)
            b = r.bary[m].astype(np.float64)[..., None]
            interp = lambda a: (a[fidx] * b).sum(1) if a.ndim == 2 else (a[fidx] * b[..., 0]).sum(1)  # noqa: E731
            phi = np.nan_to_num(t.phi)
            self._texel_attrs[size] = {
                "P0": interp(t.P0), "local": interp(t.local), "scalp_r": interp(t.scalp_r),
                "cosphi": interp(np.cos(phi)), "sinphi": interp(np.sin(phi)),
                "part": t.part[fidx[:, 0]], "side": t.side[fidx[:, 0]], "mask": m,
            }
        return self._texel_attrs[size]

    def texture(self, identity: IdentityParams, size: int, gutter: int = 0) -> torch.Tensor:
        """Albedo UV map (3, S, S) sRGB in [0, 1], 0 outside the atlas (supersampled below 256).

        Cached per (appearance, size): one identity is usually rendered in several expressions.
        ``gutter`` > 0 grows the islands by that many texels (for bilinear lookups in a renderer).
        """
        app = identity.to_dict()
        app.pop("shape"), app.pop("features")
        key = (json.dumps(app, sort_keys=True), size, gutter)
        if key not in self._tex_cache:
            if len(self._tex_cache) >= 4:
                self._tex_cache.pop(next(iter(self._tex_cache)))
            tex = self._texture(identity, size)
            self._tex_cache[key] = dilate_islands(tex, gutter) if gutter else tex
        return self._tex_cache[key].clone()

    def _texture(self, identity: IdentityParams, size: int) -> torch.Tensor:
        syn = size if size >= 256 else 2 * size
        a = self._attrs(syn)
        img = np.zeros((syn, syn, 3), dtype=np.float32)
        bank = self._banks.setdefault(syn, NoiseBank())
        img[a["mask"]] = synthesize_albedo(identity, self.template, a, bank)
        t = torch.from_numpy(img).permute(2, 0, 1)
        if syn != size:
            m = torch.from_numpy(a["mask"].astype(np.float32))[None]
            num = torch.nn.functional.avg_pool2d((t * m)[None], syn // size)[0]
            den = torch.nn.functional.avg_pool2d(m[None], syn // size)[0]
            t = num / den.clamp(min=1e-6)
            t = t * torch.from_numpy(self.raster(size).mask)[None]
        return t.contiguous()

    def _check_expression(self, expression) -> torch.Tensor:
        e = expression if isinstance(expression, torch.Tensor) else torch.as_tensor(np.asarray(expression, dtype=np.float32))
        if e.ndim != 1 or e.numel() != len(self.expression_names):
            raise ValueError(f"expression: expected a vector of {len(self.expression_names)} coefficients "
                             f"({', '.join(self.expression_names)}), got shape {tuple(e.shape)}")
        return e

    def vertices(self, identity: IdentityParams, expression) -> torch.Tensor:
        """Deformed vertices (V, 3) in the head frame (differentiable)."""
        return self.deformer(identity, self._check_expression(expression))

    def uv_maps(self, identity: IdentityParams, expression, size: int) -> dict[str, torch.Tensor]:
        """{"tex", "verts", "exp"}: (3, S, S) float32, head frame, 0 outside the atlas."""
        e = self._check_expression(expression)
        neutral = self.deformer(identity, torch.zeros_like(e))
        posed = self.deformer(identity, e)
        r = self.raster(size)
        return {
            "tex": self.texture(identity, size).to(self.device),
            "verts": gather_uv(neutral, self.faces, r),
            "exp": gather_uv(posed - neutral, self.faces, r),
        }

    # ---- mesh -----------------------------------------------------------------------------
    def mesh(self, identity: IdentityParams, expression, head_pose=None, texture_size: int | None = None) -> HeadMesh:
        """Posed mesh with albedo texture, for the ray tracer and the inversion."""
        P = self.vertices(identity, expression)
        T = _as_pose(head_pose, P.dtype, P.device)
        Pw = P @ T[:3, :3].T + T[:3, 3]
        tex = self.texture(identity, texture_size or self.cfg.texture_size, gutter=4).to(self.device)
        dens, vol = float(identity.hair_density), float(identity.hair_volume)
        fuzz = 0.0 if dens < 0.5 else dens * (0.004 + 0.012 * vol)
        return HeadMesh(
            vertices=Pw, normals=vertex_normals(Pw, self.faces, self.weld), faces=self.faces, uvs=self.uvs,
            regions=self.regions, parts=self.parts, albedo=tex.permute(1, 2, 0).contiguous(), head_pose=T,
            hair_weight=self.hair_weight, hair_length_m=fuzz,
        )

    # ---- sampling (delegates; kept here so callers need one object) ---------------------------
    @staticmethod
    def sample_identity(rng: np.random.Generator) -> IdentityParams:
        return _sample_identity(rng)

    @staticmethod
    def sample_expression(rng: np.random.Generator) -> torch.Tensor:
        return _sample_expression(rng)

    @staticmethod
    def sample_head_pose(rng: np.random.Generator) -> np.ndarray:
        return _sample_head_pose(rng)

    @staticmethod
    def sample_cameras(rng: np.random.Generator, n_views: int, width: int, height: int, **kw):
        return _sample_cameras(rng, n_views, width, height, **kw)


@lru_cache(maxsize=1)
def _default_model() -> HeadModel:
    return HeadModel(HeadConfig())


def uv_region_masks(size: int) -> dict[str, torch.Tensor]:
    """Region masks of the UV atlas (fixed by HEAD_MODEL_VERSION; same for every HeadConfig)."""
    return RegionMasks({k: v.clone() for k, v in _default_model().uv_region_masks(size).items()})
