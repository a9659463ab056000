"""Streaming loader: shards on any fsspec URL -> batches of tensors (docs/DESIGN.md "Data").

Why it is built this way: the trainer's resume must see exactly the batches an uninterrupted run
would have seen. So the stream of every (rank, worker) is a pure function of
``(seed, epoch, rank, world_size, num_workers, worker)``: shard order/draws, the shuffle buffer and
the view choice all use generators seeded from those numbers, never global state. Each batch
carries its worker's position (epoch, raw item index, counters); ``state_dict()`` stores the
positions of the batches actually delivered, and a resumed stream skips raw items (before any
decoding) up to them. ``torch.utils.data.DataLoader`` hands out worker batches round-robin; on
resume the workers are rotated so that the first batch comes from the worker that was next.

Elastic resume (another world size or ``num_workers``): every logical stream of the old world is
deterministic, so its unread rest of the interrupted epoch can be replayed anywhere. The rests are
dealt round-robin to the new streams as *legs* (each replayed with the old stream's rank/world seeds
up to the end of the newest epoch any old stream had reached); after its legs a new stream starts
its own split at the next epoch. So every sample of the interrupted epoch(s) is read exactly once
(up to the partial batch each stream held undelivered, which is re-read, as on any resume).

Corrupt samples and unreadable shards are skipped and counted; once the skipped fraction passes
``max_corrupt_fraction`` (after ``corrupt_min_events`` items) the loader raises, naming the shard.
A schema version mismatch or a size that disagrees with the config is always an error.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass, replace
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
    leg: int = 0  # index into the worker's legs; epoch/item refer to that leg's stream


@dataclass(frozen=True)
class Leg:
    """A stretch of one logical stream: the stream of (rank, world_size, num_workers, worker) from
    ``(epoch, item)`` until ``end_epoch`` (exclusive; None = open-ended). A worker's last leg is its own."""

    rank: int
    world_size: int
    num_workers: int
    worker: int
    epoch: int = 0
    item: int = 0
    end_epoch: int | None = None


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
            f"`synshot data inspect {cfg.url} --split {cfg.split}`."
        )


def _check_spec(cfg: LoaderConfig, sample: dict[str, Any]) -> None:
    where = f"sample '{sample['key']}' in shard {sample['url']}"
    size = sample["tex"].shape[0]
    if cfg.uv_size is not None and size != cfg.uv_size:
        raise DataSpecError(f"{where}: UV maps are {size}x{size} but the loader expects uv_size={cfg.uv_size}")
    h, w = sample["rgb"].shape[1:3]
    if cfg.image_size is not None and (h, w) != (cfg.image_size, cfg.image_size):
        raise DataSpecError(f"{where}: images are {w}x{h} but the loader expects image_size={cfg.image_size}")


def own_leg(plan: _Plan, worker: int, epoch: int = 0) -> Leg:
    return Leg(plan.rank, plan.world_size, plan.num_workers, worker, epoch)


