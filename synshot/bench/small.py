"""Throughput at the shipped prior's scale: configs/data/small.yaml and configs/train/small.yaml.

Figures: ``small_data_images_per_s`` (rendered and written images per wall second, one process,
the ray tracer's own thread pool) and ``small_data_images_per_cpu_s`` (per CPU second of the
process: fairer on a shared machine), ``small_train_samples_per_s`` (one process,
OMP_NUM_THREADS=1, steady state: the first steps are excluded; one sample = one 64 px view here)
and ``small_train_peak_rss_mb``. The data part renders a few identities of the small config into a
temporary directory and trains on exactly those shards, so nothing outside it is needed.
These sizes tell how long `configs/train/small.yaml` takes: steps x batch_size / samples per s.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

from synshot.bench.train import _read, _run

REPO = Path(__file__).resolve().parents[2]
DATA_CONFIG = REPO / "configs" / "data" / "small.yaml"
TRAIN_CONFIG = REPO / "configs" / "train" / "small.yaml"


def _render(root: Path, identities: int) -> tuple[int, float, float]:
    """(images, wall s, CPU s) to render ``identities`` x 1 expression of the small config."""
    from synshot.config import load_config
    from synshot.data.synthesize import SynthConfig, synthesize

    cfg = load_config(SynthConfig, DATA_CONFIG, [f"num_identities={identities}", "expressions_per_identity=1",
                                                 "splits={train: 1.0, val: 0.0, test: 0.0}"])
    synthesize(cfg, str(root), progress=False)  # warm-up: Mitsuba JIT, head model
    more = load_config(SynthConfig, DATA_CONFIG, [f"num_identities={2 * identities}", "expressions_per_identity=1",
                                                  "splits={train: 1.0, val: 0.0, test: 0.0}"])
    wall, cpu = time.perf_counter(), time.process_time()
    synthesize(more, str(root.with_name(root.name + "_timed")), progress=False)
    return 2 * identities * more.views, time.perf_counter() - wall, time.process_time() - cpu


def run(quick: bool = False) -> dict[str, float]:
    identities, steps, skip = (4, 6, 2) if quick else (16, 16, 4)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") and not k.startswith("SLURM_")}
    env.update(PYTHONPATH=str(REPO), OMP_NUM_THREADS="1")
    env.setdefault("DS_ACCELERATOR", "cpu")
    with tempfile.TemporaryDirectory(prefix="bench_small_") as tmp:
        work = Path(tmp)
        images, wall, cpu = _render(work / "data", identities)
        _run(1, ["--config", str(TRAIN_CONFIG), f"data.url={work / 'data_timed'}", f"out_dir={work / 'runs'}",
                 "name=small", f"max_steps={steps}", "logging.every_n_steps=1", "logging.val_samples=0",
                 "logging.image_every_n_steps=100000", "logging.progress=false",
                 f"checkpoint.every_n_steps={steps}", "--resume", "never"], env)
        samples_per_s, rss, split = _read(work / "runs" / "small", skip)
    return {
        "small_data_images_per_s": images / wall,
        "small_data_images_per_cpu_s": images / max(cpu, 1e-9),
        "small_train_samples_per_s": samples_per_s,
        "small_train_peak_rss_mb": rss,
        "small_train_step_s": split["step"],
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
