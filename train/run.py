"""``python -m train``: command line -> config -> distributed setup -> prior, loader, engine -> loop.

Wiring only; each piece lives in its own module. Returns the exit codes of :mod:`train.errors`.
"""

from __future__ import annotations

import json
import logging
import sys
import time
import warnings
from pathlib import Path
from typing import Sequence

from synshot.cli import Command, DataFileError, get_logger, process_rank
from train.errors import CheckpointError

log = get_logger("train")

CLI = Command(
    "train", "Train the SynShot prior with DeepSpeed (one process, torchrun, or srun: one task per GPU).",
    config_cls="train.config:TrainConfig", default_config="configs/train/tiny.yaml",
    out_help="runs folder (config key out_dir): the run writes <out>/<name>/ (checkpoints/, tb/, config.json)",
    out_key="out_dir",
    example="synshot train --config configs/train/tiny.yaml max_steps=50 optim.lr=1e-3",
)
CLI.parser.add_argument("--resume", default="auto",
                        help="auto (default: latest checkpoint of the run if any), never, or a checkpoint/run dir")


def _log(rank: int, msg: str, level: int = logging.INFO) -> None:
    """Rank 0 reports the run; the other ranks would only repeat it."""
    if rank == 0:
        log.log(level, msg)


def _on_rank0(fn, rank: int, world_size: int):
    """Run ``fn`` on rank 0 and give every rank its result, or its user error (same message, same exit
    code) so that all ranks stop together instead of the others waiting in a collective until the timeout."""
    import torch.distributed as dist

    from synshot.cli import SynshotError

    result, error = None, None
    if rank == 0:
        try:
            result = fn()
        except SynshotError as exc:
            if world_size == 1:
                raise
            error = (str(exc), exc.exit_code)
    if world_size == 1:
        return result
    box = [error]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        err = SynshotError(box[0][0])
        err.exit_code = box[0][1]
        raise err
    return result


def _broadcast_path(path: Path | None, rank: int, world_size: int) -> Path | None:
    """Rank 0 decides which checkpoint to resume; everyone uses that one."""
    import torch.distributed as dist

    if world_size == 1:
        return path
    obj = [str(path) if path is not None else None]
    dist.broadcast_object_list(obj, src=0)
    return Path(obj[0]) if obj[0] is not None else None


