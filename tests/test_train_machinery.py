"""Trainer machinery in-process (world size 1, gloo): engine, loop, non-finite policy, checkpoints.

Uses a small regression task so the machinery is checked independently of the prior; the real
prior + loader are exercised end to end by tests/test_train_cli.py (real processes).
"""

from __future__ import annotations

import json
import os
import sys

import pytest
import torch
from torch import nn

from train.checkpoint import LATEST, META, CheckpointManager, list_checkpoints, read_meta, resolve_checkpoint
from train.config import DistributedConfig, OptimConfig
from train.distributed import setup_distributed
from train.engine import WarmupCosine, build_engine
from train.errors import EXIT_OK, EXIT_PREEMPTED, CheckpointError, NonFiniteLossError
from train.loop import LoopSettings, StepOutput, Trainer
from train.preempt import StopRequest
from synshot.seeding import seed_everything
from train.state import restore_rng
from train.tb import TBLogger


class Regressor(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(8, 16), nn.Tanh(), nn.Linear(16, 1))
        self.register_buffer("ema", torch.zeros(8))

    def forward(self, x):
        if self.training:
            with torch.no_grad():
                self.ema.mul_(0.9).add_(0.1 * x.mean(0))
        return self.net(x)


class RegressionTask:
    def training_step(self, engine, batch, want_images):
        pred = engine(batch["x"])
        loss = ((pred - batch["y"]) ** 2).mean() + 0.0 * torch.randn(()).abs()  # consumes torch RNG
        return StepOutput(loss=loss, terms={"total": loss.detach()}, num_samples=len(batch["x"]),
                          num_images=len(batch["x"]))


