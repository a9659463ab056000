"""One rank of a 2-process elastic-resume check (launched by tests/test_train_elastic.py via torchrun).

``load CKPT ZERO OUT``: build the small regression engine at world size 2, load a checkpoint written by
ONE process (elastic: DeepSpeed universal format), compare the weights with the saved ones, take 2
more steps, and write ``OUT/rank<r>.json``.
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
from train.state import seed_everything
from train.tb import TBLogger


def main() -> None:
    ckpt, zero, out = Path(sys.argv[1]), int(sys.argv[2]), Path(sys.argv[3])
    env = setup_distributed()
    seed_everything(123, env.rank)  # other initial weights than the checkpoint's
    engine, _ = build_engine(Regressor(), OptimConfig(lr=1e-2, warmup_steps=2, min_lr=1e-4),
                             DistributedConfig(zero_stage=zero, grad_clip=1.0), env, 4, 6)
    manager = CheckpointManager(ckpt.parent, env.rank, env.world_size, 2)
    meta, state = manager.load(engine, ckpt)
    saved = torch.load(ckpt / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
    live = engine.module.state_dict()
    result = {"rank": env.rank, "elastic": bool(state.get("elastic")), "old_world": state.get("old_world_size"),
              "weights_equal": all(torch.equal(saved[k], live[k]) for k in saved), "lr": engine.get_lr()[0],
              "step": meta["step"]}
    losses: list[float] = []
    trainer = Trainer(engine=engine, task=RegressionTask(), loader=ListLoader(), device="cpu", rank=env.rank,
                      settings=LoopSettings(max_steps=meta["step"] + 2, log_every=1, ckpt_every=1000),
                      world_size=env.world_size, ckpt=CheckpointManager(out / "ck", env.rank, env.world_size, 1),
                      tb=TBLogger(out / "tb", enabled=False), stop=StopRequest(signals=()), meta={},
                      start_step=meta["step"], log=lambda m: None)
    trainer.save = lambda: None
    assert trainer.run() == 0
    result["loss_after"] = trainer.last_loss
    (out / f"rank{env.rank}.json").write_text(json.dumps(result))


if __name__ == "__main__":
    main()
    exit_without_teardown()
