"""Streaming loader: shards on any fsspec URL -> batches of tensors (docs/DESIGN.md "Data").

Why it is built this way: the trainer's resume must see exactly the batches an uninterrupted run
would have seen. So the stream of every (rank, worker) is a pure function of
``(seed, epoch, rank, world_size, num_workers, worker)``: shard order/draws, the shuffle buffer and
the view choice all use generators seeded from those numbers, never global state. Each batch
carries its worker's position (epoch, raw item index, counters); ``state_dict()`` stores the
positions of the batches actually delivered, and a resumed stream skips raw items (before any
decoding) up to them. ``torch.utils.data.DataLoader`` hands out worker batches round-robin; on
resume the workers are rotated so that the first batch comes from the worker that was next.

Corrupt samples and unreadable shards are skipped and counted; once the skipped fraction passes
``max_corrupt_fraction`` (after ``corrupt_min_events`` items) the loader raises, naming the shard.
A schema version mismatch or a size that disagrees with the config is always an error.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Iterator

import numpy as np
import torch
from pydantic import Field

from synshot.cli import DataFileError
from synshot.config import ConfigBase
from synshot.data import storage
from synshot.data.reader import ShardFailure, iter_shard
from synshot.data.schema import CorruptSampleError, DataError, decode_meta, decode_sample
from synshot.data.writer import read_manifest

log = logging.getLogger("synshot.data")

STATE_VERSION = 1


class LoaderConfig(ConfigBase):
    """Where the shards are and how to stream them."""

    url: str = Field(description="dataset root (any fsspec URL) holding {split}.json and the shards")
    split: str = "train"
    batch_size: int = Field(8, ge=1)
    num_workers: int = Field(0, ge=0, description="DataLoader worker processes (0: read in the main process)")
    views_per_sample: int | None = Field(4, ge=1, description="views drawn per sample; null: all views")
    shuffle_buffer: int = Field(256, ge=0, description="raw samples held for shuffling (0: no sample shuffle)")
    shuffle_shards: bool = True
    resampled: bool = True
    epochs: int | None = Field(None, ge=1, description="null: endless stream (training); N: stop after N passes")
    drop_last: bool = False
    seed: int = 0
    max_corrupt_fraction: float = Field(0.01, ge=0.0, le=1.0)
    corrupt_min_events: int = Field(50, ge=1, description="the fraction is checked once this many items were seen")
    corrupt_log_interval_s: float = Field(30.0, ge=0.0, description="at most one corrupt-sample log line per interval per worker (after the first 3)")
    storage_options: dict[str, Any] = Field(default_factory=dict, description="fsspec options, e.g. {endpoint_url: ..., key: ...}")
    image_size: int | None = Field(None, ge=1, description="expected H = W of the images (null: accept any)")
    uv_size: int | None = Field(None, ge=1, description="expected S of the UV maps (null: accept any)")
    prefetch_factor: int = Field(2, ge=1)
    pin_memory: bool = False


class CorruptDataError(DataFileError, RuntimeError):
    """Too many corrupt samples: the data, not a few bad bytes, is broken."""


class DataSpecError(DataFileError, ValueError):
    """The data does not match the loader config (image size, UV size, number of views)."""


@dataclass
class WorkerPosition:
    """Where one logical worker's stream stands after the last delivered batch."""

    epoch: int = 0
    item: int = 0  # raw items of `epoch` already consumed
    samples: int = 0
    skipped: int = 0
    shard_errors: int = 0
    done: bool = False


@dataclass(frozen=True)
class _Plan:
    """Everything a worker needs; picklable, identical in all processes."""

    cfg: LoaderConfig
    shard_urls: tuple[str, ...]
    shard_sizes: tuple[int, ...]  # samples per shard from the manifest (detects silently truncated shards)
    rank: int
    world_size: int
    num_workers: int  # logical workers per rank (>= 1)


def _rng(*numbers: int) -> np.random.Generator:
    return np.random.default_rng([int(n) for n in numbers])


def _epoch_shards(plan: _Plan, epoch: int, worker: int) -> list[tuple[str, int]]:
    """Shards this (rank, worker) reads in ``epoch``: disjoint split (node, then worker) or resampled draws."""
    cfg, shards = plan.cfg, list(zip(plan.shard_urls, plan.shard_sizes))
    if cfg.resampled:
        per_worker = max(1, math.ceil(len(shards) / (plan.world_size * plan.num_workers)))
        rng = _rng(cfg.seed, 1, epoch, plan.rank, worker)
        return [shards[i] for i in rng.integers(0, len(shards), size=per_worker)]
    if cfg.shuffle_shards:
        shards = [shards[i] for i in _rng(cfg.seed, 2, epoch).permutation(len(shards))]  # same on every rank
    return shards[plan.rank :: plan.world_size][worker :: plan.num_workers]


