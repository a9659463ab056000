"""``python -m train.export --ckpt RUN_OR_CKPT_DIR --out FILE.safetensors``: DeepSpeed -> plain weights.

Consolidates the fp32 weights of a training checkpoint (ZeRO 1-3 shards via DeepSpeed's
``zero_to_fp32``; stage 0 from ``mp_rank_00_model_states.pt["module"]``, where zero_to_fp32 does
not apply), checks them against the prior built from the checkpoint's own config, and writes
``synshot.model.io.save_exported`` (safetensors + embedded JSON config; no pickle, no DeepSpeed
needed to load). Checkpoint files are read with pickle: only export checkpoints you trust.
"""

from __future__ import annotations

import argparse
import io
import sys
from contextlib import redirect_stdout
from pathlib import Path
from typing import Sequence

import torch

from synshot.config import ConfigError, validate_config
from train.checkpoint import read_meta, resolve_checkpoint
from train.errors import EXIT_CHECKPOINT, EXIT_OK, CheckpointError


def consolidated_state_dict(path: Path, zero_stage: int) -> dict[str, torch.Tensor]:
    """fp32 state dict (parameters + persistent buffers) of the checkpoint tag dir ``path``."""
    if zero_stage == 0:
        f = path / "mp_rank_00_model_states.pt"
        try:
            state = torch.load(f, map_location="cpu", weights_only=False)["module"]
        except Exception as exc:
            raise CheckpointError(f"{f}: cannot read the model weights: {type(exc).__name__}: {exc}") from None
    else:
        from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint

        try:
            with redirect_stdout(io.StringIO()):  # it prints a progress line per shard
                state = get_fp32_state_dict_from_zero_checkpoint(str(path.parent), tag=path.name)
        except Exception as exc:
            raise CheckpointError(f"{path}: cannot consolidate the ZeRO-{zero_stage} shards: "
                                  f"{type(exc).__name__}: {exc}") from None
    return {k: v.detach().float() if v.is_floating_point() else v for k, v in state.items()}


def export(ckpt: str | Path, out: str | Path):
    """Export the checkpoint ``ckpt`` (run dir, checkpoints dir or step dir) to ``out``; returns (path, model)."""
    from synshot.model import SynShotPrior, save_exported
    from train.config import TrainConfig

    path = resolve_checkpoint(ckpt)
    meta = read_meta(path)
    try:
        cfg = validate_config(TrainConfig, meta["config"], f"{path}/trainer_meta.json (config)")
    except (KeyError, ConfigError) as exc:
        raise CheckpointError(f"{path}: the checkpoint's config is unusable with this code: {exc}") from None
    state = consolidated_state_dict(path, int(meta["zero_stage"]))
    model = SynShotPrior(cfg.model)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    shape = [k for k in expected if k in state and tuple(state[k].shape) != tuple(expected[k].shape)]
    if missing or unexpected or shape:
        raise CheckpointError(f"{path}: weights do not match the prior of its config (missing {missing[:5]}, "
                              f"unexpected {unexpected[:5]}, wrong shape {shape[:5]})")
    model.load_state_dict({k: state[k].to(expected[k].dtype) for k in expected})
    return save_exported(model, cfg.model, out), model


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m train.export", description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", required=True, help="runs/<name>, runs/<name>/checkpoints or .../step_00001000")
    p.add_argument("--out", required=True, help="output .safetensors file")
    args = p.parse_args(argv)
    try:
        out, model = export(args.ckpt, args.out)
    except CheckpointError as exc:
        print(f"[export] checkpoint error: {exc}", file=sys.stderr)
        return EXIT_CHECKPOINT
    n = sum(p.numel() for p in model.parameters())
    print(f"[export] wrote {out} ({n} parameters)", file=sys.stderr)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
