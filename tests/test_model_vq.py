"""Vector quantiser: EMA updates, dead-code restart, straight-through gradients, usage statistics."""

import torch

from synshot.model.vq import VectorQuantizer


def _z(b=4, d=8, h=4, w=4, seed=0):
    return torch.randn(b, d, h, w, generator=torch.Generator().manual_seed(seed))


def test_quantises_to_nearest_code_and_shapes():
    vq = VectorQuantizer(16, 8).eval()
    z = _z()
    q, loss, idx, stats = vq(z)
    assert q.shape == z.shape and idx.shape == (4, 4, 4)
    flat = z.permute(0, 2, 3, 1).reshape(-1, 8)
    expect = torch.cdist(flat, vq.embed).argmin(1)
    assert torch.equal(idx.flatten(), expect)
    assert torch.allclose(q.permute(0, 2, 3, 1).reshape(-1, 8), vq.embed[expect], atol=1e-6)
    assert torch.isclose(loss, 0.25 * ((z - q) ** 2).mean())
    assert set(stats) == {"perplexity", "usage", "restarted"}


def test_eval_mode_does_not_touch_codebook():
    vq = VectorQuantizer(16, 8).eval()
    before = vq.embed.clone()
    vq(_z())
    assert torch.equal(before, vq.embed)


def test_ema_update_moves_used_codes_towards_inputs():
    vq = VectorQuantizer(4, 2, decay=0.5, dead_threshold=0.0).train()
    z = torch.zeros(1, 2, 2, 2)
    z[0, 0] = 3.0  # every vector is (3, 0)
    initial = vq.embed.clone()
    _, _, idx, _ = vq(z)
    code = int(idx[0, 0, 0])
    d_before = (initial[code] - torch.tensor([3.0, 0.0])).norm()
    for _ in range(20):
        vq(z)
    assert (vq.embed[code] - torch.tensor([3.0, 0.0])).norm() < 0.05 < d_before


def test_dead_codes_are_restarted_from_encoder_outputs():
    vq = VectorQuantizer(8, 2, decay=0.5, dead_threshold=0.1, seed=3).train()
    # all inputs around two far-away points: most codes never win and their EMA counts decay
    pts = torch.tensor([[10.0, 10.0], [-10.0, 10.0]])
    z = pts.repeat(8, 1).view(1, 4, 4, 2).permute(0, 3, 1, 2).contiguous()
    restarted = 0.0
    for _ in range(10):
        _, _, _, stats = vq(z)
        restarted += float(stats["restarted"])
    assert restarted > 0
    # restarted codes now sit near the encoder outputs
    near = torch.cdist(vq.embed, pts).min(1).values < 1.0
    assert int(near.sum()) >= 3


def test_restart_is_deterministic():
    def run():
        vq = VectorQuantizer(8, 2, decay=0.5, dead_threshold=0.1, seed=5).train()
        z = _z(2, 2, 3, 3, seed=1)
        for _ in range(5):
            vq(z)
        return vq.embed.clone()

    assert torch.equal(run(), run())


def test_straight_through_gradient_reaches_encoder():
    enc = torch.nn.Conv2d(3, 8, 1)
    vq = VectorQuantizer(16, 8).train()
    q, loss, _, _ = vq(enc(torch.randn(2, 3, 4, 4)))
    (q.sum() + loss).backward()
    assert enc.weight.grad is not None and enc.weight.grad.abs().sum() > 0


def test_perplexity_and_usage():
    vq = VectorQuantizer(4, 2).eval()
    with torch.no_grad():
        vq.embed.copy_(torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]]))
    z = vq.embed[[0, 1, 0, 1]].T.reshape(1, 2, 2, 2)  # uses codes 0 and 1 equally
    _, _, idx, stats = vq(z)
    assert sorted(idx.flatten().tolist()) == [0, 0, 1, 1]
    assert torch.isclose(stats["perplexity"], torch.tensor(2.0), atol=1e-4)
    assert torch.isclose(stats["usage"], torch.tensor(0.5))


def test_codebook_stays_float32_under_half_precision_casts():
    vq = VectorQuantizer(16, 8).to(torch.bfloat16).train()
    assert vq.embed.dtype == vq.cluster_size.dtype == vq.embed_avg.dtype == torch.float32
    q, loss, _, _ = vq(_z().to(torch.bfloat16))
    assert q.dtype == torch.bfloat16 and torch.isfinite(loss)


def _ddp_worker(rank: int, world: int, init_file: str, out_dir: str) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        vq = VectorQuantizer(8, 2, decay=0.5, dead_threshold=0.1, seed=7).train()
        for step in range(6):  # different data on each rank; restarts happen
            vq(_z(2, 2, 3, 3, seed=100 * rank + step) * (1 + rank))
        torch.save({"embed": vq.embed, "cluster_size": vq.cluster_size}, f"{out_dir}/rank{rank}.pt")
    finally:
        dist.destroy_process_group()


def test_codebooks_stay_identical_across_ranks(tmp_path):
    import torch.multiprocessing as mp

    mp.start_processes(_ddp_worker, args=(2, str(tmp_path / "init"), str(tmp_path)), nprocs=2, start_method="spawn")
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["embed"], r1["embed"]) and torch.equal(r0["cluster_size"], r1["cluster_size"])
