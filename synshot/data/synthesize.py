"""Synthetic dataset generation: config, a deterministic plan of splits and shards, rendering one sample.

Why a plan: every array task must agree on which identity goes to which split and which sample to
which shard without talking to the others. The plan is a pure function of the config (seed
included), so task ``i`` of ``n`` renders a disjoint contiguous range of the global shard list, and
each sample's content depends only on ``(seed, identity, expression)`` - the same shard is
byte-identical no matter which task renders it or how often.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Literal

import numpy as np
from pydantic import Field, model_validator

from synshot.config import ConfigBase, dump_config
from synshot.data import storage
from synshot.data.schema import encode_sample
from synshot.data.writer import build_manifest, shard_is_complete, shard_name, write_shard
from synshot.head.config import HeadConfig
from synshot.raytrace.tracer import RayTraceConfig

SPLITS = ("train", "val", "test")


class SplitFractions(ConfigBase):
    """Fractions of identities per split (by identity, so val/test identities are never seen in training)."""

    train: float = Field(0.9, ge=0.0, le=1.0)
    val: float = Field(0.05, ge=0.0, le=1.0)
    test: float = Field(0.05, ge=0.0, le=1.0)

    @model_validator(mode="after")
    def _sum_to_one(self):
        total = self.train + self.val + self.test
        if abs(total - 1.0) > 1e-6:
            raise ValueError(f"split fractions must sum to 1, got {total:.4f}")
        return self


class SynthConfig(ConfigBase):
    """Everything that determines a synthetic dataset; stored as ``generator_config`` in each manifest."""

    seed: int = 0
    num_identities: int = Field(48, ge=1, le=999_999)
    expressions_per_identity: int = Field(4, ge=1, le=9_999, description="expression 0 is neutral when neutral_first")
    neutral_first: bool = True
    views: int = Field(4, ge=1, description="camera views per sample")
    image_size: int = Field(128, ge=8)
    spp: int = Field(16, ge=1, description="ray-tracer samples per pixel")
    uv_size: int = Field(128, ge=8)
    samples_per_shard: int = Field(16, ge=1)
    splits: SplitFractions = Field(default_factory=SplitFractions)
    image_format: Literal["png", "jpg"] = "png"
    jpeg_quality: int = Field(95, ge=50, le=100)
    lighting_ids: list[int] = Field(default_factory=lambda: [0], min_length=1)
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options for --out")
    torch_threads: int = Field(1, ge=0, description="torch intra-op threads for the head model (0: torch default); "
                               "1 is fastest on shared cores, Mitsuba has its own thread pool")
    head: HeadConfig = Field(default_factory=HeadConfig)
    raytrace: RayTraceConfig = Field(default_factory=RayTraceConfig, description="renderer settings; spp is set above")

    @model_validator(mode="after")
    def _one_spp(self):
        if "spp" in self.raytrace.model_fields_set and self.raytrace.spp != self.spp:
            raise ValueError(f"set samples per pixel once, as top-level 'spp' (raytrace.spp={self.raytrace.spp} != spp={self.spp})")
        return self

    def raytrace_config(self) -> RayTraceConfig:
        return self.raytrace.model_copy(update={"spp": self.spp})


# ---------------------------------------------------------------- the plan


def _rng(*numbers: int) -> np.random.Generator:
    return np.random.default_rng([int(n) for n in numbers])


@dataclass(frozen=True)
class ShardJob:
    split: str
    index: int
    samples: tuple[tuple[int, int], ...]  # (identity, expression)

    @property
    def name(self) -> str:
        return shard_name(self.split, self.index)


class DatasetPlan:
    """Splits by identity, sample order and shard contents: a pure function of the config."""

    def __init__(self, cfg: SynthConfig):
        self.cfg = cfg
        n = cfg.num_identities
        n_val = int(round(cfg.splits.val * n))
        n_test = int(round(cfg.splits.test * n))
        if n_val + n_test > n:
            n_test = n - n_val
        order = _rng(cfg.seed, 3).permutation(n)
        ids = {"val": order[:n_val], "test": order[n_val : n_val + n_test], "train": order[n_val + n_test :]}
        self.identities = {s: sorted(int(i) for i in ids[s]) for s in SPLITS}
        self.shards: list[ShardJob] = []
        for si, split in enumerate(SPLITS):
            pairs = [(i, e) for i in self.identities[split] for e in range(cfg.expressions_per_identity)]
            # shuffled once here, so every shard mixes identities (the loader's buffer then mixes shards)
            pairs = [pairs[j] for j in _rng(cfg.seed, 4, si).permutation(len(pairs))]
            per = cfg.samples_per_shard
            for k in range(math.ceil(len(pairs) / per)):
                self.shards.append(ShardJob(split, k, tuple(pairs[k * per : (k + 1) * per])))

    def shards_of(self, split: str) -> list[ShardJob]:
        return [s for s in self.shards if s.split == split]

    def num_samples(self, split: str | None = None) -> int:
        return sum(len(s.samples) for s in self.shards if split is None or s.split == split)

    def task_shards(self, shard_index: int, num_shards: int) -> list[ShardJob]:
        """The contiguous, disjoint range of the global shard list that array task ``shard_index`` renders."""
        if not (num_shards >= 1 and 0 <= shard_index < num_shards):
            raise ValueError(f"--shard-index {shard_index} must be in [0, --num-shards {num_shards})")
        total = len(self.shards)
        lo, hi = shard_index * total // num_shards, (shard_index + 1) * total // num_shards
        return self.shards[lo:hi]


# ---------------------------------------------------------------- rendering one sample


def sample_rngs(seed: int, identity: int, expression: int) -> dict[str, np.random.Generator]:
    """Independent generators per aspect: the identity depends on (seed, identity) only, so all
    expressions of an identity share it; expression, pose, cameras and lighting on the full triple."""
    return {
        "identity": _rng(seed, 10, identity),
        "expression": _rng(seed, 11, identity, expression),
        "pose": _rng(seed, 12, identity, expression),
        "cameras": _rng(seed, 13, identity, expression),
        "lighting": _rng(seed, 14, identity, expression),
    }


def _np(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    return np.asarray(x)


def _to_u8(img: np.ndarray) -> np.ndarray:
    img = _np(img)
    if img.dtype == np.uint8:
        return img
    return (np.clip(img, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_seed(seed: int, identity: int, expression: int) -> int:
    """Base of the ray tracer's per-view sampler seeds for one sample (view v uses base + v + 1)."""
    return int(np.random.SeedSequence([int(seed), 15, int(identity), int(expression)]).generate_state(1)[0] % (2**31 - 2**16))


