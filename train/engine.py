"""DeepSpeed engine from the typed config: ZeRO stage, accumulation, clipping, AdamW, warmup+cosine.

Why a client torch AdamW and a torch LambdaLR: DeepSpeed's own Adam variants JIT-compile C++ ops
on first use (45-130 s on a fresh CPU machine); torch's AdamW needs none and DeepSpeed still
shards its state under ZeRO 1-3 and saves/restores it (and the scheduler) in checkpoints.
bf16 is done with ``torch.autocast`` in the loop (fp32 master weights and gradients), not with
DeepSpeed's bf16 mode, so the renderer and the losses stay in fp32 (see docs/decisions.md).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from train.config import DistributedConfig, OptimConfig
from train.distributed import DistEnv
from train.telemetry import comm_logger_config


class WarmupCosine:
    """LR multiplier: linear warmup over ``warmup`` steps, then cosine from 1 to ``floor`` at ``total``.

    A class (not a lambda) so that ``LambdaLR.state_dict()`` records its parameters.
    """

    def __init__(self, warmup: int, total: int, floor: float) -> None:
        self.warmup, self.total, self.floor = int(warmup), int(total), float(floor)

    def __call__(self, step: int) -> float:
        if self.warmup > 0 and step < self.warmup:
            return (step + 1) / self.warmup
        span = max(1, self.total - self.warmup)
        t = min(1.0, max(0.0, (step - self.warmup) / span))
        return self.floor + (1.0 - self.floor) * 0.5 * (1.0 + math.cos(math.pi * t))


def deepspeed_config(dist_cfg: DistributedConfig, micro_batch: int, world_size: int) -> dict[str, Any]:
    """The DeepSpeed JSON config (no optimizer/scheduler sections: both are passed as objects)."""
    zero: dict[str, Any] = {"stage": dist_cfg.zero_stage}
    if dist_cfg.zero_stage in (1, 2):
        # deterministic reductions, same bucket layout on every run
        zero.update(overlap_comm=False, contiguous_gradients=True, reduce_scatter=True)
    return {
        "train_micro_batch_size_per_gpu": micro_batch,
        "gradient_accumulation_steps": dist_cfg.grad_accum,
        "train_batch_size": micro_batch * dist_cfg.grad_accum * world_size,
        "gradient_clipping": dist_cfg.grad_clip,
        "zero_optimization": zero,
        "zero_allow_untested_optimizer": True,  # torch AdamW under ZeRO is fine and needs no compiled op
        "bf16": {"enabled": False},
        "fp16": {"enabled": False},
        "steps_per_print": 10**9,  # we log ourselves
        "wall_clock_breakdown": False,
        "checkpoint": {"tag_validation": "FAIL"},  # all ranks must agree on the tag
        **(comm_logger_config() if dist_cfg.comm_timing else {}),
    }


def build_engine(
    model: nn.Module,
    optim: OptimConfig,
    dist_cfg: DistributedConfig,
    dist_env: DistEnv,
    micro_batch: int,
    max_steps: int,
):
    """Wrap ``model`` in a DeepSpeed engine; returns ``(engine, ds_config)``."""
    import deepspeed

    if dist_env.device == "cpu":
        import deepspeed.ops

        deepspeed.ops.__compatible_ops__["deepspeed_shm_comm"] = False  # gloo does not need the shm op
    model.to(dist_env.device)
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters")
    optimizer = torch.optim.AdamW(
        params, lr=optim.lr, betas=optim.betas, eps=optim.eps, weight_decay=optim.weight_decay, foreach=False
    )
    floor = optim.min_lr / optim.lr
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(optim.warmup_steps, max_steps, floor))
    ds_config = deepspeed_config(dist_cfg, micro_batch, dist_env.world_size)
    engine, _, _, _ = deepspeed.initialize(
        model=model, optimizer=optimizer, lr_scheduler=scheduler, config=ds_config, dist_init_required=False
    )
    return engine, ds_config


def set_activation_checkpointing(model: nn.Module, on: bool) -> int:
    """Switch activation checkpointing in every module that supports it (the prior's decoders).

    A memory setting, not part of the architecture: the weights and the outputs are the same either
    way, so checkpoints resume across the switch. Returns the number of modules switched.
    """
    n = 0
    for m in model.modules():
        if hasattr(m, "activation_checkpointing"):
            m.activation_checkpointing = bool(on)
            n += 1
    return n


def grad_norm(engine) -> float | None:
    """Global gradient 2-norm of the last optimizer step (before clipping).

    ZeRO 1-3 record it themselves; for stage 0 it is computed from the (already all-reduced)
    ``.grad`` tensors, so call this after ``engine.backward`` and before ``engine.step``.
    """
    norm = engine.get_global_grad_norm()
    if norm is not None:
        return float(norm)
    grads = [p.grad.detach().float() for p in engine.module.parameters() if p.grad is not None]
    if not grads:
        return None
    return float(torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g) for g in grads])))
