"""Measured inputs of the capacity plan (``synshot plan``, docs/scale.md).

Figures (on the machine running the bench, one process each):

- ``scale_loader_samples_per_s_<S>`` / ``scale_loader_images_per_s_<S>``: one loader process
  (``num_workers: 0``) streaming shards in the layout of ``configs/data/base.yaml`` (S = the base
  training config's image size, 8 JPEG views per sample, UV 256) with the base training config's
  views per sample; ``scale_loader_mb_per_s_<S>`` the shard bytes it consumed per second.
- ``scale_shard_mb_per_sample_<S>``: bytes per sample of those shards (smooth synthetic images,
  which JPEG compresses somewhat better than real renders; see docs/scale.md), split into
  ``scale_shard_mb_per_view_<S>`` (one JPEG view + its mask) and ``scale_shard_mb_maps_per_sample_uv<U>``.
- ``scale_synth_cpu_s_per_megasample_px`` and ``scale_synth_cpu_s_per_view_fixed``: CPU seconds of the
  real synthesis pipeline (head model + Mitsuba ray tracer + encoding), fitted from two tiny runs as a
  marginal cost per million pixel-samples (pixels x spp) plus a fixed cost per view.
- ``scale_ckpt_write_mb_per_s``: ``torch.save`` + fsync throughput of a 256 MB state dict to the
  temp directory's file system.
"""

from __future__ import annotations

import os
import resource
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[2]


def _base_sizes() -> tuple[int, int, int, int]:
    """(image size, views per sample stored, uv size, views per training sample) of the base configs."""
    from synshot.config import load_config
    from synshot.data.synthesize import SynthConfig
    from train.config import load_train_config

    data = load_config(SynthConfig, REPO / "configs" / "data" / "base.yaml")
    train = load_train_config(REPO / "configs" / "train" / "base.yaml")
    return data.image_size, data.views, data.uv_size, train.data.views_per_sample or data.views


def _loader(quick: bool) -> dict[str, float]:
    from synshot.bench.data import write_bench_shards
    from synshot.data.loader import LoaderConfig, make_loader

    size, views, uv, per_sample = _base_sizes()
    if quick:
        size, uv = 128, 64
    samples = 8 if quick else 24
    with tempfile.TemporaryDirectory(prefix="bench_scale_") as tmp:
        write_bench_shards(tmp, samples, per_shard=8, views=views, size=size, uv=uv, image_format="jpg")
        shards = sorted(Path(tmp).rglob("*.tar"))
        shard_bytes = sum(f.stat().st_size for f in shards)
        image_bytes = _member_bytes(shards, ("rgb.", "mask."))
        cfg = LoaderConfig(url=tmp, batch_size=4, num_workers=0, views_per_sample=per_sample, resampled=False,
                           epochs=1, shuffle_buffer=0)
        n, t0 = 0, time.perf_counter()
        for _ in range(2):  # two passes: the second one reads from the page cache like a warm node
            n, t0 = 0, time.perf_counter()
            for batch in make_loader(cfg):
                n += len(batch["key"])
        wall = time.perf_counter() - t0
    return {
        f"scale_loader_samples_per_s_{size}": n / wall,
        f"scale_loader_images_per_s_{size}": n * per_sample / wall,
        f"scale_loader_mb_per_s_{size}": shard_bytes / 2**20 / wall,
        f"scale_shard_mb_per_sample_{size}": shard_bytes / 2**20 / samples,
        f"scale_shard_mb_per_view_{size}": image_bytes / 2**20 / (samples * views),
        f"scale_shard_mb_maps_per_sample_uv{uv}": (shard_bytes - image_bytes) / 2**20 / samples,
    }


def _member_bytes(shards: list[Path], prefixes: tuple[str, ...]) -> int:
    """Bytes of the tar members whose extension part starts with one of ``prefixes`` (images, masks)."""
    import tarfile

    total = 0
    for shard in shards:
        with tarfile.open(shard) as tar:
            for m in tar.getmembers():
                ext = m.name.split("/")[-1].split(".", 1)[-1]
                if ext.startswith(prefixes):
                    total += m.size
    return total


def _synth(quick: bool) -> dict[str, float]:
    """CPU cost of the synthesis pipeline = a fixed cost per view + a marginal cost per pixel-sample,
    fitted from two tiny runs that differ only in pixels x spp."""
    from synshot.data.synthesize import SynthConfig, synthesize

    runs = ((32, 2), (64, 8)) if quick else ((128, 4), (256, 32))
    cfg = SynthConfig(num_identities=2, expressions_per_identity=1, views=2, uv_size=64, samples_per_shard=2,
                      splits={"train": 1.0, "val": 0.0, "test": 0.0})
    views = cfg.num_identities * cfg.expressions_per_identity * cfg.views
    points = []
    with tempfile.TemporaryDirectory(prefix="bench_scale_synth_") as tmp:
        for size, spp in runs:
            run_cfg = cfg.model_copy(update={"image_size": size, "spp": spp})
            for attempt in ("warm", "timed"):  # the first run compiles this size's ray-tracing kernels
                cpu0 = time.process_time()
                synthesize(run_cfg, os.path.join(tmp, f"{size}_{spp}_{attempt}"), progress=False)
            points.append((views * size * size * spp / 1e6, time.process_time() - cpu0))
    (m0, c0), (m1, c1) = points
    marginal = max((c1 - c0) / (m1 - m0), 0.0)
    return {"scale_synth_cpu_s_per_megasample_px": marginal,
            "scale_synth_cpu_s_per_view_fixed": max((c0 - marginal * m0) / views, 0.0)}


def _ckpt_write(quick: bool) -> dict[str, float]:
    mb = 32 if quick else 256
    state = {"w": torch.randn(mb * 2**20 // 4)}
    with tempfile.TemporaryDirectory(prefix="bench_scale_ckpt_") as tmp:
        path = Path(tmp) / "state.pt"
        t0 = time.perf_counter()
        with open(path, "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        wall = time.perf_counter() - t0
    return {"scale_ckpt_write_mb_per_s": mb / wall}


def run(quick: bool = False) -> dict[str, float]:
    out: dict[str, float] = {}
    out.update(_loader(quick))
    out.update(_ckpt_write(quick))
    out.update(_synth(quick))
    out["scale_peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
