"""``synshot export [RUN] [--out FILE.safetensors]``: a DeepSpeed checkpoint -> plain weights.

Consolidates the fp32 weights of a training checkpoint (ZeRO 1-3 shards via DeepSpeed's
``zero_to_fp32``; stage 0 from ``mp_rank_00_model_states.pt["module"]``, where zero_to_fp32 does
not apply), checks them against the prior built from the checkpoint's own config, and writes
``synshot.model.io.save_exported`` (safetensors + embedded JSON config; no pickle, no DeepSpeed
needed to load). Checkpoint files are read with pickle: only export checkpoints you trust.
"""

from __future__ import annotations

import io
from contextlib import redirect_stdout
from pathlib import Path
from typing import Sequence

import torch

from synshot.cli import EXIT_OK, Command, get_logger
from synshot.config import ConfigBase, ConfigError, validate_config
from synshot.runs import prior_path, run_root
from train.checkpoint import read_meta, resolve_checkpoint
from train.errors import CheckpointError

log = get_logger(__name__)


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


class ExportConfig(ConfigBase):
    """Which training checkpoint to export."""

    run: str = "runs/tiny"  # run folder (latest checkpoint), its checkpoints/ folder, or one step_* folder


CLI = Command("export", "Export a training checkpoint as one safetensors prior (no DeepSpeed needed to load).",
              config_cls=ExportConfig, out_help="output .safetensors (default <run>/prior.safetensors)",
              example="synshot export runs/tiny   # -> runs/tiny/prior.safetensors")
CLI.option("run", key="run", help="run folder, its checkpoints/ or a step_* folder")
CLI.option("--ckpt", key="run", help="the same as RUN")


def main(argv: Sequence[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, cfg: ExportConfig) -> int:
    out = args.out or prior_path(run_root(cfg.run))
    out, model = export(cfg.run, out)
    n = sum(p.numel() for p in model.parameters())
    log.info("wrote %s (%d parameters)", out, n)
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