def train(cfg, resume: str = "auto", stop=None) -> int:
    """Run training; ``stop`` is a StopRequest installed by the caller (``main`` installs it first thing)."""
    from train.preempt import StopRequest

    stop = stop if stop is not None else StopRequest().install()  # before the heavy imports below

    import torch

    from synshot.data import make_loader
    from synshot.losses import PriorLoss
    from synshot.model import SynShotPrior
    from train.checkpoint import CheckpointManager, read_meta
    from train.config import arch_hash, config_hash, diff_keys, public_config
    from train.resume import check_resume_config, rebuild_schedule
    from train.distributed import setup_distributed
    from train.engine import build_engine, set_activation_checkpointing
    from train.loop import LoopSettings, Trainer
    from synshot.seeding import seed_everything
    from train.state import restore_rng
    from train.encoder_input import EncoderInput
    from train.task import PriorTask
    from train.tb import TBLogger
    from train.validate import Validator

    from synshot import fsio

    run_lock = None
    try:
        env = setup_distributed(cfg.distributed.timeout_minutes)
        rank, world = env.rank, env.world_size
        # one training per run dir: a second one is refused, naming the first (on every rank)
        run_lock = _on_rank0(lambda: fsio.OutputLock(cfg.run_dir, purpose="train").acquire(), rank, world)
        bf16 = cfg.distributed.use_bf16(env.device.startswith("cuda"))
        _log(rank, f"run {cfg.run_dir} | launcher {env.launcher} | world {world} | {env.device} "
                   f"({env.backend}) | ZeRO {cfg.distributed.zero_stage} | {'bf16' if bf16 else 'fp32'} | "
                   f"global batch {cfg.global_batch(world)}")
        torch.manual_seed(cfg.seed)  # identical initial weights on every rank and in every run
        model = SynShotPrior(cfg.model)
        set_activation_checkpointing(model, cfg.distributed.activation_checkpointing)
        seed_everything(cfg.seed, rank)
        loss = PriorLoss(cfg.loss).to(env.device)
        loader = make_loader(cfg.data, rank, world)
        _check_head_version(loader, rank)
        task = PriorTask(loss, cfg.render, env.device, bf16, EncoderInput(cfg.encoder_input))
        validator = Validator(cfg, task, rank, world) if cfg.logging.val_samples > 0 else None
        engine, _ = build_engine(model, cfg.optim, cfg.distributed, env, cfg.data.batch_size, cfg.max_steps)
        if validator is not None:
            validator.module = engine

        ckpt = CheckpointManager(cfg.checkpoint_dir, rank, world, cfg.checkpoint.keep_last)
        path = _on_rank0(lambda: ckpt.find(resume), rank, world)
        if rank == 0:
            ckpt.clean_stale()
        path = _broadcast_path(path, rank, world)
        meta = {
            "config": public_config(cfg), "config_hash": config_hash(cfg), "arch_hash": arch_hash(cfg),
            "zero_stage": cfg.distributed.zero_stage, "bf16": bf16, "torch": torch.__version__,
        }
        start_step, nonfinite_total = 0, 0
        if path is not None:
            saved = read_meta(path, verify=False)  # config checks first; files are verified by load
            if saved.get("arch_hash") != meta["arch_hash"]:
                keys = diff_keys(saved.get("config", {}).get("model", {}), meta["config"]["model"], "model")
                raise CheckpointError(
                    f"{path}: incompatible with this config: the model architecture differs at {keys[:8]}; "
                    "resume with the config it was trained with, or start a new run (another name/out_dir)"
                )
            if saved.get("zero_stage") != cfg.distributed.zero_stage:
                raise CheckpointError(f"{path}: saved with ZeRO stage {saved.get('zero_stage')}, config has "
                                      f"{cfg.distributed.zero_stage}; use the same stage to resume")
            changes = check_resume_config(path, saved.get("config", {}), meta["config"])
            saved, state = ckpt.load(engine, path)
            lr_now = rebuild_schedule(engine, lr=cfg.optim.lr, min_lr=cfg.optim.min_lr,
                                      warmup_steps=cfg.optim.warmup_steps, max_steps=cfg.max_steps)
            for line in changes:
                _log(rank, f"resume: config change applied: {line}")
            if changes:
                _log(rank, f"resume: LR schedule rebuilt from step {saved['step']} for max_steps="
                           f"{cfg.max_steps}: lr now {lr_now:.6g}")
            start_step, nonfinite_total = int(saved["step"]), int(state.get("nonfinite_total", 0))
            try:
                if state.get("elastic"):
                    split = loader.load_elastic_state(state["loader_states"])
                else:
                    loader.load_state_dict(state["loader"])
            except (KeyError, ValueError) as exc:
                raise CheckpointError(f"{path}: cannot restore the data position: {exc}") from None
            if state.get("elastic"):
                seed_everything(cfg.seed + start_step, rank)  # RNG streams of another world cannot be split
                _log(rank, f"elastic resume: checkpoint of {state['old_world_size']} ranks -> {world} ranks "
                           f"(universal conversion {state['convert_seconds']:.1f} s); the unread rest of the "
                           f"interrupted epoch ({split['rests']} streams) is re-split, new split from epoch "
                           f"{split['resume_epoch']}")
            else:
                restore_rng(state["rng"])
            _log(rank, f"resumed from {path} at step {start_step}")
        if rank == 0:
            fsio.write_json(cfg.run_dir / "config.json", meta["config"], sort_keys=True)
        tb = TBLogger(cfg.run_dir / "tb", enabled=rank == 0, purge_step=start_step + 1 if start_step else None)
        if start_step == 0:
            tb.text("config", "```\n" + json.dumps(meta["config"], indent=2, sort_keys=True) + "\n```")
        progress = cfg.logging.progress
        settings = LoopSettings(
            max_steps=cfg.max_steps, grad_accum=cfg.distributed.grad_accum, max_nonfinite=cfg.max_nonfinite_steps,
            ckpt_every=cfg.checkpoint.every_n_steps, log_every=cfg.logging.every_n_steps,
            image_every=cfg.logging.image_every_n_steps, image_views=cfg.logging.image_views,
            val_every=cfg.logging.val_every_n_steps, profile_steps=cfg.profile.window(),
            progress=sys.stderr.isatty() if progress == "auto" else bool(progress),
        )
        trainer = Trainer(engine=engine, task=task, loader=loader, settings=settings, device=env.device, rank=rank,
                          world_size=world, ckpt=ckpt, tb=tb, stop=stop, meta=meta, validate=validator,
                          start_step=start_step, nonfinite_total=nonfinite_total)
        t0 = time.perf_counter()
        try:
            code = trainer.run()
        finally:
            tb.close()
        _log(rank, f"finished at step {trainer.step} in {time.perf_counter() - t0:.1f} s "
                   f"(last loss {trainer.last_loss}), exit {code}")
        return code
    finally:
        if run_lock is not None:
            run_lock.release()
        stop.close()


def _check_head_version(loader, rank: int) -> None:
    """Warn when the shards were rendered with another head model (UV layout / regions may differ)."""
    from synshot.head import HEAD_MODEL_VERSION

    gen = (getattr(loader, "manifest", None) or {}).get("generator_config") or {}
    data_version = gen.get("head_model_version")
    if data_version is not None and data_version != HEAD_MODEL_VERSION:
        _log(rank, f"WARNING: the data was rendered with head model {data_version!r}, this code has "
                   f"{HEAD_MODEL_VERSION!r}: UV regions of the prior may not match the maps", logging.WARNING)


def main(argv: Sequence[str] | None = None) -> int:
    from train.preempt import StopRequest

    # first of all: a SIGUSR1/SIGTERM during start-up is remembered, not fatal; the previous handlers are
    # restored on return, so an in-process caller (tests, the synshot script) keeps its own
    with StopRequest() as stop:
        # DeepSpeed 0.19.8 ZeRO calls a deprecated torch collective on every step: one line per rank, no information
        warnings.filterwarnings("ignore", message=r".*all_gather_into_tensor.* is deprecated", category=FutureWarning)
        return CLI.main(argv, lambda args, cfg: _run(args, cfg, stop))


def _run(args, cfg, stop) -> int:
    try:
        return train(cfg, args.resume, stop)
    except DataFileError as exc:  # every rank reads its own shards: say which one failed
        raise DataFileError(f"data error (rank {process_rank()}): {exc}") from None
