"""Mitsuba 3 path tracer for HeadMesh: environment lighting, textured skin/hair/eyes/teeth.

The scene is built once per (topology, image size) and then refreshed in place through
``mi.traverse`` (vertex buffers, textures, environment map, camera), so the JIT variants do not
recompile kernels between samples. Mask = film alpha with emitters hidden (coverage, anti-aliased).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Literal, Sequence

import numpy as np
import torch
from pydantic import Field

from synshot.config import ConfigBase
from synshot.head.model import HeadMesh
from synshot.head.template import PART
from synshot.raytrace.lighting import environment_map

LLVM_PATH = "/usr/lib/x86_64-linux-gnu/libLLVM.so.19.1"
RENDERER_NAME = "mitsuba3-path"

# material groups: name -> (parts, bsdf roughness alpha)
MATERIALS: dict[str, tuple[tuple[int, ...], float]] = {
    "skin": ((PART["skin"], PART["ear"]), 0.38),
    "hair": ((PART["hair"],), 0.30),
    "eye": ((PART["eye"],), 0.04),
    "teeth": ((PART["teeth"],), 0.15),
    "soft": ((PART["tongue"], PART["cavity"]), 0.30),
}


class RayTraceConfig(ConfigBase):
    """Ground-truth renderer settings."""

    variant: Literal["auto", "llvm_ad_rgb", "cuda_ad_rgb", "scalar_rgb"] = "auto"
    spp: int = Field(16, ge=1, le=4096)
    max_depth: int = Field(4, ge=2, le=16)
    env_height: int = Field(64, ge=8, le=1024, description="environment map height (width = 2x)")
    brightness: float = Field(1.6, gt=0, description="scales the environment (1: frontal irradiance pi)")
    background: tuple[float, float, float] = (0.0, 0.0, 0.0)   # sRGB, composited with the alpha mask
    seed: int = 0
    hair_strands: int = Field(12000, ge=0, description="fuzz strands (thin triangles) on the hair shell; 0: none")


def _import_mitsuba(variant: str):
    """Import mitsuba with libLLVM 19 (older system LLVMs crash drjit) and pick a variant."""
    if Path(LLVM_PATH).exists() and not os.environ.get("DRJIT_LIBLLVM_PATH"):
        os.environ["DRJIT_LIBLLVM_PATH"] = LLVM_PATH
    import mitsuba as mi

    if variant == "auto":
        candidates = (["cuda_ad_rgb"] if torch.cuda.is_available() else []) + ["llvm_ad_rgb", "scalar_rgb"]
    else:
        candidates = [variant]
    errors = []
    for v in candidates:
        if v not in mi.variants():
            errors.append(f"{v}: not built into this mitsuba")
            continue
        try:
            mi.set_variant(v)
            if v != "scalar_rgb":
                import drjit as dr

                dr.eval(mi.Float([1.0, 2.0]) * 2)            # fails here when the JIT backend is broken
            return mi
        except Exception as exc:  # noqa: BLE001 - try the next variant, report all at the end
            errors.append(f"{v}: {type(exc).__name__}: {exc}")
    raise RuntimeError("no usable Mitsuba variant (" + "; ".join(errors) + "). For llvm_ad_rgb install libllvm19 "
                       f"({LLVM_PATH}); on GPU machines use cuda_ad_rgb")


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0, 1)
    return np.where(x <= 0.0031308, 12.92 * x, 1.055 * np.power(x, 1 / 2.4) - 0.055)


def camera_to_mitsuba(K: np.ndarray, w2c: np.ndarray, width: int, height: int) -> tuple[np.ndarray, float, float, float]:
    """OpenCV (K, w2c) -> (Mitsuba to_world 4x4, x_fov degrees, principal point offsets x, y)."""
    K, w2c = np.asarray(K, dtype=np.float64), np.asarray(w2c, dtype=np.float64)
    if K.shape != (3, 3) or w2c.shape != (4, 4):
        raise ValueError(f"camera: expected K 3x3 and w2c 4x4, got {K.shape} and {w2c.shape}")
    fx, fy = K[0, 0], K[1, 1]
    if abs(fx - fy) > 1e-3 * fx:
        raise ValueError(f"camera: Mitsuba's perspective camera needs square pixels (fx == fy), got fx={fx}, fy={fy}")
    c2w = np.linalg.inv(w2c)
    to_world = c2w @ np.diag([-1.0, -1.0, 1.0, 1.0])                # Mitsuba camera: x left, y up, z forward
    x_fov = math.degrees(2 * math.atan(width / (2 * fx)))
    return to_world, x_fov, (K[0, 2] - width / 2) / width, (K[1, 2] - height / 2) / height


class RayTracer:
    """``render(mesh, cameras, lighting_id) -> [(rgb uint8 (H,W,3), mask uint8 (H,W))]``."""

    def __init__(self, cfg: RayTraceConfig | None = None) -> None:
        self.cfg = cfg or RayTraceConfig()
        self.mi = _import_mitsuba(self.cfg.variant)
        self.variant = self.mi.variant()
        self._scene = None
        self._params = None
        self._key = None
        self._groups: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self._env_cache: dict[int, np.ndarray] = {}
        self._strands: dict | None = None
        self._renders = 0

    @property
    def info(self) -> dict:
        """What to store in meta.json under ``renderer``."""
        return {"name": RENDERER_NAME, "version": self.mi.__version__, "variant": self.variant, "spp": self.cfg.spp}

    # ---- scene ----------------------------------------------------------------------------
    def _split(self, mesh: HeadMesh) -> None:
        parts = mesh.parts.cpu().numpy()
        faces = mesh.faces.cpu().numpy()
        fpart = parts[faces[:, 0]]
        self._groups = {}
        for name, (pids, _) in MATERIALS.items():
            fsel = np.isin(fpart, pids)
            vids = np.unique(faces[fsel])
            remap = np.full(len(parts), -1, dtype=np.int64)
            remap[vids] = np.arange(len(vids))
            self._groups[name] = (vids, remap[faces[fsel]].astype(np.uint32))

    def _mesh_obj(self, name: str, bsdf, n_v: int, n_f: int):
        mi = self.mi
        props = mi.Properties()
        props["bsdf"] = bsdf
        return mi.Mesh(name, n_v, n_f, props=props, has_vertex_normals=True, has_vertex_texcoords=True)

    def _env(self, lighting_id: int) -> np.ndarray:
        if lighting_id not in self._env_cache:
            self._env_cache[lighting_id] = environment_map(lighting_id, self.cfg.env_height, self.cfg.brightness)
        return self._env_cache[lighting_id]

    def _build(self, mesh: HeadMesh, tex_shape: tuple[int, ...], width: int, height: int, lighting_id: int) -> None:
        mi = self.mi
        self._split(mesh)
        dummy_tex = mi.Bitmap(np.full(tex_shape, 0.5, dtype=np.float32))
        scene: dict = {"type": "scene",
                       "integrator": {"type": "path", "max_depth": self.cfg.max_depth, "hide_emitters": True}}
        scene["env"] = {"type": "envmap", "bitmap": mi.Bitmap(self._env(lighting_id))}
        for name, (vids, faces) in self._groups.items():
            alpha = MATERIALS[name][1]
            bsdf = mi.load_dict({"type": "twosided", "inner": {
                "type": "roughplastic", "alpha": alpha, "int_ior": 1.44 if name == "skin" else 1.5,
                "diffuse_reflectance": {"type": "bitmap", "bitmap": dummy_tex, "raw": True,
                                        "filter_type": "bilinear", "wrap_mode": "clamp"}}})
            scene[name] = self._mesh_obj(name, bsdf, len(vids), len(faces))
        self._strands = self._pick_strands(mesh)
        if self._strands is not None:
            k = len(self._strands["face"])
            bsdf = mi.load_dict({"type": "twosided", "inner": {
                "type": "roughplastic", "alpha": MATERIALS["hair"][1], "int_ior": 1.5,
                "diffuse_reflectance": {"type": "bitmap", "bitmap": dummy_tex, "raw": True,
                                        "filter_type": "bilinear", "wrap_mode": "clamp"}}})
            scene["strands"] = self._mesh_obj("strands", bsdf, 3 * k, k)
        scene["sensor"] = {
            "type": "perspective", "fov": 30.0, "fov_axis": "x",
            "to_world": mi.ScalarTransform4f(np.eye(4)),
            "film": {"type": "hdrfilm", "width": width, "height": height, "pixel_format": "rgba",
                     "rfilter": {"type": "box"}},
            "sampler": {"type": "independent", "sample_count": self.cfg.spp},
        }
        self._scene = mi.load_dict(scene)
        self._params = mi.traverse(self._scene)
        for name, (_, faces) in self._groups.items():
            self._set(f"{name}.faces", faces.ravel())
        if self._strands is not None:
            self._set("strands.faces", np.arange(3 * len(self._strands["face"]), dtype=np.uint32))

    def _pick_strands(self, mesh: HeadMesh) -> dict | None:
        """Fixed (per topology) random strand roots on hair faces: face, barycentrics, shape jitter."""
        k = self.cfg.hair_strands
        if k == 0 or mesh.hair_weight is None:
            return None
        faces = mesh.faces.cpu().numpy()
        hw = mesh.hair_weight.detach().cpu().numpy()
        V = mesh.vertices.detach().cpu().numpy().astype(np.float64)
        cand = np.nonzero(hw[faces].mean(1) > 0)[0]
        if len(cand) == 0:
            return None
        f = faces[cand]
        area = 0.5 * np.linalg.norm(np.cross(V[f[:, 1]] - V[f[:, 0]], V[f[:, 2]] - V[f[:, 0]]), axis=1)
        p = area * hw[f].mean(1)
        rng = np.random.default_rng([self.cfg.seed, 0x4A1F])
        pick = cand[rng.choice(len(cand), k, p=p / p.sum())]
        r1, r2 = np.sqrt(rng.random(k)), rng.random(k)
        bary = np.stack([1 - r1, r1 * (1 - r2), r1 * r2], 1)
        return {"face": faces[pick], "bary": bary, "len": rng.uniform(0.5, 1.3, k), "tilt": rng.uniform(0.06, 0.35, k),
                "width": rng.uniform(0.0004, 0.0008, k), "twist": rng.normal(0, 0.35, k)}

    def _strand_buffers(self, mesh: HeadMesh, V: np.ndarray, Nn: np.ndarray, UV: np.ndarray):
        """Triangles (root edge across the flow, tip along it) combed from the crown, for this pose."""
        st = self._strands
        f, b = st["face"], st["bary"][..., None]
        root = (V[f] * b).sum(1)
        n = (Nn[f] * b).sum(1)
        n /= np.maximum(np.linalg.norm(n, axis=1, keepdims=True), 1e-9)
        hw = (mesh.hair_weight.detach().cpu().numpy()[f] * st["bary"]).sum(1)
        T = mesh.head_pose.detach().cpu().numpy().astype(np.float64)
        up, centre = T[:3, 1], T[:3, 3]
        rel = root - centre
        rad = rel - (rel @ up)[:, None] * up
        rad /= np.maximum(np.linalg.norm(rad, axis=1, keepdims=True), 1e-9)
        flow = -0.8 * up + 0.6 * rad
        flow = flow - (flow * n).sum(1, keepdims=True) * n
        flow /= np.maximum(np.linalg.norm(flow, axis=1, keepdims=True), 1e-9)
        side = np.cross(n, flow)
        c, s = np.cos(st["twist"])[:, None], np.sin(st["twist"])[:, None]
        flow, side = c * flow + s * side, c * side - s * flow
        L = (mesh.hair_length_m * st["len"] * hw)[:, None]
        w = (st["width"] * (L[:, 0] > 0))[:, None] / 2
        base = root - 0.0005 * n
        tip = root + L * (np.cos(st["tilt"])[:, None] * flow + np.sin(st["tilt"])[:, None] * n)
        P = np.stack([base - w * side, base + w * side, tip], 1).reshape(-1, 3)
        uv = np.repeat((UV[f] * b).sum(1), 3, axis=0)
        return P.astype(np.float32), np.repeat(n, 3, axis=0).astype(np.float32), uv.astype(np.float32)

    def _set(self, key: str, value: np.ndarray) -> None:
        mi = self.mi
        if self.variant.startswith("scalar"):
            self._params[key] = type(self._params[key])(np.ascontiguousarray(value).ravel())
        else:
            self._params[key] = mi.Float(np.ascontiguousarray(value, dtype=np.float32).ravel()) \
                if value.dtype != np.uint32 else mi.UInt32(value.ravel())

    def _update_mesh(self, mesh: HeadMesh, lighting_id: int) -> None:
        mi = self.mi
        V = mesh.vertices.detach().cpu().numpy().astype(np.float32)
        Nn = mesh.normals.detach().cpu().numpy().astype(np.float32)
        UV = mesh.uvs.detach().cpu().numpy().astype(np.float32)
        for name, (vids, _) in self._groups.items():
            self._set(f"{name}.vertex_positions", V[vids])
            self._set(f"{name}.vertex_normals", Nn[vids])
            self._set(f"{name}.vertex_texcoords", UV[vids])
        if self._strands is not None:
            sp, sn, suv = self._strand_buffers(mesh, V.astype(np.float64), Nn.astype(np.float64), UV)
            self._set("strands.vertex_positions", sp)
            self._set("strands.vertex_normals", sn)
            self._set("strands.vertex_texcoords", suv)
        tex = srgb_to_linear(mesh.albedo.detach().cpu().float().numpy()).astype(np.float32)
        tex_t = mi.TensorXf(tex)
        for key in self._params.keys():
            if key.endswith("diffuse_reflectance.data"):
                self._params[key] = tex_t
        if not self.variant.startswith("scalar"):      # scalar envmaps are padded: rebuilt instead (see render)
            self._params["env.data"] = mi.TensorXf(self._env(lighting_id))
        self._params.update()

    # ---- render ---------------------------------------------------------------------------
    def render(self, mesh: HeadMesh, cameras: Sequence[tuple[np.ndarray, np.ndarray]], lighting_id: int,
               width: int | None = None, height: int | None = None,
               seed: int | None = None) -> list[tuple[np.ndarray, np.ndarray]]:
        """Path-trace ``mesh`` from each ``(K, w2c)``; image size defaults to (2 cx, 2 cy) of the first K.

        ``seed``: view ``v`` uses sampler seed ``seed + v + 1`` (reproducible per sample whatever was
        rendered before); ``None`` numbers renders per tracer from ``cfg.seed``.
        """
        if len(cameras) == 0:
            raise ValueError("render: need at least one camera")
        if self.mi.variant() != self.variant:           # another tracer in this process switched variants
            self.mi.set_variant(self.variant)
        K0 = np.asarray(cameras[0][0])
        W = int(width or round(2 * K0[0, 2]))
        H = int(height or round(2 * K0[1, 2]))
        tex_shape = tuple(mesh.albedo.shape)
        key = (tuple(mesh.faces.shape), tuple(mesh.parts.shape), tex_shape, W, H, mesh.hair_weight is not None)
        if self.variant.startswith("scalar"):
            key = key + (int(lighting_id),)
        if key != self._key:
            self._build(mesh, tex_shape, W, H, int(lighting_id))
            self._key = key
        self._update_mesh(mesh, int(lighting_id))
        bg = srgb_to_linear(np.asarray(self.cfg.background, dtype=np.float64))
        out = []
        for v, cam in enumerate(cameras):
            to_world, x_fov, ppx, ppy = camera_to_mitsuba(cam[0], cam[1], W, H)
            self._params["sensor.to_world"] = self.mi.Transform4f(to_world.astype(np.float32).tolist())
            self._params["sensor.x_fov"] = float(x_fov)
            self._params["sensor.principal_point_offset_x"] = float(ppx)
            self._params["sensor.principal_point_offset_y"] = float(ppy)
            self._params.update()
            self._renders += 1
            s = (self.cfg.seed * 100003 + self._renders) if seed is None else int(seed) + v + 1
            img = np.array(self.mi.render(self._scene, seed=s % 2**32, spp=self.cfg.spp))
            alpha = np.clip(img[..., 3:4], 0, 1)
            rgb = img[..., :3] + (1 - alpha) * bg
            out.append(((linear_to_srgb(rgb) * 255 + 0.5).astype(np.uint8),
                        (alpha[..., 0] * 255 + 0.5).astype(np.uint8)))
        return out
