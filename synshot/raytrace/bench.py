"""Ground-truth rendering speed (views/s at 128 and 256 px, 16 spp) for ``synshot.bench.data``."""

from __future__ import annotations

import time

import numpy as np
import torch

from synshot.head import HeadConfig, HeadModel, sample_cameras, sample_expression, sample_head_pose, sample_identity
from synshot.raytrace.tracer import RayTraceConfig, RayTracer


def bench_groundtruth(quick: bool = False, spp: int = 16, n_views: int = 4) -> dict[str, float | int]:
    """Views per second of the path tracer, including the per-sample scene refresh (not the JIT warm-up).

    Also reports CPU seconds per view (all threads): ``cores / render_cpu_s_per_view_*`` estimates
    the rate on idle cores when the measuring machine is shared.
    """
    model = HeadModel(HeadConfig())
    tracer = RayTracer(RayTraceConfig(spp=spp))
    rng = np.random.default_rng(0)
    n_samples = 1 if quick else 3
    samples = []
    for _ in range(n_samples + 1):
        ident, expr, pose = sample_identity(rng), sample_expression(rng), sample_head_pose(rng)
        samples.append((ident, expr, pose))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)       # as in data synthesis: small torch ops crawl with 2 threads on busy cores
    warm = sample_identity(rng)                                # one-time: template, rasters, noise bank
    model.mesh(warm, torch.zeros(len(model.expression_names)))
    model.uv_maps(warm, torch.zeros(len(model.expression_names)), 256)
    t, c = time.perf_counter(), time.process_time()
    meshes = [model.mesh(*s) for s in samples]
    mesh_s, mesh_cpu = (time.perf_counter() - t) / len(samples), (time.process_time() - c) / len(samples)
    t, c = time.perf_counter(), time.process_time()
    for s in samples:
        model.uv_maps(s[0], s[1], 256)
    uv_s, uv_cpu = (time.perf_counter() - t) / len(samples), (time.process_time() - c) / len(samples)
    torch.set_num_threads(threads)
    out: dict[str, float | int] = {"head_mesh_s": mesh_s, "head_mesh_cpu_s": mesh_cpu,
                                   "head_uv_maps_256_s": uv_s, "head_uv_maps_256_cpu_s": uv_cpu,
                                   "head_vertices": model.n_verts, "head_faces": int(model.faces.shape[0]),
                                   "head_torch_threads": 1}
    for res in (128, 256):
        cams = sample_cameras(rng, n_views, res, res)
        tracer.render(meshes[0], cams, 0, seed=0)              # JIT compile + first BVH
        t, c = time.perf_counter(), time.process_time()
        for k, m in enumerate(meshes[1:]):
            tracer.render(m, cams, k % 4, seed=k)
        n = n_samples * n_views
        out[f"render_views_per_s_{res}"] = n / (time.perf_counter() - t)
        # CPU seconds over all threads: on shared/busy cores, wall time overstates the cost
        out[f"render_cpu_s_per_view_{res}"] = (time.process_time() - c) / n
    return out


if __name__ == "__main__":
    import json

    print(json.dumps(bench_groundtruth(quick=False), indent=2))
