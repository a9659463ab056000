"""Data benchmarks: loader throughput against a bare tar read + decode of the same shards, peak memory,
and the ground-truth renderer's views/s (from ``synshot.raytrace.bench`` when present).

Figures: ``loader_samples_per_s`` (full loader, in-process), ``loader_samples_per_s_2workers``,
``raw_samples_per_s`` (iter_shard + decode_sample only), ``loader_vs_raw_ratio`` (aim >= 0.8; samples
per CPU-second of the loader over the bare read, so other jobs on the cores do not skew it) and
``loader_vs_raw_ratio_wall`` (the same from wall-clock throughput),
``loader_peak_rss_mb`` (a fresh process streaming with 2 workers: parent + workers), and
``render_views_per_s_128`` / ``render_views_per_s_256``.

The shards are written by this module: schema-valid samples with smooth images (PNG sizes close to
real renders; pure noise would make decoding unrealistically slow), 4 views at 128 px, UV 128,
the ``configs/data/tiny.yaml`` geometry.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time

import numpy as np

from synshot.data.reader import iter_shard
from synshot.data.schema import decode_sample, encode_sample
from synshot.data.writer import build_manifest, write_shard


def _smooth(rng: np.random.Generator, h: int, w: int, c: int) -> np.ndarray:
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    out = np.zeros((h, w, c))
    for ch in range(c):
        a, b, p = rng.uniform(1, 6, 3)
        out[..., ch] = 0.5 + 0.4 * np.sin(a * x * 6.28 + p) * np.cos(b * y * 6.28)
    out += rng.normal(0, 0.01, out.shape)
    return (np.clip(out, 0, 1) * 255).astype(np.uint8)


def write_bench_shards(root: str, samples: int, per_shard: int = 16, views: int = 4, size: int = 128, uv: int = 128,
                       image_format: str = "png") -> None:
    rng = np.random.default_rng(0)
    K = [[size * 1.5, 0, size / 2], [0, size * 1.5, size / 2], [0, 0, 1]]
    y, x = np.mgrid[0:size, 0:size]
    mask = (((x - size / 2) ** 2 + (y - size / 2) ** 2) < (0.35 * size) ** 2).astype(np.uint8) * 255
    n_shards = (samples + per_shard - 1) // per_shard
    for s in range(n_shards):
        batch = []
        for i in range(s * per_shard, min(samples, (s + 1) * per_shard)):
            meta = {
                "identity": i, "expression": 0, "head_model_version": "bench", "identity_params": {},
                "expression_coeffs": [0.0] * 12, "expression_names": [f"e{j}" for j in range(12)],
                "head_pose": np.eye(4).tolist(),
                "views": [{"K": K, "w2c": np.eye(4).tolist(), "width": size, "height": size} for _ in range(views)],
                "lighting_id": 0, "renderer": {"name": "bench", "version": "0", "variant": "none", "spp": 1},
            }
            smooth_maps = _smooth(rng, uv, uv, 6).transpose(2, 0, 1).astype(np.float16) / 255
            batch.append(encode_sample(meta, _smooth(rng, uv, uv, 3), smooth_maps[:3], smooth_maps[3:] * 0.01,
                                       [_smooth(rng, size, size, 3) for _ in range(views)], [mask] * views,
                                       image_format=image_format))
        write_shard(root, "train", s, batch)
    build_manifest(root, "train", {"bench": True}, n_shards)


def _raw_pass(root: str, names: list[str]) -> tuple[int, float, float]:
    """(samples, wall s, CPU s of this process) for a bare tar read + decode."""
    start, cpu, n = time.perf_counter(), time.process_time(), 0
    for name in names:
        for item in iter_shard(os.path.join(root, name)):
            decode_sample(item)
            n += 1
    return n, time.perf_counter() - start, time.process_time() - cpu


def _loader_pass(root: str, workers: int) -> tuple[int, float, float]:
    from synshot.data.loader import LoaderConfig, make_loader

    cfg = LoaderConfig(url=root, batch_size=8, num_workers=workers, views_per_sample=4, resampled=False, epochs=1, shuffle_buffer=64)
    start, cpu, n = time.perf_counter(), time.process_time(), 0
    for batch in make_loader(cfg):
        n += len(batch["key"])
    return n, time.perf_counter() - start, time.process_time() - cpu


def _peak_rss_child(root: str) -> float:
    """Stream one epoch with 2 workers in a fresh process; peak RSS of that process plus its workers (MB)."""
    code = (
        "import json, resource, sys\n"
        "from synshot.bench.data import _loader_pass\n"
        f"_loader_pass({root!r}, 2)\n"
        "me = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss\n"
        "print(json.dumps({'self_kb': me, 'children_kb': kids}))\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([os.getcwd(), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    rss = json.loads(out.stdout.strip().splitlines()[-1])
    return (rss["self_kb"] + 2 * rss["children_kb"]) / 1024.0  # ru_maxrss of children = the largest worker


def run(quick: bool = False) -> dict[str, float | int]:
    figures: dict[str, float | int] = {}
    samples = 96 if quick else 384
    with tempfile.TemporaryDirectory(prefix="synshot-bench-data-") as root:
        write_bench_shards(root, samples)
        names = sorted(n for n in os.listdir(root) if n.endswith(".tar"))
        _raw_pass(root, names[:1])  # warm the page cache and imports
        raw_best = loader_best = raw_cpu = loader_cpu = 0.0
        for _ in range(3):  # interleaved, best of 3: the machine is shared
            n, t, c = _raw_pass(root, names)
            raw_best, raw_cpu = max(raw_best, n / t), max(raw_cpu, n / c)
            n, t, c = _loader_pass(root, 0)
            assert n == samples, f"loader delivered {n} of {samples} samples"
            loader_best, loader_cpu = max(loader_best, n / t), max(loader_cpu, n / c)
        n, t, _ = _loader_pass(root, 2)
        figures["raw_samples_per_s"] = round(raw_best, 1)
        figures["loader_samples_per_s"] = round(loader_best, 1)
        figures["loader_samples_per_s_2workers"] = round(n / t, 1)
        # throughput per CPU-second (in-process passes): the loader's overhead, robust to other jobs on the cores
        figures["loader_vs_raw_ratio"] = round(loader_cpu / raw_cpu, 3)
        figures["loader_vs_raw_ratio_wall"] = round(loader_best / raw_best, 3)
        figures["loader_peak_rss_mb"] = round(_peak_rss_child(root), 1)
        figures["bench_shard_mb"] = round(sum(os.path.getsize(os.path.join(root, n)) for n in names) / len(names) / 2**20, 2)
    try:
        from synshot.raytrace.bench import bench_groundtruth
    except ModuleNotFoundError as exc:
        if exc.name not in ("synshot.raytrace", "synshot.raytrace.bench"):
            raise
    else:
        figures.update(bench_groundtruth(quick))
    figures["bench_self_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0, 1)
    return figures


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=1))