def worker_batches(plan: _Plan, worker: int, start: WorkerPosition, end_epoch: int | None = None,
                   legs: list[Leg] | None = None) -> Iterator[dict[str, Any]]:
    """The batches of one logical worker from ``start`` until ``end_epoch`` (None: endless); each
    carries its end position in ``_pos``. ``legs`` (default: the worker's own stream) are read in order."""
    cfg = plan.cfg
    legs = legs or [own_leg(plan, worker)]
    pos = WorkerPosition(**asdict(start))
    if pos.done:
        return
    corrupt_log = _CorruptLog(cfg.corrupt_log_interval_s, worker)
    pending: list[dict[str, Any]] = []
    skip = pos.item
    barren_epochs = 0  # consecutive epochs without one good sample: stop instead of spinning forever
    while pos.leg < len(legs):
        leg = legs[pos.leg]
        leg_plan = plan if (leg.rank, leg.world_size, leg.num_workers) == (plan.rank, plan.world_size, plan.num_workers) \
            else replace(plan, rank=leg.rank, world_size=leg.world_size, num_workers=leg.num_workers)
        stop = min(e for e in (end_epoch, leg.end_epoch, 2**62) if e is not None)
        if pos.epoch >= stop:
            if pos.leg == len(legs) - 1:
                break
            pos.leg += 1
            nxt = legs[pos.leg]
            pos.epoch, pos.item, skip = nxt.epoch, nxt.item, nxt.item
            continue
        good_before = pos.samples
        for index, item in enumerate(_epoch_items(leg_plan, pos.epoch, leg.worker)):
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
                    rng = _rng(cfg.seed, 4, pos.epoch, leg_plan.rank, leg.worker, index)
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
                f"worker {leg.worker} of rank {leg_plan.rank} read 100 epochs in a row without one valid sample from "
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

    def __init__(self, plan: _Plan, starts: list[WorkerPosition], offset: int, end_epoch: int | None,
                 legs: list[list[Leg]]):
        super().__init__()
        self.plan, self.starts, self.offset, self.end_epoch, self.legs = plan, starts, offset, end_epoch, legs

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        physical = info.id if info is not None else 0
        logical = (physical + self.offset) % self.plan.num_workers
        return worker_batches(self.plan, logical, self.starts[logical], self.end_epoch, self.legs[logical])


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
        self._legs = [[own_leg(self.plan, w)] for w in range(n_logical)]
        self._next_worker = 0
        self._batches = 0
        self._pass = 0  # finished passes of `epochs` epochs (finite mode)
        self._source: Any = None  # the DataLoader iterator of the current pass (queue_depth reads it)

    # ---------------------------------------------------------------- iteration
    def __iter__(self) -> Iterator[dict[str, Any]]:
        epochs = self.cfg.epochs
        if epochs is not None and all(p.done for p in self._positions):  # the last pass ended: start the next
            self._pass += 1
            self._positions = [
                WorkerPosition(epoch=self._pass * epochs, samples=p.samples, skipped=p.skipped, shard_errors=p.shard_errors)
                for p in self._positions
            ]
            self._legs = [[own_leg(self.plan, w)] for w in range(self.plan.num_workers)]
            self._next_worker = 0
        end_epoch = None if epochs is None else (self._pass + 1) * epochs
        offset = self._next_worker
        dataset = _WorkerDataset(self.plan, [WorkerPosition(**asdict(p)) for p in self._positions], offset, end_epoch,
                                 self._legs)
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
        self._source = source
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

    def queue_depth(self) -> int:
        """Batches decoded by the worker processes and waiting to be taken (0 without workers).

        A depth near 0 while ``perf/data_wait_fraction`` is high means the workers cannot keep up.
        """
        src = self._source
        queue = getattr(src, "_data_queue", None)
        if queue is None:
            return 0
        try:
            ready = queue.qsize()
        except (NotImplementedError, OSError):  # pragma: no cover - qsize is unsupported on macOS
            ready = 0
        return ready + sum(1 for v in getattr(src, "_task_info", {}).values() if len(v) == 2)

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
            "legs": [[asdict(leg) for leg in legs] for legs in self._legs],
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
        self._legs = [[Leg(**leg) for leg in legs] for legs in state["legs"]] if "legs" in state else \
            [[own_leg(self.plan, w)] for w in range(self.plan.num_workers)]
        self._next_worker = int(state["next_worker"])
        self._batches = int(state["batches"])
        self._pass = int(state.get("pass", 0))


    def load_elastic_state(self, states: list[dict[str, Any]]) -> dict[str, int]:
        """Continue from the states of ALL ranks of a job with another world size or ``num_workers``.

        The unread rest of every old stream, up to the end of the newest epoch any of them had
        reached, is dealt round-robin to the new logical streams (of all ranks) as legs; each new
        stream then starts its own split at the next epoch. Returns a summary for the log.
        """
        if not states:
            raise ValueError("elastic loader resume needs the loader states of every rank of the old job")
        mine = self._fingerprint()
        same = ("rank", "world_size", "num_workers", "batch_size")
        for st in states:
            if st.get("version") != STATE_VERSION:
                raise ValueError(f"loader state version {st.get('version')!r} != {STATE_VERSION}")
            theirs = st.get("fingerprint", {})
            diff = sorted(k for k in set(mine) | set(theirs) if k not in same and mine.get(k) != theirs.get(k))
            if diff:
                raise ValueError(f"loader state does not match this loader at {diff}: an elastic resume may change "
                                 "the number of ranks, workers and the micro-batch size, nothing else about the data")
        old_world = int(states[0]["fingerprint"]["world_size"])
        ranks = sorted(int(st["fingerprint"]["rank"]) for st in states)
        if ranks != list(range(old_world)):
            raise ValueError(f"elastic loader resume needs the states of ranks 0..{old_world - 1}, got {ranks}")
        if len({int(st.get("pass", 0)) for st in states}) != 1:
            raise ValueError("the old ranks' loader states are in different passes")
        # every unfinished rest of every old stream, in (rank, worker) order
        rests: list[tuple[Leg, WorkerPosition]] = []
        newest = 0
        for st in sorted(states, key=lambda st: int(st["fingerprint"]["rank"])):
            fp = st["fingerprint"]
            n_old = max(1, int(fp["num_workers"]))
            legs_all = [[Leg(**leg) for leg in legs] for legs in st["legs"]] if "legs" in st else \
                [[Leg(int(fp["rank"]), int(fp["world_size"]), n_old, w)] for w in range(n_old)]
            for w, p in enumerate(st["positions"]):
                pos = WorkerPosition(**p)
                if pos.done:
                    continue
                legs = legs_all[w]
                for j in range(pos.leg, len(legs)):
                    leg = legs[j]
                    start = (pos.epoch, pos.item) if j == pos.leg else (leg.epoch, leg.item)
                    rest = replace(leg, epoch=start[0], item=start[1])
                    if leg.end_epoch is None:
                        newest = max(newest, start[0])
                    counters = pos if j == pos.leg else WorkerPosition()
                    rests.append((rest, counters))
        resume_epoch = newest + 1
        n_new = self.plan.world_size * self.plan.num_workers
        mine_legs: list[list[Leg]] = [[] for _ in range(self.plan.num_workers)]
        positions = [WorkerPosition() for _ in range(self.plan.num_workers)]
        for i, (rest, counters) in enumerate(rests):
            if rest.end_epoch is None:
                rest = replace(rest, end_epoch=resume_epoch)
            if rest.epoch >= rest.end_epoch:
                continue
            g = i % n_new
            rank, worker = divmod(g, self.plan.num_workers)
            if rank != self.plan.rank:
                continue
            mine_legs[worker].append(rest)
            p = positions[worker]
            p.samples, p.skipped, p.shard_errors = (p.samples + counters.samples, p.skipped + counters.skipped,
                                                    p.shard_errors + counters.shard_errors)
        for w in range(self.plan.num_workers):
            mine_legs[w].append(own_leg(self.plan, w, epoch=resume_epoch))
            first = mine_legs[w][0]
            positions[w].epoch, positions[w].item = first.epoch, first.item
        self._legs, self._positions = mine_legs, positions
        self._next_worker = 0
        self._batches = 0
        self._pass = int(states[0].get("pass", 0))
        return {"old_world": old_world, "rests": len(rests), "resume_epoch": resume_epoch,
                "legs_here": sum(len(legs) - 1 for legs in mine_legs)}


def make_loader(cfg: LoaderConfig, rank: int = 0, world_size: int = 1) -> StreamingLoader:
    """The streaming loader of ``cfg.split`` for one rank of ``world_size``."""
    return StreamingLoader(cfg, rank, world_size)
