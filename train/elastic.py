"""Elastic resume: a checkpoint written by N ranks continues on M ranks.

Weights and optimizer state: ZeRO 1-3 shard the optimizer state by rank, so the checkpoint is first
converted (once, by rank 0, into ``<step dir>/universal``) with DeepSpeed's ``ds_to_universal``,
which stores every parameter's fp32 master copy and Adam moments whole; the new engine then reads
its own shards from it (DeepSpeed's ``load_universal``). ZeRO 0 checkpoints hold the whole state
in one file and load at any world size as they are. Per-rank trainer state: the data positions of
ALL old ranks are handed to the loader (``StreamingLoader.load_elastic_state``), which re-splits the
rest of the interrupted epoch; RNG streams cannot be split and are re-seeded from (seed, step, rank).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any

import torch.distributed as dist

from train.checkpoint import _barrier, rank_state_name
from train.errors import CheckpointError

UNIVERSAL = "universal"


def convert_to_universal(path: Path) -> Path:
    """``<step dir>`` -> ``<step dir>/universal`` (idempotent; call on one rank). Returns the folder."""
    from deepspeed.checkpoint import ds_to_universal

    out = path / UNIVERSAL
    if (out / "zero").is_dir():
        return out
    tmp = path / f".{UNIVERSAL}-tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    args = argparse.Namespace(input_folder=str(path), output_folder=str(tmp), num_extract_workers=1,
                              num_merge_workers=1, keep_temp_folder=False, strict=True, inject_missing_state=True)
    chatter = io.StringIO()  # ds_to_universal prints every step; keep it for the error message only
    try:
        with contextlib.redirect_stdout(chatter):
            ds_to_universal.main(args)
    except Exception as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise CheckpointError(f"{path}: conversion to DeepSpeed's universal format failed: {type(exc).__name__}: "
                              f"{exc}\n{chatter.getvalue()[-2000:]}") from exc
    if out.exists():
        shutil.rmtree(out)
    os.rename(tmp, out)
    return out


def _restore_buffers(engine, model_file: Path) -> None:
    """The universal format carries parameters only; buffers (the VQ codebook EMA) come from the model file."""
    import torch

    module = torch.load(model_file, map_location="cpu", weights_only=False).get("module") or {}
    with torch.no_grad():
        for name, buf in engine.module.named_buffers():
            if name in module:
                buf.copy_(module[name].to(buf.device, buf.dtype))


def all_rank_states(path: Path, world_size: int) -> list[dict[str, Any]]:
    states = []
    for r in range(world_size):
        f = path / rank_state_name(r)
        try:
            states.append(json.loads(f.read_text()))
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{f}: unreadable rank state ({exc}); an elastic resume needs every old rank's") from None
    return states


def load_elastic(engine, path: Path, meta: dict[str, Any], rank: int) -> tuple[dict[str, Any], float]:
    """Collective: load ``path`` (written by ``meta['world_size']`` ranks) into ``engine`` of another world
    size. Returns (client state, seconds spent converting) ."""
    stage = engine.zero_optimization_stage()
    t0 = time.perf_counter()
    if stage == 0:
        load_dir, tag = path.parent, path.name
    else:
        error = None
        if rank == 0:
            try:
                convert_to_universal(path)
            except CheckpointError as exc:
                error = str(exc)
        if dist.is_available() and dist.is_initialized():
            box = [error]
            dist.broadcast_object_list(box, src=0)
            error = box[0]
        if error:
            raise CheckpointError(error)
        load_dir, tag = path, UNIVERSAL
    convert_s = time.perf_counter() - t0
    cfg = engine._config
    before = cfg.load_universal_checkpoint
    cfg.load_universal_checkpoint = stage != 0
    try:
        load_path, client = engine.load_checkpoint(str(load_dir), tag=tag)
    except Exception as exc:
        raise CheckpointError(f"{path}: DeepSpeed could not load it at world size {dist.get_world_size()}: "
                              f"{type(exc).__name__}: {exc}") from exc
    finally:
        cfg.load_universal_checkpoint = before
    if load_path is None or client is None:
        raise CheckpointError(f"{path}: DeepSpeed found no loadable checkpoint files in {load_dir / tag}")
    if stage != 0:
        _restore_buffers(engine, Path(load_path))
    _barrier()
    return client, convert_s
