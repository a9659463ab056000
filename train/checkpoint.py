"""Atomic, retained, verifiable DeepSpeed checkpoints with a ``latest`` pointer.

Layout under the checkpoint dir (one shared file system for all ranks, as on any cluster)::

    step_00000100/                  DeepSpeed files (mp_rank_*, zero shards) +
        trainer_rank_00000.json     per-rank state: step, loader position, RNG streams
        trainer_meta.json           written last: step, world size, config + hashes, file sizes
    latest                          text: the tag of the newest complete checkpoint

Why this dance: a job can be killed at any instant (preemption, time limit). DeepSpeed writes into
``.tmp-step_N``; only when every rank is done does rank 0 record the file manifest, rename the
directory to ``step_N`` and replace ``latest`` via write-temp + ``os.replace``. So ``latest``
never names a half-written checkpoint. The manifest records each file's size and SHA-256, verified
before a resume: a truncated or damaged file (even one of the right length) is refused with exit 3.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sys
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from synshot import fsio
from synshot.cli import NonFiniteError
from train.errors import CheckpointError

LATEST = "latest"
META = "trainer_meta.json"
TAG_RE = re.compile(r"^step_(\d{8})$")
TMP_PREFIX = ".tmp-"


class NonFiniteCheckpointError(NonFiniteError, RuntimeError):
    """A checkpoint whose restored weights are not finite (exit 4)."""


def tag_for(step: int) -> str:
    return f"step_{int(step):08d}"


def rank_state_name(rank: int) -> str:
    return f"trainer_rank_{int(rank):05d}.json"


def write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix."""
    fsio.write_bytes(path, data)


def _fsync_dir(path: Path) -> None:
    fsio.fsync_dir(path)


def _barrier() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.barrier()


def _json_default(obj: Any) -> Any:
    if isinstance(obj, torch.Tensor):
        return obj.tolist()
    try:
        import numpy as np

        if isinstance(obj, np.generic):
            return obj.item()
        if isinstance(obj, np.ndarray):
            return obj.tolist()
    except ImportError:  # pragma: no cover
        pass
    raise TypeError(f"checkpoint state holds a {type(obj).__name__}, which cannot be stored as JSON")


