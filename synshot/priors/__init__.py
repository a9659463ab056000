"""The prior shipped with the package, so inversion works without training anything.

``small.safetensors`` is an export of ``configs/train/small.yaml`` (CPU scale, 64 px; how it was
trained, its validation numbers and its sha256 are in ``small.md`` beside it). The inversion loads
it when no checkpoint is given and the run folder has no exported prior (``synshot.runs.resolve_prior``);
a prior you train yourself is used by naming its run (``--run``) or file (``ckpt=``).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

SHIPPED_PRIOR = Path(__file__).resolve().with_name("small.safetensors")
MODEL_CARD = SHIPPED_PRIOR.with_suffix(".md")


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def describe(path: str | Path) -> str:
    """How an inversion names the prior it loaded (the shipped one with its sha256 and card)."""
    path = Path(path)
    if path.resolve() == SHIPPED_PRIOR:
        return (f"shipped prior {SHIPPED_PRIOR} (sha256 {sha256_file(SHIPPED_PRIOR)[:16]}..., "
                f"model card {MODEL_CARD.name})")
    return f"prior {path}"


def weights_digest(path: str | Path) -> str:
    """The weights' SHA-256 (``tensors_sha256``, checked against the tensors while reading).

    What a reproduction compares: the file's own SHA-256 also covers the safetensors header, whose
    metadata order is not fixed across processes, so two byte-different files can hold the same prior.
    """
    from synshot.model.io import CONTENT_HASH_KEY, ExportError, read_safetensors

    path = Path(path)
    meta, _ = read_safetensors(path, ExportError, missing=f"{path}: exported prior not found (`synshot export`)",
                               unreadable=lambda exc: f"{path}: not a readable safetensors file: {exc}")
    return meta[CONTENT_HASH_KEY]