def render_sample(head: Any, tracer: Any, cfg: SynthConfig, identity: int, expression: int) -> dict[str, Any]:
    """Render sample ``(identity, expression)`` and return it encoded per the schema (``{"__key__", member: bytes}``).

    Deterministic: every random choice comes from generators seeded by ``(cfg.seed, identity, expression)``.
    Expression 0 is the neutral face when ``cfg.neutral_first``.
    """
    import torch

    from synshot import head as head_mod

    rngs = sample_rngs(cfg.seed, identity, expression)
    ident = head_mod.sample_identity(rngs["identity"])
    expr = head_mod.sample_expression(rngs["expression"])
    if cfg.neutral_first and expression == 0:
        expr = torch.zeros_like(expr)
    pose = head_mod.sample_head_pose(rngs["pose"])
    cameras = head_mod.sample_cameras(rngs["cameras"], cfg.views, cfg.image_size, cfg.image_size)
    lighting_id = int(cfg.lighting_ids[int(rngs["lighting"].integers(len(cfg.lighting_ids)))])

    with torch.no_grad():
        maps = head.uv_maps(ident, expr, cfg.uv_size)
        mesh = head.mesh(ident, expr, pose)
    # sampler seeds from the sample only (not from how many images this process rendered before), so a
    # shard is identical whichever array task (re-)renders it
    views = tracer.render(mesh, cameras, lighting_id, width=cfg.image_size, height=cfg.image_size,
                          seed=render_seed(cfg.seed, identity, expression))
    info = tracer.info() if callable(tracer.info) else tracer.info
    meta = {
        "identity": identity,
        "expression": expression,
        "head_model_version": head_mod.HEAD_MODEL_VERSION,
        "identity_params": ident.to_dict(),
        "expression_coeffs": [float(c) for c in _np(expr).reshape(-1)],
        "expression_names": list(head.expression_names),
        "head_pose": _np(pose).astype(float).tolist(),
        "views": [
            {"K": _np(K).astype(float).tolist(), "w2c": _np(w2c).astype(float).tolist(), "width": cfg.image_size, "height": cfg.image_size}
            for K, w2c in cameras
        ],
        "lighting_id": lighting_id,
        "renderer": dict(info),
    }
    return encode_sample(
        meta,
        _to_u8(np.transpose(_np(maps["tex"]), (1, 2, 0))),
        _np(maps["verts"]).astype(np.float16),
        _np(maps["exp"]).astype(np.float16),
        [_to_u8(rgb) for rgb, _ in views],
        [_to_u8(mask) for _, mask in views],
        image_format=cfg.image_format,
        jpeg_quality=cfg.jpeg_quality,
    )


