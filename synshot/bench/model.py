"""Prior benchmarks: one tiny-config training step on CPU, parameter count, Gaussians per part.

``prior_step_s_tiny``: forward + render (torch backend) + loss + backward + Adam step of the tiny
preset (``configs/model/tiny.yaml``) on CPU, batch of 1 sample x 2 views at 128x128 px, median of
a few steps after a warm-up. Gaussian counts use the real head-model region masks.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import numpy as np
import torch

from synshot.config import load_config
from synshot.losses import LossConfig, PriorLoss
from synshot.model import ModelConfig, SynShotPrior, render_gaussians

CONFIGS = Path(__file__).resolve().parents[2] / "configs" / "model"


def _batch(cfg: ModelConfig, b: int, v: int, size: int, seed: int = 0) -> dict:
    """A batch in the loader's format built from the head model (images: random, timing only)."""
    from synshot.head import HeadModel, sample_expression, sample_identity

    rng = np.random.default_rng(seed)
    head = HeadModel()
    maps = [head.uv_maps(sample_identity(rng), sample_expression(rng), cfg.uv_size) for _ in range(b)]
    k = torch.tensor([[size * 2.5, 0, size / 2], [0, size * 2.5, size / 2], [0, 0, 1]]).expand(b, v, 3, 3)
    w2c = torch.eye(4).repeat(b, v, 1, 1)
    w2c[..., 2, 3] = 0.6
    g = torch.Generator().manual_seed(seed)
    return {
        "tex": torch.stack([torch.as_tensor(m["tex"]) for m in maps]).float(),
        "verts": torch.stack([torch.as_tensor(m["verts"]) for m in maps]).float(),
        "exp": torch.stack([torch.as_tensor(m["exp"]) for m in maps]).float(),
        "rgb": torch.rand(b, v, 3, size, size, generator=g),
        "mask": torch.ones(b, v, 1, size, size),
        "K": k.contiguous(),
        "w2c": w2c,
        "head_pose": torch.eye(4).repeat(b, 1, 1),
    }


def _step_time(cfg: ModelConfig, steps: int, b: int = 1, v: int = 2, size: int = 128) -> float:
    torch.manual_seed(0)
    model = SynShotPrior(cfg).train()
    loss_fn = PriorLoss(LossConfig(lpips=0.0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-4)
    batch = _batch(cfg, b, v, size)
    times = []
    for i in range(steps + 1):
        t0 = time.perf_counter()
        out = model(batch["tex"], batch["verts"], batch["exp"], batch["head_pose"])
        rgb, _ = render_gaussians(out.gaussians, batch["K"], batch["w2c"], size, size, loss_fn.cfg.background, "torch")
        total, _ = loss_fn(out, rgb, batch)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        if i > 0:  # the first step pays one-off allocation costs
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def run(quick: bool = False) -> dict[str, float | int]:
    tiny = load_config(ModelConfig, CONFIGS / "tiny.yaml")
    figures: dict[str, float | int] = {}
    model = SynShotPrior(tiny)
    figures["prior_params_tiny"] = sum(p.numel() for p in model.parameters())
    for name, cfg_name in (("tiny", "tiny"), ("base", "base"), ("paper", "paper")):
        if quick and name != "tiny":
            continue
        counts = SynShotPrior(load_config(ModelConfig, CONFIGS / f"{cfg_name}.yaml")).gaussian_counts()
        suffix = "" if name == "tiny" else f"_{name}"
        figures[f"gaussians_face{suffix}"] = counts.get("face", 0)
        figures[f"gaussians_scalp{suffix}"] = counts.get("scalp", 0)
        figures[f"gaussians_total{suffix}"] = sum(counts.values())
    figures["prior_step_s_tiny"] = _step_time(tiny, steps=2 if quick else 5)
    return figures