def exit_without_teardown(code: int = 0) -> None:
    """End a torchrun worker script once its results are written, skipping interpreter teardown.

    Why: after these in-process 2-rank engines finish (process group destroyed or not), a C++ thread
    of the CPU distributed stack can still be joinable when the interpreter finalises, and
    std::terminate turns the finished rank into SIGABRT ("terminate called without an active
    exception"): about half the runs of dist_elastic_worker.py on an idle 2-core machine, with every
    result already on disk. The train CLI's own 2-process runs are not affected."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


class ListLoader:
    """Deterministic batches with an exact, JSON-able position (like the real loader's state_dict)."""

    def __init__(self, n=64, poison=(), drop=()):
        g = torch.Generator().manual_seed(1)
        self.x = torch.randn(n, 8, generator=g)
        self.y = self.x.sum(1, keepdim=True).sin()
        self.pos, self.poison, self.drop = 0, set(poison), set(drop)

    def __iter__(self):
        while True:
            if self.pos in self.drop:  # a reference run that never sees these batches
                self.pos += 1
                continue
            i = self.pos % (len(self.x) // 4)
            b = {"x": self.x[4 * i: 4 * i + 4].clone(), "y": self.y[4 * i: 4 * i + 4].clone(),
                 "key": [f"b{self.pos}s{j}" for j in range(4)]}
            if self.pos in self.poison:
                b["x"][0, 0] = float("nan")
            self.pos += 1
            yield b

    def state_dict(self):
        return {"pos": self.pos}

    def load_state_dict(self, s):
        self.pos = s["pos"]


@pytest.fixture(scope="module")
def dist_env():
    return setup_distributed()


def _train(tmp_path, dist_env, steps, *, resume=None, stop_after=None, zero=1, poison=(), max_nonfinite=3,
           ckpt_every=100, name="run", grad_accum=1, drop=(), log=None):
    seed_everything(0, 0)
    model = Regressor()
    engine, _ = build_engine(model, OptimConfig(lr=1e-2, warmup_steps=2, min_lr=1e-4),
                             DistributedConfig(zero_stage=zero, grad_clip=1.0, grad_accum=grad_accum), dist_env, 4, 6)
    loader = ListLoader(poison=poison, drop=drop)
    ckpt = CheckpointManager(tmp_path / name / "ckpt", 0, 1, keep_last=2)
    start = 0
    if resume is not None:
        meta, state = ckpt.load(engine, resume)
        start = meta["step"]
        loader.load_state_dict(state["loader"])
        restore_rng(state["rng"])
    stop = StopRequest(signals=())
    tb = TBLogger(tmp_path / name / "tb", enabled=True, purge_step=start + 1)
    trainer = Trainer(engine=engine, task=RegressionTask(), loader=loader,
                      settings=LoopSettings(max_steps=steps, max_nonfinite=max_nonfinite, ckpt_every=ckpt_every,
                                            log_every=1, grad_accum=grad_accum),
                      device="cpu", rank=0, world_size=1, ckpt=ckpt, tb=tb, stop=stop, meta={"x": 1},
                      start_step=start, log=log)
    if stop_after is not None:
        orig = trainer.task.training_step

        def step_then_stop(e, b, w):
            out = orig(e, b, w)
            if trainer.step + 1 >= stop_after:
                stop.signum = 10
            return out

        trainer.task = type("T", (), {"training_step": staticmethod(step_then_stop)})()
    try:
        code = trainer.run()
    finally:
        tb.close()
    return code, engine, trainer, ckpt


def _weights(engine):
    return {k: v.detach().clone() for k, v in engine.module.state_dict().items()}


@pytest.mark.parametrize("zero", [0, 2])
def test_resume_gives_identical_weights(tmp_path, dist_env, zero):
    code, full, _, _ = _train(tmp_path, dist_env, 6, zero=zero, name="full")
    assert code == EXIT_OK
    code, _, tr, ckpt = _train(tmp_path, dist_env, 6, zero=zero, stop_after=3, name="part")
    assert code == EXIT_PREEMPTED and tr.step == 3
    latest = ckpt.dir / (ckpt.dir / LATEST).read_text().strip()
    assert latest.name == "step_00000003"
    code, resumed, tr, _ = _train(tmp_path, dist_env, 6, zero=zero, resume=latest, name="part")
    assert code == EXIT_OK and tr.step == 6
    a, b = _weights(full), _weights(resumed)
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_nonfinite_skip_leaves_no_trace_then_abort(tmp_path, dist_env):
    _, clean, _, _ = _train(tmp_path, dist_env, 2, name="clean")
    # batch 2 (0-based) is poisoned: step 3 is skipped; weights after 3 steps == weights after 2 clean steps
    _, skipped, tr, _ = _train(tmp_path, dist_env, 3, poison={2}, name="skip")
    assert tr.nonfinite_total == 1
    a, b = _weights(clean), _weights(skipped)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    with pytest.raises(NonFiniteLossError, match="3 steps in a row"):
        _train(tmp_path, dist_env, 10, poison={4, 5, 6}, name="abort")


@pytest.mark.parametrize("zero,poison", [(0, 3), (1, 2), (2, 3)])
def test_grad_accum_nonfinite_micro_batch_skips_the_whole_step(tmp_path, dist_env, zero, poison):
    """Window 2 = batches 2, 3; one of them is NaN (after or before a good backward): the whole optimizer
    step is skipped, so the weights and LR equal a run that never saw batches 2 and 3."""
    lines = []
    _, ref, _, _ = _train(tmp_path, dist_env, 2, zero=zero, grad_accum=2, drop={2, 3}, name=f"ref{zero}")
    code, engine, tr, _ = _train(tmp_path, dist_env, 3, zero=zero, poison={poison}, grad_accum=2,
                                 name=f"acc{zero}", log=lines.append)
    assert code == EXIT_OK and tr.step == 3 and tr.nonfinite_total == 1
    assert tr.loader.pos == 6  # the skipped window's batches were consumed: same data position as an unbroken run
    a, b = _weights(ref), _weights(engine)
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert ref.get_lr() == engine.get_lr()
    msg = [m for m in lines if "non-finite" in m]
    assert len(msg) == 1 and "optimizer step skipped on all ranks" in msg[0], lines
    assert f"rank 0: b{poison}s0, b{poison}s1" in msg[0] and "8 samples of the step discarded" in msg[0], msg


def test_checkpoint_retention_latest_and_corruption(tmp_path, dist_env):
    code, _, _, ckpt = _train(tmp_path, dist_env, 6, ckpt_every=2, name="ret")
    assert code == EXIT_OK
    steps = [s for s, _ in list_checkpoints(ckpt.dir)]
    assert steps == [4, 6]  # keep_last=2
    assert (ckpt.dir / LATEST).read_text().strip() == "step_00000006"
    assert not [p for p in ckpt.dir.iterdir() if p.name.startswith(".")]
    path = resolve_checkpoint(ckpt.dir)
    meta = read_meta(path)
    assert meta["step"] == 6 and meta["world_size"] == 1 and meta["x"] == 1
    # truncated file -> clear error naming it
    big = max((path / f for f in meta["files"]), key=lambda f: f.stat().st_size)
    data = big.read_bytes()
    big.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=f"{big.name}.*truncated"):
        read_meta(path)
    # latest pointing at a missing directory
    (ckpt.dir / LATEST).write_text("step_00000099\n")
    with pytest.raises(CheckpointError, match="does not exist"):
        ckpt.find("auto")
    with pytest.raises(CheckpointError, match="already holds checkpoints"):
        ckpt.find("never")
    # an incomplete save (no meta) is refused
    os.remove(ckpt.dir / "step_00000004" / META)
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        read_meta(ckpt.dir / "step_00000004")


def test_warmup_cosine():
    f = WarmupCosine(warmup=4, total=14, floor=0.1)
    assert [round(f(s), 3) for s in (0, 3)] == [0.25, 1.0]
    assert f(4) == pytest.approx(1.0) and f(14) == pytest.approx(0.1) and f(100) == pytest.approx(0.1)
    assert f(9) == pytest.approx(0.55)


def test_tensorboard_tags(tmp_path, dist_env):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _train(tmp_path, dist_env, 3, name="tb")
    acc = EventAccumulator(str(tmp_path / "tb" / "tb"), size_guidance={"scalars": 0}).Reload()
    tags = set(acc.Tags()["scalars"])
    for t in ("loss/total", "opt/lr", "opt/grad_norm", "perf/samples_per_s_per_gpu", "perf/images_per_s_total",
              "perf/data_wait_fraction", "mem/cpu_rss_mb"):
        assert t in tags, (t, tags)
    assert [e.step for e in acc.Scalars("loss/total")] == [1, 2, 3]
