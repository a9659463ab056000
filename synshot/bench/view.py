"""Viewer benchmark: how often the browser viewer can re-decode the avatar when a slider moves.

One slider change = the prior decodes the new expression and head pose (``E_expr`` -> decoders ->
Gaussians), the Gaussians become viser's splat buffers (covariances, 8-bit colours), and the buffer
is queued for the browser (viser serialises it; no browser is attached, so network and the browser's
sort/draw are not included: locally they add a frame or two). Prior: configs/model/tiny.yaml, freshly
initialised (timing does not depend on the weights), its average identity, the default head mesh.
An expression change also deforms the head model's mesh for the new coefficients (its expression
map feeds ``E_expr``); a pose change reuses the cached map. Figures (medians): ``view_expr_decode_ms_tiny_cpu``,
``view_pose_decode_ms_tiny_cpu``, ``view_send_ms_tiny_cpu``, their CPU-time twins ``*_cpu_ms_*`` (process
CPU seconds: less sensitive to other jobs on a shared machine), ``view_expr_updates_per_s_tiny_cpu`` and
``view_pose_updates_per_s_tiny_cpu`` (1 / (decode + send)), ``view_gaussians_tiny``, ``view_load_avg``.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(quick: bool = False) -> dict[str, float | int]:
    import numpy as np
    import torch
    import viser

    from synshot.config import load_config
    from synshot.model import ModelConfig, SynShotPrior
    from synshot.view.prior_avatar import average_avatar
    from synshot.view.scene import head_pose, splat_arrays

    mcfg = load_config(ModelConfig, ROOT / "configs/model/tiny.yaml")
    torch.manual_seed(0)
    avatar = average_avatar(SynShotPrior(mcfg).eval().requires_grad_(False))
    n = 3 if quick else 12
    rng = np.random.default_rng(0)
    e = len(avatar.expression_names)
    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    times: dict[str, list[float]] = {k: [] for k in ("expr", "expr_cpu", "pose", "pose_cpu", "send", "send_cpu")}

    def update(expr, yaw: float) -> tuple[float, float, float, float]:
        pose = head_pose(avatar.reference["head_pose"], yaw, 0.0, 0.0)
        t0, c0 = time.perf_counter(), time.process_time()
        arrays = splat_arrays(avatar.gaussians(expr[None], pose[None]).sample(0))
        t1, c1 = time.perf_counter(), time.process_time()
        server.scene.add_gaussian_splats("/avatar", **arrays)
        return t1 - t0, c1 - c0, time.perf_counter() - t1, time.process_time() - c1

    try:
        update(torch.zeros(e), 0.0)  # first call builds caches (UV rasters, neutral mesh)
        for _ in range(n):
            expr = torch.tensor(rng.uniform(0, 1, e), dtype=torch.float32)
            wall, cpu, send, send_cpu = update(expr, float(rng.uniform(-30, 30)))  # new expression
            times["expr"].append(wall)
            times["expr_cpu"].append(cpu)
            times["send"].append(send)
            times["send_cpu"].append(send_cpu)
            wall, cpu, _, _ = update(expr, float(rng.uniform(-30, 30)))  # same expression, new pose
            times["pose"].append(wall)
            times["pose_cpu"].append(cpu)
    finally:
        server.stop()
    med = {k: float(np.median(v)) for k, v in times.items()}
    return {
        "view_expr_decode_ms_tiny_cpu": 1000 * med["expr"],
        "view_pose_decode_ms_tiny_cpu": 1000 * med["pose"],
        "view_send_ms_tiny_cpu": 1000 * med["send"],
        "view_expr_decode_cpu_ms_tiny": 1000 * med["expr_cpu"],
        "view_pose_decode_cpu_ms_tiny": 1000 * med["pose_cpu"],
        "view_send_cpu_ms_tiny": 1000 * med["send_cpu"],
        "view_expr_updates_per_s_tiny_cpu": 1.0 / (med["expr"] + med["send"]),
        "view_pose_updates_per_s_tiny_cpu": 1.0 / (med["pose"] + med["send"]),
        "view_gaussians_tiny": int(sum(avatar.model.gaussian_counts().values())),
        "view_load_avg": float(os.getloadavg()[0]),
    }