def list_checkpoints(ckpt_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints (``step_N`` with a meta file), oldest first."""
    ckpt_dir = Path(ckpt_dir)
    if not ckpt_dir.is_dir():
        return []
    out = []
    for p in ckpt_dir.iterdir():
        m = TAG_RE.match(p.name)
        if m and p.is_dir() and (p / META).is_file():
            out.append((int(m.group(1)), p))
    return sorted(out)


def resolve_checkpoint(spec: str | Path) -> Path:
    """A checkpoint tag dir from a run dir, a checkpoints dir (its ``latest``) or a tag dir."""
    p = Path(spec)
    if not p.exists():
        raise CheckpointError(f"{p}: no such checkpoint, checkpoints dir or run dir")
    if (p / META).is_file() or TAG_RE.match(p.name) or p.name.startswith(TMP_PREFIX):
        return p
    for cand in (p, p / "checkpoints"):
        if (cand / LATEST).is_file():
            return _read_latest(cand)
    found = list_checkpoints(p) or list_checkpoints(p / "checkpoints")
    if found:
        return found[-1][1]
    raise CheckpointError(f"{p}: holds no checkpoint (no '{LATEST}' file, no step_* directory)")


def _read_latest(ckpt_dir: Path) -> Path:
    latest = ckpt_dir / LATEST
    tag = latest.read_text().strip()
    if not TAG_RE.match(tag):
        raise CheckpointError(f"{latest}: does not name a checkpoint tag (got {tag[:60]!r}); delete it to resume "
                              "from the newest complete step_* directory")
    target = ckpt_dir / tag
    if not target.is_dir():
        raise CheckpointError(
            f"{latest}: points to {target}, which does not exist (deleted or moved?); point 'latest' at an "
            f"existing step_* directory or delete it"
        )
    return target


def read_meta(path: Path, *, verify: bool = True) -> dict[str, Any]:
    """Read a checkpoint's manifest and (``verify``) check every recorded file's size and SHA-256."""
    path = Path(path)
    meta_path = path / META
    if not meta_path.is_file():
        raise CheckpointError(
            f"{path}: incomplete checkpoint (no {META}: the job was probably killed while saving); "
            "resume from an older step_* directory"
        )
    try:
        meta = json.loads(meta_path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{meta_path}: unreadable checkpoint manifest ({exc})") from None
    if verify:
        verify_files(path, meta)
    return meta


def _older_hint(path: Path) -> str:
    older = [p for s, p in list_checkpoints(path.parent) if p.name < path.name]
    if older:
        return f"resume from an older step with --resume {older[-1]}"
    return "no older checkpoint is left: start a new run (another name/out_dir) or --resume never"


def verify_files(path: Path, meta: dict[str, Any]) -> None:
    """Every file recorded in the manifest is present with its size and SHA-256 (older manifests: size only)."""
    for rel, rec in meta.get("files", {}).items():
        size, digest = (rec.get("bytes"), rec.get("sha256")) if isinstance(rec, dict) else (rec, None)
        f = path / rel
        if not f.is_file():
            raise CheckpointError(f"{path}: corrupt checkpoint, file {rel} is missing; {_older_hint(path)}")
        actual = f.stat().st_size
        if actual != size:
            raise CheckpointError(
                f"{f}: corrupt checkpoint, file is {actual} bytes but {size} were written (truncated copy?); "
                f"{_older_hint(path)}"
            )
        if digest is not None and fsio.file_sha256(f) != digest:
            raise CheckpointError(
                f"{f}: corrupt checkpoint, content hash differs from the one recorded when it was saved "
                f"(damaged bytes on disk or in a copy); {_older_hint(path)}"
            )


class CheckpointManager:
    """Save/verify/load checkpoints in ``ckpt_dir`` for one rank of the job."""

    def __init__(self, ckpt_dir: str | Path, rank: int, world_size: int, keep_last: int) -> None:
        self.dir = Path(ckpt_dir)
        self.rank, self.world_size, self.keep_last = rank, world_size, keep_last

    # ---------------------------------------------------------------- save
    def save(self, engine, step: int, rank_state: dict[str, Any], meta: dict[str, Any]) -> Path:
        """Collective: every rank must call it at the same step."""
        tag = tag_for(step)
        tmp_tag = TMP_PREFIX + tag
        tmp_dir, final = self.dir / tmp_tag, self.dir / tag
        if self.rank == 0:
            self.dir.mkdir(parents=True, exist_ok=True)
            if tmp_dir.exists():
                shutil.rmtree(tmp_dir)  # leftover of a save that was killed
        _barrier()
        start = time.perf_counter()
        engine.save_checkpoint(str(self.dir), tag=tmp_tag, client_state={"trainer_step": int(step)},
                               save_latest=False)
        state = dict(rank_state, step=int(step), rank=self.rank, world_size=self.world_size)
        write_atomic(tmp_dir / rank_state_name(self.rank),
                     json.dumps(state, default=_json_default).encode())
        _barrier()
        if self.rank == 0:
            files = {
                str(f.relative_to(tmp_dir)): {"bytes": f.stat().st_size, "sha256": fsio.file_sha256(f)}
                for f in sorted(tmp_dir.rglob("*")) if f.is_file() and not f.name.startswith(".")
            }
            missing = [rank_state_name(r) for r in range(self.world_size) if rank_state_name(r) not in files]
            if missing:
                raise CheckpointError(f"{tmp_dir}: ranks did not write {missing} (shared file system?)")
            full_meta = dict(meta, step=int(step), tag=tag, world_size=self.world_size, files=files,
                             saved_at=time.strftime("%Y-%m-%dT%H:%M:%S"),
                             save_seconds=round(time.perf_counter() - start, 3))
            write_atomic(tmp_dir / META, json.dumps(full_meta, indent=1, sort_keys=True).encode())
            if final.exists():  # same step saved again (e.g. signal right after resume): replace it
                old = self.dir / f"{TMP_PREFIX}old-{tag}"
                if old.exists():
                    shutil.rmtree(old)
                os.rename(final, old)
                os.rename(tmp_dir, final)
                shutil.rmtree(old)
            else:
                os.rename(tmp_dir, final)
            _fsync_dir(self.dir)
            write_atomic(self.dir / LATEST, (tag + "\n").encode())
            self._retain(keep=final)
        _barrier()
        return final

    def _retain(self, keep: Path) -> None:
        ckpts = list_checkpoints(self.dir)
        for _, path in ckpts[: max(0, len(ckpts) - self.keep_last)]:
            if path != keep:
                shutil.rmtree(path, ignore_errors=True)

    def clean_stale(self) -> None:
        """Remove ``.tmp-*`` leftovers of saves that were killed (rank 0, before training)."""
        if self.rank == 0 and self.dir.is_dir():
            for p in self.dir.iterdir():
                if p.name.startswith(TMP_PREFIX) and p.is_dir():
                    shutil.rmtree(p, ignore_errors=True)

    # ---------------------------------------------------------------- resume
    def _incomplete(self) -> list[Path]:
        """``step_N`` directories without a manifest (a save killed before it finished, or damaged)."""
        if not self.dir.is_dir():
            return []
        return sorted(p for p in self.dir.iterdir() if TAG_RE.match(p.name) and p.is_dir() and not (p / META).is_file())

    def find(self, resume: str) -> Path | None:
        """Which checkpoint to resume from: ``auto`` (latest if any), ``never``, or a path.

        ``auto`` never starts afresh over step directories it cannot resume (that would overwrite
        them): it refuses with exit 3. ``never`` starts afresh; it refuses over complete checkpoints and
        moves incomplete step directories aside to ``incomplete-<time>/`` (nothing written is lost).
        """
        if resume == "never":
            if list_checkpoints(self.dir):
                raise CheckpointError(
                    f"{self.dir}: already holds checkpoints and --resume never was given; use --resume auto, "
                    "or a new run name / out_dir"
                )
            stale = self._incomplete()
            if stale and self.rank == 0:
                aside = self.dir / time.strftime("incomplete-%Y%m%dT%H%M%S", time.gmtime())
                aside.mkdir(parents=True, exist_ok=True)
                for p in stale:
                    os.rename(p, aside / p.name)
                fsio.fsync_dir(self.dir)
                print(f"[train] --resume never: moved {len(stale)} incomplete step directories to {aside}",
                      file=sys.stderr, flush=True)
            return None
        if resume == "auto":
            if (self.dir / LATEST).is_file():
                return _read_latest(self.dir)
            found = list_checkpoints(self.dir)
            if found:
                return found[-1][1]
            stale = self._incomplete()
            if stale:
                raise CheckpointError(
                    f"{self.dir}: holds step directories ({', '.join(p.name for p in stale[:4])}) but none is "
                    f"complete (no {META}) and there is no '{LATEST}'; refusing to start from step 0 over them. "
                    f"Pass --resume never to start afresh (they are moved aside), or use another run name/out_dir"
                )
            return None
        return resolve_checkpoint(resume)

    def load(self, engine, path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """Collective: restore engine (weights, optimizer, scheduler) and return (meta, this rank's state)."""
        path = Path(path)
        meta = read_meta(path)
        if meta.get("world_size") != self.world_size:
            return self._load_elastic(engine, path, meta)
        state_file = path / rank_state_name(self.rank)
        try:
            state = json.loads(state_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{state_file}: unreadable rank state ({exc})") from None
        try:
            load_path, client = engine.load_checkpoint(str(path.parent), tag=path.name)
        except Exception as exc:  # torch.load / DeepSpeed errors on damaged files
            raise CheckpointError(f"{path}: DeepSpeed could not load this checkpoint: {type(exc).__name__}: {exc}") from exc
        if load_path is None or client is None:
            raise CheckpointError(f"{path}: DeepSpeed found no loadable checkpoint files there")
        if int(client.get("trainer_step", -1)) != int(meta["step"]) or int(state["step"]) != int(meta["step"]):
            raise CheckpointError(f"{path}: step mismatch between DeepSpeed files, meta and rank state")
        bad = [n for n, p in engine.module.named_parameters() if p.numel() and not bool(torch.isfinite(p).all())]
        if bad:  # saved by a run that had already diverged: its hash is right, its numbers are not
            raise NonFiniteCheckpointError(
                f"{path}: the restored weights hold NaN/inf in {bad[:5]}{' ...' if len(bad) > 5 else ''}; "
                f"{_older_hint(path)}")
        return meta, state

    def _load_elastic(self, engine, path: Path, meta: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Another world size: weights/optimizer via the universal format, every old rank's state returned.

        The returned state has ``elastic`` set, ``loader_states`` (all old ranks, for
        ``StreamingLoader.load_elastic_state``), no ``rng`` (the caller re-seeds) and rank 0's counters.
        """
        from train.elastic import all_rank_states, load_elastic

        old_world = int(meta.get("world_size") or 0)
        if old_world < 1:
            raise CheckpointError(f"{path}: its manifest records no world size")
        states = all_rank_states(path, old_world)
        client, convert_s = load_elastic(engine, path, meta, self.rank)
        if int(client.get("trainer_step", -1)) != int(meta["step"]) or any(int(s["step"]) != int(meta["step"]) for s in states):
            raise CheckpointError(f"{path}: step mismatch between DeepSpeed files, meta and rank states")
        state = {"elastic": True, "old_world_size": old_world, "convert_seconds": round(convert_s, 3),
                 "step": int(meta["step"]), "nonfinite_total": int(states[0].get("nonfinite_total", 0)),
                 "loader_states": [s["loader"] for s in states if "loader" in s]}
        return meta, state
