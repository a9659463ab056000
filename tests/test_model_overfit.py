"""Single-process overfit: the tiny prior on 2 ray-traced synthetic heads must fit them.

The samples are built exactly like the dataset's: ``synshot.head`` UV maps of sampled identities
and expressions, ground-truth images from the Mitsuba ray tracer (a real domain gap: path-traced
shading vs splatted Gaussians). Asserts a PSNR gain on the training views and that both codebooks
stay in use.
"""

import time

import numpy as np
import pytest
import torch

from synshot.config import load_config
from synshot.losses import LossConfig, PriorLoss, psnr
from synshot.model import ModelConfig, SynShotPrior, render_gaussians
from test_model import CONFIGS

pytestmark = pytest.mark.slow

B, V, SIZE, STEPS = 2, 2, 64, 60


def make_batch(uv_size: int, seed: int = 0) -> dict:
    from synshot.head import HeadModel, sample_cameras, sample_expression, sample_identity
    from synshot.raytrace import RayTraceConfig, RayTracer

    rng = np.random.default_rng(seed)
    head = HeadModel()
    tracer = RayTracer(RayTraceConfig(spp=8, background=(1.0, 1.0, 1.0), seed=seed))
    out = {k: [] for k in ("tex", "verts", "exp", "rgb", "mask", "K", "w2c", "head_pose")}
    for _ in range(B):
        ident, expr = sample_identity(rng), sample_expression(rng)
        maps = head.uv_maps(ident, expr, uv_size)
        cams = sample_cameras(rng, V, SIZE, SIZE)
        views = tracer.render(head.mesh(ident, expr), cams, 0)
        for k in ("tex", "verts", "exp"):
            out[k].append(maps[k].float())
        out["rgb"].append(torch.stack([torch.from_numpy(rgb).permute(2, 0, 1).float() / 255 for rgb, _ in views]))
        out["mask"].append(torch.stack([torch.from_numpy(m)[None].float() / 255 for _, m in views]))
        out["K"].append(torch.tensor(np.stack([k for k, _ in cams]), dtype=torch.float32))
        out["w2c"].append(torch.tensor(np.stack([w for _, w in cams]), dtype=torch.float32))
        out["head_pose"].append(torch.eye(4))
    return {k: torch.stack(v) for k, v in out.items()}


def test_tiny_prior_overfits_two_raytraced_heads():
    torch.manual_seed(0)
    cfg = load_config(ModelConfig, CONFIGS / "tiny.yaml")
    batch = make_batch(cfg.uv_size)
    model = SynShotPrior(cfg)
    loss_fn = PriorLoss(LossConfig(lpips=0.0))
    target = loss_fn.composite_target(batch)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)

    def evaluate() -> float:
        model.eval()
        with torch.no_grad():
            out = model(batch["tex"], batch["verts"], batch["exp"], batch["head_pose"])
            rgb, _ = render_gaussians(out.gaussians, batch["K"], batch["w2c"], SIZE, SIZE, loss_fn.cfg.background,
                                      "torch")
        model.train()
        return float(psnr(rgb, target))

    before = evaluate()
    t0 = time.perf_counter()
    for step in range(STEPS):
        out = model(batch["tex"], batch["verts"], batch["exp"], batch["head_pose"])
        rgb, _ = render_gaussians(out.gaussians, batch["K"], batch["w2c"], SIZE, SIZE, loss_fn.cfg.background, "torch")
        total, terms = loss_fn(out, rgb, batch)
        opt.zero_grad(set_to_none=True)
        total.backward()
        opt.step()
        assert torch.isfinite(total), f"step {step}: loss {terms}"
        if step % 20 == 0:
            print(f"step {step} {time.perf_counter() - t0:.1f}s psnr {float(psnr(rgb.detach(), target)):.2f} "
                  + " ".join(f"{k}={float(v.detach()):.4f}" for k, v in terms.items()), flush=True)
    after = evaluate()
    model.eval()
    with torch.no_grad():
        q = model.quantize(*model.encode(batch["tex"], batch["verts"], batch["exp"]))
    used_id, used_expr = q.indices_id.unique().numel(), q.indices_expr.unique().numel()
    print(f"PSNR {before:.2f} -> {after:.2f} dB; codes in use: id {used_id}, expr {used_expr}")
    assert after >= before + 3.0
    assert used_id > 1 and used_expr > 1
