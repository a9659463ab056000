"""Ground-truth rendering speed (views/s at 128 and 256 px, 16 spp) for ``synshot.bench.data``."""

from __future__ import annotations

import time

import numpy as np
import torch

from synshot.head import HeadConfig, HeadModel, sample_cameras, sample_expression, sample_head_pose, sample_identity
from synshot.raytrace.tracer import RayTraceConfig, RayTracer


def bench_groundtruth(quick: bool = False, spp: int = 16, n_views: int = 4) -> dict[str, float | int]:
    """Views per second of the path tracer, including the per-sample scene refresh (not the JIT warm-up)."""
    model = HeadModel(HeadConfig())
    tracer = RayTracer(RayTraceConfig(spp=spp))
    rng = np.random.default_rng(0)
    n_samples = 1 if quick else 3
    samples = []
    for _ in range(n_samples + 1):
        ident, expr, pose = sample_identity(rng), sample_expression(rng), sample_head_pose(rng)
        samples.append((ident, expr, pose))
    t = time.perf_counter()
    meshes = [model.mesh(*s) for s in samples]
    mesh_s = (time.perf_counter() - t) / len(samples)
    t = time.perf_counter()
    for s in samples:
        model.uv_maps(s[0], s[1], 256)
    uv_s = (time.perf_counter() - t) / len(samples)
    out: dict[str, float | int] = {"head_mesh_s": mesh_s, "head_uv_maps_256_s": uv_s,
                                   "head_vertices": model.n_verts, "head_faces": int(model.faces.shape[0]),
                                   "render_threads": torch.get_num_threads()}
    for res in (128, 256):
        cams = sample_cameras(rng, n_views, res, res)
        tracer.render(meshes[0], cams, 0, seed=0)              # JIT compile + first BVH
        t = time.perf_counter()
        for k, m in enumerate(meshes[1:]):
            tracer.render(m, cams, k % 4, seed=k)
        out[f"render_views_per_s_{res}"] = n_samples * n_views / (time.perf_counter() - t)
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(bench_groundtruth(quick=False), indent=2))
