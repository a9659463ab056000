"""One rank of the 2-process non-finite test (launched by tests/test_train_dist_nonfinite.py via torchrun).

Rank 1 alone sees a NaN in window 2 (batches 2, 3 with grad_accum 2); every rank must skip that whole
optimizer step, ending with the weights and LR of a run that never saw the window. Writes one JSON
per rank into the folder given as argv[1].
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from test_train_machinery import ListLoader, RegressionTask, Regressor, exit_without_teardown

from train.checkpoint import CheckpointManager
from train.config import DistributedConfig, OptimConfig
from train.distributed import setup_distributed
from train.engine import build_engine
from train.loop import LoopSettings, Trainer
from train.preempt import StopRequest
from synshot.seeding import seed_everything
from train.tb import TBLogger


def run(env, out: Path, zero: int, steps: int, poison=(), drop=()):
    seed_everything(0, 0)  # same initial weights on every rank
    engine, _ = build_engine(Regressor(), OptimConfig(lr=1e-2, warmup_steps=2, min_lr=1e-4),
                             DistributedConfig(zero_stage=zero, grad_clip=1.0, grad_accum=2), env, 4, 6)
    lines: list[str] = []
    trainer = Trainer(engine=engine, task=RegressionTask(), loader=ListLoader(poison=poison, drop=drop),
                      settings=LoopSettings(max_steps=steps, grad_accum=2, ckpt_every=1000, log_every=1),
                      device="cpu", rank=env.rank, world_size=env.world_size,
                      ckpt=CheckpointManager(out / "ck", env.rank, env.world_size, 1),
                      tb=TBLogger(out / "tb", enabled=False), stop=StopRequest(signals=()), meta={},
                      log=lines.append)
    trainer.save = lambda: None
    assert trainer.run() == 0
    weights = {k: v.detach().clone() for k, v in engine.module.state_dict().items()}
    return weights, engine.get_lr()[0], trainer, lines


def main() -> None:
    out = Path(sys.argv[1])
    env = setup_distributed()
    result: dict = {"rank": env.rank, "stages": {}}
    for zero in (0, 1, 2):
        ref_w, ref_lr, _, _ = run(env, out / f"ref{zero}", zero, 2, drop={2, 3})
        poison = {3} if env.rank == 1 else set()
        w, lr, trainer, lines = run(env, out / f"bad{zero}", zero, 3, poison=poison)
        result["stages"][zero] = {
            "weights_equal": all(torch.equal(ref_w[k], w[k]) for k in ref_w),
            "lr_equal": ref_lr == lr, "nonfinite_total": trainer.nonfinite_total, "loader_pos": trainer.loader.pos,
            "finite": all(bool(torch.isfinite(v).all()) for v in w.values()),
            "log": [m for m in lines if "non-finite" in m],
        }
    (out / f"rank{env.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
    exit_without_teardown()
