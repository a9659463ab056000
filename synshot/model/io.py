"""Exported prior: one safetensors file, weights + JSON config + head-model version in its metadata.

No pickle anywhere (safe to load files from others), and no DeepSpeed import: the inversion tool
loads exports on a machine without the training stack.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Callable

import torch

from synshot.cli import CheckpointFileError, NonFiniteError
from synshot.config import ConfigError, validate_config
from synshot.model.config import ModelConfig
from synshot.model.prior import SynShotPrior, _zero_template
from synshot.model.sampler import MaskFn

EXPORT_FORMAT = "synshot-prior-1"


class ExportError(CheckpointFileError, ValueError):
    """An exported prior file that cannot be used; the message names the file and the fix (exit 3)."""


class NonFiniteWeightsError(NonFiniteError, ValueError):
    """Weights holding NaN/inf, found when loading or before writing a file (exit 4)."""


CONTENT_HASH_KEY = "tensors_sha256"  # metadata entry: SHA-256 of every tensor (name, dtype, shape, bytes)


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over the tensors in name order (name, dtype, shape, raw bytes): the file's content hash.

    Stored in the safetensors metadata by :func:`write_safetensors` and recomputed by
    :func:`read_safetensors`, so a damaged byte anywhere in the weights is found on load.
    """
    h = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def nonfinite_tensors(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of floating-point tensors holding NaN/inf (with how many values)."""
    out = []
    for name in sorted(tensors):
        t = tensors[name]
        if t.is_floating_point() and t.numel():
            bad = int((~torch.isfinite(t.detach())).sum())
            if bad:
                out.append(f"{name} ({bad} of {t.numel()})")
    return out


def write_safetensors(path: str | Path, tensors: dict[str, torch.Tensor], meta: dict[str, str], *, what: str,
                      fix: str) -> Path:
    """Write ``tensors`` + ``meta`` (plus their content hash) atomically; refuses non-finite weights.

    ``what``/``fix`` word the error: a file of NaN weights is never written with success.
    """
    from safetensors.torch import save_file

    from synshot import fsio

    path = Path(path)
    bad = nonfinite_tensors(tensors)
    if bad:
        raise NonFiniteWeightsError(f"{path}: not written, the {what} holds NaN/inf in {', '.join(bad[:6])}"
                                    f"{' ...' if len(bad) > 6 else ''}; {fix}")
    meta = dict(meta, **{CONTENT_HASH_KEY: tensors_digest(tensors)})
    with fsio.atomic_path(path) as tmp:  # a crash never leaves a half-written file under the real name
        save_file(tensors, str(tmp), metadata=meta)
    return path


def _head_version() -> str:
    from synshot.head import HEAD_MODEL_VERSION

    return HEAD_MODEL_VERSION


def save_exported(model: SynShotPrior, config: ModelConfig, path: str | Path) -> Path:
    """Write ``model``'s weights and ``config`` to ``path`` (``.safetensors``)."""
    from safetensors.torch import save_file

    path = Path(path)
    if model.cfg.model_dump() != config.model_dump():
        raise ValueError("save_exported: config differs from the config the model was built with")
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in model.state_dict().items()}
    meta = {
        "format": EXPORT_FORMAT,
        "model_config": json.dumps(config.model_dump(mode="json"), sort_keys=True),
        "head_model_version": _head_version(),
        "gaussian_counts": json.dumps(model.gaussian_counts()),
    }
    return write_safetensors(path, tensors, meta, what="prior",
                             fix="export an earlier checkpoint (the run diverged) with `synshot export`")


def read_safetensors(path: Path, error: type[Exception], *, missing: str,
                     unreadable: Callable[[Exception], str], fix: str = "re-create the file"
                     ) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """(metadata, tensors) of a safetensors file on CPU, verified; problems raise ``error`` naming the file.

    Shared by prior exports and avatars: both are safetensors + JSON metadata, never pickle. The
    content hash recorded at writing (:data:`CONTENT_HASH_KEY`) must match (damaged bytes, even of the
    right length, are refused; files written before hashes existed are accepted), and every weight must
    be finite (:class:`NonFiniteWeightsError`, exit 4). ``fix`` ends both messages.
    """
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise error(missing)
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            meta, tensors = (f.metadata() or {}), {k: f.get_tensor(k) for k in f.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise error(unreadable(exc)) from None
    recorded = meta.get(CONTENT_HASH_KEY)
    if recorded is not None and tensors_digest(tensors) != recorded:
        raise error(f"{path}: damaged, the weights' content hash differs from the one recorded when the file "
                    f"was written (a corrupted copy or disk error); {fix}")
    bad = nonfinite_tensors(tensors)
    if bad:
        raise NonFiniteWeightsError(f"{path}: weights hold NaN/inf in {', '.join(bad[:6])}"
                                    f"{' ...' if len(bad) > 6 else ''}; {fix}")
    return meta, tensors


def embedded_model_config(meta: dict[str, str], path: Path, error: type[Exception]) -> ModelConfig:
    """The ``model_config`` JSON a prior export or an avatar carries, validated; ``error`` names the file."""
    try:
        return validate_config(ModelConfig, json.loads(meta["model_config"]), f"{path} (embedded model_config)")
    except (KeyError, json.JSONDecodeError, ConfigError) as exc:
        raise error(f"{path}: embedded model config unusable: {exc}") from None


def load_exported(
    path: str | Path, map_location: str | torch.device = "cpu", mask_fn: MaskFn | None = None
) -> tuple[SynShotPrior, ModelConfig]:
    """Read an export written by :func:`save_exported` -> ``(model in eval mode, config)``."""
    path = Path(path)
    meta, tensors = read_safetensors(
        path, ExportError,
        missing=f"{path}: exported prior not found (produce it with `synshot export`)",
        unreadable=lambda exc: (f"{path}: not a readable safetensors file (truncated or corrupt?): {exc}. "
                                "Re-export it with `synshot export`."),
        fix="re-export it from a good checkpoint with `synshot export`")
    if meta.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path}: not a SynShot prior export (metadata format={meta.get('format')!r}, "
                          f"expected {EXPORT_FORMAT!r}); produce one with `synshot export`")
    cfg = embedded_model_config(meta, path, ExportError)
    file_head = meta.get("head_model_version")
    if mask_fn is None and file_head != _head_version():
        raise ExportError(f"{path}: exported for head model {file_head!r}, but this code has "
                          f"{_head_version()!r}; UV layout and region masks differ, retrain or use matching code")
    # the template is a saved buffer: build with a placeholder instead of recomputing it from the head
    model = SynShotPrior(cfg, mask_fn, template=_zero_template(cfg.uv_size))
    counts = json.loads(meta.get("gaussian_counts", "{}"))
    if counts and counts != model.gaussian_counts():
        raise ExportError(f"{path}: Gaussian counts per part {counts} differ from this code's {model.gaussian_counts()}")
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise ExportError(f"{path}: weights do not match the embedded config (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]})")
    return model.to(map_location).eval(), cfg