def _epoch_items(plan: _Plan, epoch: int, worker: int) -> Iterator[dict | ShardFailure]:
    """Raw items of one epoch after the shuffle buffer; deterministic for (seed, epoch, rank, worker)."""
    size = plan.cfg.shuffle_buffer
    raw = (item for url, n in _epoch_shards(plan, epoch, worker) for item in iter_shard(url, plan.cfg.storage_options, n))
    if size <= 1:
        yield from raw
        return
    rng = _rng(plan.cfg.seed, 3, epoch, plan.rank, worker)
    buf: list = []
    for item in raw:
        if len(buf) < size:
            buf.append(item)
            continue
        j = int(rng.integers(len(buf)))
        out, buf[j] = buf[j], item
        yield out
    for j in rng.permutation(len(buf)):
        yield buf[j]


_SCALE = np.float32(1.0 / 255.0)
# batch entry -> (per-sample source array in the batch layout, scale to [0, 1] or None)
_LAYOUT = {
    "tex": lambda s: (s["tex"].transpose(2, 0, 1), _SCALE),
    "verts": lambda s: (s["verts"], None),
    "exp": lambda s: (s["exp"], None),
    "rgb": lambda s: (s["rgb"].transpose(0, 3, 1, 2), _SCALE),
    "mask": lambda s: (s["mask"][:, None], _SCALE),
    "K": lambda s: (s["K"], None),
    "w2c": lambda s: (s["w2c"], None),
    "head_pose": lambda s: (s["head_pose"], None),
    "expression_coeffs": lambda s: (s["expression_coeffs"], None),
}