# ---------------------------------------------------------------- the job


def generator_config(cfg: SynthConfig) -> dict[str, Any]:
    """What the manifests record about the generator: the config (without storage options, which may
    hold credentials), the head model version, and a fingerprint of everything that changes the bytes."""
    import hashlib
    import json

    from synshot import head as head_mod

    synth = json.loads(dump_config(cfg))
    synth.pop("storage_options", None)
    content = {k: v for k, v in synth.items() if k != "torch_threads"}
    version = getattr(head_mod, "HEAD_MODEL_VERSION", None)
    digest = hashlib.sha256(json.dumps([content, version], sort_keys=True).encode()).hexdigest()[:16]
    return {"synth": synth, "head_model_version": version, "fingerprint": digest}


def config_fingerprint(cfg: SynthConfig) -> str:
    """Hash of everything that changes the rendered bytes (not storage options or thread counts)."""
    return generator_config(cfg)["fingerprint"]


def finalize(cfg: SynthConfig, out: str, trust_plan: bool = False) -> dict[str, dict[str, Any]]:
    """Rebuild every split's manifest from the complete shards (idempotent; run after all array tasks).

    ``trust_plan``: take sample counts from the plan instead of reading every sidecar (the quick
    rebuild at the end of each array task; ``--finalize`` reads them all).
    """
    plan = DatasetPlan(cfg)
    gen = generator_config(cfg)
    known = {j.name: len(j.samples) for j in plan.shards} if trust_plan else None
    return {
        split: build_manifest(out, split, gen, len(plan.shards_of(split)), cfg.storage_options, known)
        for split in SPLITS
        if plan.shards_of(split)
    }


def synthesize(
    cfg: SynthConfig,
    out: str,
    shard_index: int = 0,
    num_shards: int = 1,
    progress: bool = True,
    make_renderers: Callable[[SynthConfig], tuple[Any, Any]] | None = None,
) -> dict[str, Any]:
    """Render this array task's shards into ``out`` (skipping complete ones), then rebuild the manifests.

    Returns ``{"rendered": [...names], "skipped": [...names], "seconds": float, "manifests": {...}}``.
    """
    plan = DatasetPlan(cfg)
    jobs = plan.task_shards(shard_index, num_shards)
    storage.makedirs(out, cfg.storage_options)
    fingerprint = config_fingerprint(cfg)
    todo = [j for j in jobs if not shard_is_complete(out, j.split, j.index, cfg.storage_options, fingerprint)]
    skipped = [j.name for j in jobs if j not in todo]
    start = time.perf_counter()
    rendered: list[str] = []
    if todo:
        if cfg.torch_threads:
            import torch

            torch.set_num_threads(cfg.torch_threads)
        head, tracer = (make_renderers or default_renderers)(cfg)
        from tqdm import tqdm

        total = sum(len(j.samples) for j in todo)
        bar = tqdm(total=total, unit="sample", desc=f"task {shard_index}/{num_shards}", disable=not progress, dynamic_ncols=True)

        def samples(job: ShardJob) -> Iterator[dict[str, Any]]:
            for identity, expression in job.samples:
                yield render_sample(head, tracer, cfg, identity, expression)
                bar.update(1)
                bar.set_postfix_str(f"{job.name}, {bar.n * cfg.views / max(bar.format_dict['elapsed'], 1e-9):.2f} views/s")

        try:
            for job in todo:
                write_shard(out, job.split, job.index, samples(job), cfg.storage_options, fingerprint=fingerprint)
                rendered.append(job.name)
        finally:
            bar.close()
    manifests = finalize(cfg, out, trust_plan=True)
    return {"rendered": rendered, "skipped": skipped, "seconds": time.perf_counter() - start, "manifests": manifests}


def default_renderers(cfg: SynthConfig) -> tuple[Any, Any]:
    """The procedural head model and the Mitsuba ray tracer configured from ``cfg``."""
    from synshot.head import HeadModel
    from synshot.raytrace import RayTracer

    return HeadModel(cfg.head), RayTracer(cfg.raytrace_config())
