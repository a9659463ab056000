"""Viewer benchmark: how often the browser viewer can re-decode the avatar when a slider moves.

One slider change = the prior decodes the new expression and head pose (``E_expr`` -> decoders ->
Gaussians), the Gaussians become viser's splat buffers (covariances, 8-bit colours), and the buffer
is queued for the browser (viser serialises it; no browser is attached, so network and the browser's
sort/draw are not included: locally they add a frame or two). Prior: configs/model/tiny.yaml, freshly
initialised (timing does not depend on the weights), its average identity, the default head mesh.
Figures: ``view_decode_ms_tiny_cpu`` and ``view_send_ms_tiny_cpu`` (medians),
``view_updates_per_s_tiny_cpu`` (1 / their sum), ``view_gaussians_tiny``.
"""

from __future__ import annotations

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
    n = 5 if quick else 30
    rng = np.random.default_rng(0)
    e = len(avatar.expression_names)
    server = viser.ViserServer(host="127.0.0.1", port=0, verbose=False)
    decode, send = [], []
    try:
        for i in range(n + 2):
            expr = torch.tensor(rng.uniform(0, 1, e), dtype=torch.float32)
            pose = head_pose(avatar.reference["head_pose"], float(rng.uniform(-30, 30)), 0.0, 0.0)
            t0 = time.perf_counter()
            arrays = splat_arrays(avatar.gaussians(expr[None], pose[None]).sample(0))
            t1 = time.perf_counter()
            server.scene.add_gaussian_splats("/avatar", **arrays)
            t2 = time.perf_counter()
            if i >= 2:  # the first calls build caches (head mesh deformation, UV rasters)
                decode.append(t1 - t0)
                send.append(t2 - t1)
    finally:
        server.stop()
    d, s = float(np.median(decode)), float(np.median(send))
    return {
        "view_decode_ms_tiny_cpu": 1000 * d,
        "view_send_ms_tiny_cpu": 1000 * s,
        "view_updates_per_s_tiny_cpu": 1.0 / (d + s),
        "view_gaussians_tiny": int(sum(avatar.model.gaussian_counts().values())),
    }