def collate(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """Decoded samples (uint8/float16 arrays) -> the batch dict of docs/DESIGN.md (float32 torch tensors).

    Each sample is converted straight into a preallocated batch tensor (one pass, no stack copy), with
    numpy ufuncs: torch's intra-op thread pool made these small ops ~100x slower on busy cores (measured).
    """
    out: dict[str, Any] = {}
    for name, layout in _LAYOUT.items():
        parts = [layout(s) for s in samples]
        shapes = {p[0].shape for p in parts}
        if len(shapes) > 1:
            keys = [s["key"] for s in samples]
            raise DataSpecError(f"cannot batch '{name}' of samples {keys}: shapes differ {sorted(shapes)}; set loader image_size/uv_size to catch this per sample")
        buf = np.empty((len(samples),) + parts[0][0].shape, dtype=np.float32)
        for i, (src, _) in enumerate(parts):
            buf[i] = src  # cast + layout change in one copy
        if parts[0][1] is not None:
            buf *= parts[0][1]  # contiguous, in place (faster than a strided multiply per sample)
        out[name] = torch.from_numpy(buf)
    out["identity"] = torch.tensor([s["identity"] for s in samples], dtype=torch.int64)
    out["expression"] = torch.tensor([s["expression"] for s in samples], dtype=torch.int64)
    out["key"] = [s["key"] for s in samples]
    return out


class _CorruptLog:
    """Bounded-rate logging of skipped items: the first 3, then one line per interval with totals."""

    def __init__(self, interval_s: float, worker: int):
        self.interval_s, self.worker, self.count, self.last = interval_s, worker, 0, 0.0

    def __call__(self, message: str, pos: WorkerPosition) -> None:
        self.count += 1
        now = time.monotonic()
        if self.count <= 3 or now - self.last >= self.interval_s:
            self.last = now
            log.warning("data worker %d: skipped %s (skipped %d of %d items so far)", self.worker, message, pos.skipped, pos.samples + pos.skipped)


def _check_threshold(cfg: LoaderConfig, samples: int, skipped: int, where: str) -> None:
    events = samples + skipped
    if events >= cfg.corrupt_min_events and skipped > cfg.max_corrupt_fraction * events:
        raise CorruptDataError(
            f"{skipped} of {events} samples were corrupt or unreadable ({skipped / events:.1%} > "
            f"max_corrupt_fraction={cfg.max_corrupt_fraction}); last at {where}. Check the shards with "
            f"`python -m data_tools.inspect {cfg.url} --split {cfg.split}`."
        )


def _check_spec(cfg: LoaderConfig, sample: dict[str, Any]) -> None:
    where = f"sample '{sample['key']}' in shard {sample['url']}"
    size = sample["tex"].shape[0]
    if cfg.uv_size is not None and size != cfg.uv_size:
        raise DataSpecError(f"{where}: UV maps are {size}x{size} but the loader expects uv_size={cfg.uv_size}")
    h, w = sample["rgb"].shape[1:3]
    if cfg.image_size is not None and (h, w) != (cfg.image_size, cfg.image_size):
        raise DataSpecError(f"{where}: images are {w}x{h} but the loader expects image_size={cfg.image_size}")


def worker_batches(plan: _Plan, worker: int, start: WorkerPosition, end_epoch: int | None = None) -> Iterator[dict[str, Any]]:
    """The batches of one logical worker from ``start`` until ``end_epoch`` (None: endless); each
    carries its end position in ``_pos``."""
    cfg = plan.cfg
    pos = WorkerPosition(**asdict(start))
    if pos.done:
        return
    corrupt_log = _CorruptLog(cfg.corrupt_log_interval_s, worker)
    pending: list[dict[str, Any]] = []
    skip = pos.item
    barren_epochs = 0  # consecutive epochs without one good sample: stop instead of spinning forever
    while end_epoch is None or pos.epoch < end_epoch:
        good_before = pos.samples
        for index, item in enumerate(_epoch_items(plan, pos.epoch, worker)):
            if index < skip:  # resume: drop raw items before any decoding
                continue
            pos.item = index + 1
            if isinstance(item, ShardFailure):
                pos.skipped += item.lost  # a lost shard weighs its manifest sample count
                pos.shard_errors += 1
                corrupt_log(f"shard {item.url}: {item.message}", pos)
                _check_threshold(cfg, pos.samples, pos.skipped, item.url)
                continue
            try:
                meta = decode_meta(item)
                n_views = len(meta["views"])
                want = cfg.views_per_sample
                if want is None:
                    views = None
                elif want > n_views:
                    raise DataSpecError(
                        f"sample '{item['__key__']}' in shard {item['__url__']} has {n_views} views but "
                        f"views_per_sample={want}; lower views_per_sample or regenerate with more views"
                    )
                else:
                    rng = _rng(cfg.seed, 4, pos.epoch, plan.rank, worker, index)
                    views = sorted(int(v) for v in rng.choice(n_views, size=want, replace=False))
                sample = decode_sample(item, views, meta)
            except CorruptSampleError as exc:
                pos.skipped += 1
                corrupt_log(str(exc), pos)
                _check_threshold(cfg, pos.samples, pos.skipped, item.get("__url__", "?"))
                continue
            _check_spec(cfg, sample)
            pos.samples += 1
            _check_threshold(cfg, pos.samples, pos.skipped, item["__url__"])
            pending.append(sample)
            if len(pending) == cfg.batch_size:
                batch = collate(pending)
                pending = []
                batch["_pos"] = (worker, asdict(pos))
                yield batch
        barren_epochs = barren_epochs + 1 if pos.samples == good_before and skip == 0 else 0
        if barren_epochs >= 100:
            raise CorruptDataError(
                f"worker {worker} of rank {plan.rank} read 100 epochs in a row without one valid sample from "
                f"{cfg.url} split '{cfg.split}' (skipped {pos.skipped}); check the shards with data_tools.inspect"
            )
        pos.epoch += 1
        pos.item = 0
        skip = 0
    pos.done = True
    if pending and not cfg.drop_last:
        batch = collate(pending)
        batch["_pos"] = (worker, asdict(pos))
        yield batch
    else:  # tell the main process this worker is finished even without a final batch
        yield {"_pos": (worker, asdict(pos)), "_empty": True}


class _WorkerDataset(torch.utils.data.IterableDataset):
    """Maps DataLoader worker ``id`` to logical worker ``(id + offset) % n`` and streams its batches."""

    def __init__(self, plan: _Plan, starts: list[WorkerPosition], offset: int, end_epoch: int | None):
        super().__init__()
        self.plan, self.starts, self.offset, self.end_epoch = plan, starts, offset, end_epoch

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        physical = info.id if info is not None else 0
        logical = (physical + self.offset) % self.plan.num_workers
        return worker_batches(self.plan, logical, self.starts[logical], self.end_epoch)


class StreamingLoader:
    """Iterable of batch dicts; resumable with :meth:`state_dict` / :meth:`load_state_dict`.

    Iterating again continues from the last delivered batch (batches prefetched but not delivered
    are produced again); with ``epochs=N``, iterating after a finished pass starts the next N epochs
    (like a DataLoader epoch). ``counters`` gives ``samples``, ``skipped``, ``shard_errors``, ``batches``.
    """

    def __init__(self, cfg: LoaderConfig, rank: int = 0, world_size: int = 1):
        if not 0 <= rank < world_size:
            raise ValueError(f"make_loader: rank {rank} must be in [0, world_size={world_size})")
        self.cfg = cfg
        self.manifest = read_manifest(cfg.url, cfg.split, cfg.storage_options)
        listed = [(s["name"], int(s["num_samples"])) for s in self.manifest["shards"] if int(s["num_samples"]) > 0]
        names = [n for n, _ in listed]
        if not names:
            raise DataError(f"{storage.join(cfg.url, cfg.split + '.json')}: split '{cfg.split}' has no non-empty shards")
        n_logical = max(1, cfg.num_workers)
        if not cfg.resampled and len(names) < world_size * n_logical:
            raise DataError(
                f"{cfg.url} split '{cfg.split}': {len(names)} shards cannot feed world_size*num_workers="
                f"{world_size * n_logical} readers without repeats; use resampled=true, fewer workers, or more shards"
            )
        self.plan = _Plan(cfg, tuple(storage.join(cfg.url, n) for n in names), tuple(c for _, c in listed), rank, world_size, n_logical)
        self._positions = [WorkerPosition() for _ in range(n_logical)]
        self._next_worker = 0
        self._batches = 0
        self._pass = 0  # finished passes of `epochs` epochs (finite mode)

    # ---------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[dict[str, Any]]:
        epochs = self.cfg.epochs
        if epochs is not None and all(p.done for p in self._positions):  # the last pass ended: start the next
            self._pass += 1
            self._positions = [
                WorkerPosition(epoch=self._pass * epochs, samples=p.samples, skipped=p.skipped, shard_errors=p.shard_errors)
                for p in self._positions
            ]
            self._next_worker = 0
        end_epoch = None if epochs is None else (self._pass + 1) * epochs
        offset = self._next_worker
        dataset = _WorkerDataset(self.plan, [WorkerPosition(**asdict(p)) for p in self._positions], offset, end_epoch)
        if self.cfg.num_workers == 0:
            source = iter(dataset)
        else:
            source = iter(
                torch.utils.data.DataLoader(
                    dataset,
                    batch_size=None,
                    num_workers=self.cfg.num_workers,
                    prefetch_factor=self.cfg.prefetch_factor,
                    pin_memory=self.cfg.pin_memory,
                    persistent_workers=False,
                )
            )
        for batch in source:
            worker, pos = batch.pop("_pos")
            self._positions[worker] = WorkerPosition(**pos)
            self._next_worker = (worker + 1) % self.plan.num_workers
            if batch.pop("_empty", False):
                continue
            self._batches += 1
            c = self.counters
            _check_threshold(self.cfg, c["samples"], c["skipped"], f"rank {self.plan.rank}")
            yield batch

    # ---------------------------------------------------------------- state
    @property
    def counters(self) -> dict[str, int]:
        return {
            "samples": sum(p.samples for p in self._positions),
            "skipped": sum(p.skipped for p in self._positions),
            "shard_errors": sum(p.shard_errors for p in self._positions),
            "batches": self._batches,
        }

    def _fingerprint(self) -> dict[str, Any]:
        c = self.cfg
        return {
            "split": c.split, "seed": c.seed, "batch_size": c.batch_size, "num_workers": c.num_workers,
            "views_per_sample": c.views_per_sample, "shuffle_buffer": c.shuffle_buffer, "shuffle_shards": c.shuffle_shards,
            "resampled": c.resampled, "epochs": c.epochs, "drop_last": c.drop_last,
            "rank": self.plan.rank, "world_size": self.plan.world_size,
            "shards": [storage.basename(u) for u in self.plan.shard_urls],  # names, so a moved dataset still resumes
        }

    def state_dict(self) -> dict[str, Any]:
        """JSON-serialisable data position after the last delivered batch."""
        return {
            "version": STATE_VERSION,
            "fingerprint": self._fingerprint(),
            "positions": [asdict(p) for p in self._positions],
            "next_worker": self._next_worker,
            "batches": self._batches,
            "pass": self._pass,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore a position saved by :meth:`state_dict` under the same data config, rank and world size."""
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"loader state version {state.get('version')!r} != {STATE_VERSION}")
        mine, theirs = self._fingerprint(), state.get("fingerprint", {})
        diff = sorted(k for k in set(mine) | set(theirs) if mine.get(k) != theirs.get(k))
        if diff:
            details = ", ".join(f"{k}: saved {theirs.get(k)!r} now {mine.get(k)!r}" for k in diff if k != "shards")
            if "shards" in diff:
                details += (", " if details else "") + "the shard list differs"
            raise ValueError(
                f"loader state does not match this loader ({details}); the data position can only be restored "
                "with the same data config, rank, world size and num_workers"
            )
        self._positions = [WorkerPosition(**p) for p in state["positions"]]
        self._next_worker = int(state["next_worker"])
        self._batches = int(state["batches"])
        self._pass = int(state.get("pass", 0))


def make_loader(cfg: LoaderConfig, rank: int = 0, world_size: int = 1) -> StreamingLoader:
    """The streaming loader of ``cfg.split`` for one rank of ``world_size``."""
    return StreamingLoader(cfg, rank, world_size)
