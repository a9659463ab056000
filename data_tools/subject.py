"""Render a held-out test subject for the inversion: ``synshot data subject --seed N --out subjects/NAME``.

Why out of distribution: the inversion must close a domain gap, as with real people. The subject
differs from every training identity in its lighting (an environment-light id no training config
uses), appearance (extra skin detail painted into the albedo: pores and moles; dyed hair colour)
and shape/hair (feature offsets beyond the training spread, a voluminous hair style the sampler
never draws). It writes 3 input frames (frontal neutral, near-frontal expressive, profile ~65 deg)
and ``eval/`` frames at novel views x novel expressions, in the subject-folder format of
docs/inversion.md (plus ``meta.json`` describing how it was made).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from pydantic import Field

from synshot.cli import Command, UsageError, get_logger
from synshot.config import ConfigBase

log = get_logger(__name__)

from synshot import fsio

HELD_OUT_LIGHTING_BASE = 1000  # training configs use lighting ids 0..7
DYED_HAIR = np.array([[0.20, 0.35, 0.75], [0.75, 0.25, 0.55], [0.25, 0.60, 0.35], [0.85, 0.45, 0.15]])


def held_out_identity(rng: np.random.Generator):
    """A sampled identity pushed outside the training distribution (shape, hair style, hair colour)."""
    from synshot.head import sample_identity

    ident = sample_identity(rng)
    ident.features = (np.asarray(ident.features) * 1.6).tolist()  # beyond the N(0,1) training spread
    ident.shape = (np.asarray(ident.shape) * 1.3).tolist()
    style = int(rng.integers(2))
    ident.hair_length, ident.hair_volume = (1.0, 1.0) if style == 0 else (0.05, 0.95)  # never sampled
    ident.hair_density = 1.0
    ident.hair_color = np.clip(DYED_HAIR[int(rng.integers(len(DYED_HAIR)))] * rng.uniform(0.8, 1.1), 0, 1).tolist()
    ident.freckles = float(rng.uniform(0.5, 0.9))
    ident.validate()
    return ident, {"hair_style": "long_voluminous" if style == 0 else "short_voluminous",
                   "feature_scale": 1.6, "shape_scale": 1.3, "dyed_hair": True}


def add_skin_detail(albedo: torch.Tensor, face: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
    """Pores (high-frequency darkening) and a few moles on the face region of a (T,T,3) albedo."""
    t = albedo.shape[0]
    out = albedo.clone()
    pores = torch.from_numpy(rng.normal(0, 1, (t, t)).astype(np.float32))
    pores = torch.nn.functional.avg_pool2d(pores[None, None], 3, 1, 1)[0, 0]
    shade = 1 + 0.06 * pores.clamp(-3, 3)
    yy, xx = torch.meshgrid(torch.arange(t), torch.arange(t), indexing="ij")
    face_idx = face.nonzero()
    for _ in range(int(rng.integers(4, 9))):
        c = face_idx[int(rng.integers(len(face_idx)))]
        r = float(rng.uniform(0.004, 0.009)) * t
        d2 = (yy - c[0]).float() ** 2 + (xx - c[1]).float() ** 2
        shade = shade * (1 - 0.55 * torch.exp(-d2 / (2 * r * r)))
    m = face.to(out.dtype)[..., None]
    return (out * (1 - m) + (out * shade[..., None]).clamp(0, 1) * m).contiguous()


def orbit_camera(size: int, yaw_deg: float, pitch_deg: float, distance: float, fill: float = 0.8):
    """(K, w2c) looking at the head centre from (yaw, pitch); the head (~0.30 m) fills ``fill``."""
    from synshot.camera import look_at_w2c

    yaw, pitch = math.radians(yaw_deg), math.radians(pitch_deg)
    target = np.array([0.0, -0.02, 0.0])
    eye = target + distance * np.array([math.sin(yaw) * math.cos(pitch), math.sin(pitch),
                                        math.cos(yaw) * math.cos(pitch)])
    f = fill * size * distance / 0.30
    K = np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])
    return K, look_at_w2c(eye, target)


def expressive(rng: np.random.Generator, names: list[str]) -> torch.Tensor:
    """A clearly non-neutral expression (a smile or an open jaw plus random extras)."""
    from synshot.head import sample_expression

    e = sample_expression(rng)
    while float(e.abs().sum()) < 0.5:
        e = sample_expression(rng)
    return e


def _write_frames(folder: Path, frames: list[dict], identity: dict | None, names: list[str], version: str) -> None:
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "masks").mkdir(exist_ok=True)
    cams, params = [], []
    for fr in frames:
        Image.fromarray(fr["rgb"]).save(folder / "images" / fr["file"])
        Image.fromarray(fr["mask"]).save(folder / "masks" / fr["file"])
        h, w = fr["mask"].shape
        cams.append({"file": fr["file"], "K": fr["K"].tolist(), "w2c": fr["w2c"].tolist(), "width": w, "height": h})
        params.append({"file": fr["file"], "expression": [float(x) for x in fr["expression"]],
                       "head_pose": np.asarray(fr["head_pose"]).tolist()})
    (folder / "cameras.json").write_text(json.dumps({"frames": cams}, indent=1))
    (folder / "params.json").write_text(json.dumps({"head_model_version": version, "identity": identity,
                                                    "expression_names": names, "frames": params}, indent=1))


def make_subject(seed: int, out: str | Path, size: int = 128, spp: int = 32, eval_views: int = 3,
                 eval_expressions: int = 3, tiny_head: bool = False, lighting_id: int | None = None) -> Path:
    from synshot.head import HEAD_MODEL_VERSION, HeadConfig, HeadModel, sample_head_pose
    from synshot.raytrace import RayTraceConfig, RayTracer

    out = Path(out)
    rng = np.random.default_rng([int(seed), 0x5B1EC7])
    head = HeadModel(HeadConfig.tiny() if tiny_head else HeadConfig())
    names = list(head.expression_names)
    ident, ood = held_out_identity(rng)
    lighting_id = HELD_OUT_LIGHTING_BASE + int(seed) if lighting_id is None else int(lighting_id)
    tracer = RayTracer(RayTraceConfig(spp=spp, seed=int(seed)))
    detail_rng_seed = int(rng.integers(2**31))

    def render(expression: torch.Tensor, pose: np.ndarray, cam) -> tuple[np.ndarray, np.ndarray]:
        with torch.no_grad():
            mesh = head.mesh(ident, expression, pose)
        t = mesh.albedo.shape[0]
        mesh.albedo = add_skin_detail(mesh.albedo, head.uv_region_masks(t)["face"],
                                      np.random.default_rng(detail_rng_seed))
        return tracer.render(mesh, [cam], lighting_id, width=size, height=size)[0]

    def small_pose() -> np.ndarray:
        return sample_head_pose(rng, max_yaw_deg=5.0, max_pitch_deg=4.0, max_roll_deg=2.0)

    final = out
    # the whole folder is rendered into a staging folder and published at once: a regenerated subject
    # never keeps stale frames (eval/ views of an earlier layout) and a killed run leaves the old one
    with fsio.publish_dir(final, keep_previous=False, purpose="subject") as out:
        zero = torch.zeros(len(names))
        smile = torch.zeros(len(names))
        for k, v in (("smile_l", 0.8), ("smile_r", 0.8), ("jaw_open", 0.35), ("brow_up_l", 0.3), ("brow_up_r", 0.3)):
            if k in names:
                smile[names.index(k)] = v
        side = 1 if rng.random() < 0.5 else -1
        inputs = [(zero, 0.0, 0.0), (smile, side * 12.0, 4.0), (zero, -side * 65.0, 0.0)]
        frames = []
        for i, (expr, yaw, pitch) in enumerate(inputs):
            pose = small_pose()
            K, w2c = orbit_camera(size, yaw, pitch, 0.8)
            rgb, mask = render(expr, pose, (K, w2c))
            frames.append({"file": f"{i:03d}.png", "rgb": rgb, "mask": mask, "K": K, "w2c": w2c,
                           "expression": expr.tolist(), "head_pose": pose})
        _write_frames(out, frames, ident.to_dict(), names, HEAD_MODEL_VERSION)

        eval_yaws = [(-35.0, 8.0), (28.0, -6.0), (48.0, 10.0), (-15.0, -10.0), (80.0, 0.0)][:eval_views]
        eval_frames = []
        for j in range(eval_expressions):
            expr = expressive(rng, names)
            pose = small_pose()
            for v, (yaw, pitch) in enumerate(eval_yaws):
                K, w2c = orbit_camera(size, yaw, pitch, float(rng.uniform(0.7, 0.9)))
                rgb, mask = render(expr, pose, (K, w2c))
                eval_frames.append({"file": f"e{j}_v{v}.png", "rgb": rgb, "mask": mask, "K": K, "w2c": w2c,
                                    "expression": expr.tolist(), "head_pose": pose})
        if eval_frames:
            _write_frames(out / "eval", eval_frames, ident.to_dict(), names, HEAD_MODEL_VERSION)
        meta = {"seed": int(seed), "size": size, "spp": spp, "lighting_id": lighting_id, "out_of_distribution": {
            **ood, "lighting": f"environment light id {lighting_id} (training uses 0..7)",
            "skin_detail": "pores + moles painted into the face albedo"},
            "inputs": ["frontal neutral", "near-frontal expressive", "profile ~65 deg"],
            "eval": f"{eval_views} novel views x {eval_expressions} novel expressions",
            "renderer": dict(tracer.info), "head_model_version": HEAD_MODEL_VERSION,
            "head_config": "tiny" if tiny_head else "default"}
        (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return final


class SubjectRenderConfig(ConfigBase):
    """How a held-out subject is rendered (``seed`` picks the person; see the module docstring)."""

    seed: int | None = None  # required: the identity seed (validation 2001-2010, test 3001-3020)
    size: int = Field(128, ge=16)  # image size in pixels (square)
    spp: int = Field(32, ge=1)  # ray-tracer samples per pixel
    eval_views: int = Field(3, ge=0, le=5)
    eval_expressions: int = Field(3, ge=0)
    lighting_id: int | None = None  # default HELD_OUT_LIGHTING_BASE + seed
    tiny_head: bool = False  # low-resolution head mesh (tests)


CLI = Command("data subject", "Render a held-out synthetic test subject folder for the inversion.",
              config_cls=SubjectRenderConfig, out_help="subject folder to write (default subjects/s<seed>)",
              example="synshot data subject --seed 3001 --out subjects/s3001 size=128")
CLI.option("--seed", key="seed", type=int, help="identity seed")
CLI.option("--size", key="size", type=int, help="image size in pixels")
CLI.option("--spp", key="spp", type=int, help="ray-tracer samples per pixel")
CLI.option("--eval-views", key="eval_views", type=int, help="novel views per eval expression")
CLI.option("--eval-expressions", key="eval_expressions", type=int, help="novel eval expressions")
CLI.option("--lighting-id", key="lighting_id", type=int, help="environment light")
CLI.option("--tiny-head", key="tiny_head", action="store_true", help="low-resolution head mesh (tests)")


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, cfg: SubjectRenderConfig) -> int:
    if cfg.seed is None:
        raise UsageError("no subject seed: pass --seed N (or seed=N)")
    out = make_subject(cfg.seed, args.out or f"subjects/s{cfg.seed}", cfg.size, cfg.spp, cfg.eval_views,
                       cfg.eval_expressions, cfg.tiny_head, cfg.lighting_id)
    log.info("wrote %s (3 inputs, %d eval frames)", out, cfg.eval_views * cfg.eval_expressions)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
