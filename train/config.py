"""Typed training configuration: one :class:`TrainConfig` composed of every component's config.

Why composed: a run is reproducible from one YAML file (+ ``key=value`` overrides); the loader,
the prior, the loss and the renderer read their own sections, the trainer reads the rest.
The canonical JSON of the whole config is hashed into every checkpoint; the ``model`` section
alone decides whether a checkpoint can be resumed (architecture hash).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable, Literal

from pydantic import Field, model_validator

from synshot.config import ConfigBase, dump_config, load_config
from synshot.data.loader import LoaderConfig
from synshot.losses import LossConfig
from synshot.model import ModelConfig
from synshot.render.config import RenderConfig
from train.encoder_input import EncoderInputConfig


class OptimConfig(ConfigBase):
    """AdamW with linear warmup then cosine decay to ``min_lr``."""

    lr: float = Field(2e-4, gt=0)
    min_lr: float = Field(2e-6, ge=0)
    betas: tuple[float, float] = (0.9, 0.99)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    warmup_steps: int = Field(100, ge=0)

    @model_validator(mode="after")
    def _check(self) -> "OptimConfig":
        if self.min_lr > self.lr:
            raise ValueError(f"min_lr ({self.min_lr}) must not exceed lr ({self.lr})")
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas must be in [0, 1), got {self.betas}")
        return self


class DistributedConfig(ConfigBase):
    """DeepSpeed settings. ``bf16: auto`` = bf16 autocast on CUDA, fp32 on CPU."""

    zero_stage: int = Field(1, ge=0, le=3)
    bf16: Literal["auto"] | bool = "auto"
    grad_accum: int = Field(1, ge=1)
    grad_clip: float = Field(1.0, ge=0)  # 0 = no clipping
    timeout_minutes: int = Field(30, ge=1)  # collective timeout (a stuck rank fails instead of hanging)
    activation_checkpointing: bool = False  # decoders recompute activations in backward: less memory, ~1/3 more compute
    comm_timing: bool = True  # time DeepSpeed's collectives (time/comm_s); on CUDA each one then synchronises

    def use_bf16(self, cuda: bool) -> bool:
        return cuda if self.bf16 == "auto" else bool(self.bf16)


class CheckpointConfig(ConfigBase):
    every_n_steps: int = Field(500, ge=1)
    keep_last: int = Field(3, ge=1)
    dir: str | None = None  # default: <out_dir>/<name>/checkpoints


class ProfileConfig(ConfigBase):
    """On-demand torch.profiler trace: ``profile.steps=20-24`` records steps 20..24 (inclusive) on every
    rank into ``<run>/tb/profile`` (TensorBoard's PyTorch Profiler tab)."""

    steps: str | None = Field(None, pattern=r"^\s*\d+\s*(-\s*\d+\s*)?$")

    def window(self) -> tuple[int, int] | None:
        from train.telemetry import parse_steps

        return parse_steps(self.steps)


class LoggingConfig(ConfigBase):
    every_n_steps: int = Field(10, ge=1)
    image_every_n_steps: int = Field(200, ge=1)
    image_views: int = Field(2, ge=1)  # views of the first sample shown in the GT|render|error grid
    val_every_n_steps: int = Field(500, ge=1)
    val_split: str = "val"
    val_samples: int = Field(16, ge=0)  # 0 = no validation
    progress: Literal["auto"] | bool = "auto"  # tqdm bar on rank 0; auto = when stderr is a terminal


class TrainConfig(ConfigBase):
    """Everything one training run needs; see configs/train/*.yaml and docs/training.md."""

    name: str = Field("tiny", pattern=r"^[A-Za-z0-9_.-]+$")
    out_dir: str = "runs"
    max_steps: int = Field(1000, ge=1)
    seed: int = 0
    max_nonfinite_steps: int = Field(10, ge=1)  # abort after this many non-finite losses in a row

    data: LoaderConfig  # data.batch_size is the micro-batch per rank
    model: ModelConfig = ModelConfig()
    encoder_input: EncoderInputConfig = EncoderInputConfig()  # E_id's texture: albedo or unwrapped from the views
    loss: LossConfig = LossConfig()
    render: RenderConfig = RenderConfig()  # backend; images are rendered on loss.background
    optim: OptimConfig = OptimConfig()
    distributed: DistributedConfig = DistributedConfig()
    checkpoint: CheckpointConfig = CheckpointConfig()
    logging: LoggingConfig = LoggingConfig()
    profile: ProfileConfig = ProfileConfig()

    @model_validator(mode="after")
    def _consistent(self) -> "TrainConfig":
        if self.data.uv_size is None:
            self.data = self.data.model_copy(update={"uv_size": self.model.uv_size})
        elif self.data.uv_size != self.model.uv_size:
            raise ValueError(f"data.uv_size ({self.data.uv_size}) != model.uv_size ({self.model.uv_size})")
        for key in ("verts_unit", "exp_unit"):
            if getattr(self.loss, key) != getattr(self.model, key):
                raise ValueError(f"loss.{key} ({getattr(self.loss, key)}) must equal model.{key} "
                                 f"({getattr(self.model, key)}): the geometry loss is measured in network units")
        return self

    def global_batch(self, world_size: int) -> int:
        return self.data.batch_size * self.distributed.grad_accum * world_size

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    @property
    def checkpoint_dir(self) -> Path:
        return Path(self.checkpoint.dir) if self.checkpoint.dir else self.run_dir / "checkpoints"


def _sha(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()[:16]


def config_hash(cfg: ConfigBase) -> str:
    """Hash of the whole config (recorded; a change is allowed on resume but reported)."""
    return _sha(json.loads(dump_config(cfg)))


def arch_section(cfg: ConfigBase) -> dict:
    """The part of the config that defines the weights' shapes and meaning (must match on resume)."""
    data = json.loads(dump_config(cfg))
    return {"model": data.get("model", {})}


def arch_hash(cfg: ConfigBase) -> str:
    return _sha(arch_section(cfg))


def diff_keys(a: Any, b: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two JSON-like trees (for error messages)."""
    if isinstance(a, dict) and isinstance(b, dict):
        out: list[str] = []
        for k in sorted(set(a) | set(b)):
            key = f"{prefix}.{k}" if prefix else str(k)
            if k not in a or k not in b:
                out.append(key)
            else:
                out.extend(diff_keys(a[k], b[k], key))
        return out
    return [] if a == b else [prefix or "<root>"]


_SECRET_WORDS = ("key", "secret", "token", "password", "credential")


def public_config(cfg: ConfigBase) -> dict:
    """The config as JSON data with fsspec credentials masked (it is written to run dirs, TB, checkpoints)."""
    data = json.loads(dump_config(cfg))

    def mask(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: ("***" if any(w in k.lower() for w in _SECRET_WORDS) and isinstance(v, str) else mask(v))
                    for k, v in node.items()}
        if isinstance(node, list):
            return [mask(v) for v in node]
        return node

    return mask(data)


def load_train_config(path: str | Path | None, overrides: Iterable[str] = ()) -> TrainConfig:
    return load_config(TrainConfig, path, overrides)
