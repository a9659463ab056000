"""Training throughput: the tiny config, 1 process vs 2 processes (torchrun, gloo).

Figures: ``train_samples_per_s_tiny_1proc`` / ``_2proc`` (all ranks together, steady state: the
first steps are excluded), ``train_scaling_ratio_2proc`` (2-process / 1-process throughput at the
same per-process micro-batch, i.e. weak scaling; 2.0 is perfect) and ``train_peak_rss_mb_tiny``
(peak RSS of the 1-process trainer), and ``train_step_split_tiny_{1,2}proc_<phase>_s``: seconds per
step in data wait, forward, rasteriser forward, backward, optimizer and DeepSpeed collectives (the
trainer's telemetry, docs/training.md). Every process runs with OMP_NUM_THREADS=1. Data: ``data/tiny`` when it exists (``make data``), else a
small set rendered into a temporary directory with the same image/UV size. ``quick`` uses a micro
prior at 32 px (the test configuration) and fewer steps.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / "configs" / "train" / "tiny.yaml"
MICRO = [
    "data.image_size=32", "model.uv_size=32", "model.enc_channels=[8,16,16]", "model.dec_channels=[16,16,8]",
    "model.code_dim=8", "model.codebook_size=32", "model.feature_channels=8", "model.regressor_hidden=16",
    "model.parts={face: {grid_size: 24, regions: [face, ears, neck, eyes, mouth]}, scalp: {grid_size: 24, regions: [scalp]}}",
]


def _dataset(workdir: Path, quick: bool) -> tuple[str, list[str]]:
    from synshot.config import load_config
    from synshot.data.synthesize import SynthConfig, synthesize
    from synshot.data.writer import read_manifest

    tiny = REPO / "data" / "tiny"
    if not quick:
        try:
            read_manifest(str(tiny), "train")
            return str(tiny), []
        except Exception:  # not generated yet: render a small stand-in of the same sizes
            pass
    size = 32 if quick else load_config(SynthConfig, REPO / "configs" / "data" / "tiny.yaml").image_size
    cfg = SynthConfig(num_identities=6, expressions_per_identity=2, views=2, image_size=size, uv_size=size, spp=1,
                      samples_per_shard=4, splits={"train": 1.0, "val": 0.0, "test": 0.0})
    root = workdir / "data"
    synthesize(cfg, str(root), progress=False)
    return str(root), [f"data.image_size={size}", f"model.uv_size={size}"]


def _run(nproc: int, args: list[str], env: dict) -> None:
    if nproc == 1:
        cmd = [sys.executable, "-m", "train", *args]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "train", *args]
    res = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if res.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd[:6])} ... exited {res.returncode}:\n" + "\n".join(res.stdout.splitlines()[-30:]))


PHASES = ("data_wait", "forward", "render_forward", "backward", "optimizer", "comm")


def _read(run_dir: Path, skip: int) -> tuple[float, float, dict[str, float]]:
    """(samples/s, peak RSS MB, mean seconds per step of each phase) after the first ``skip`` steps."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()

    def mean(tag: str) -> float:
        vals = [e.value for e in acc.Scalars(tag) if e.step > skip]
        return sum(vals) / len(vals)

    rss = max(e.value for e in acc.Scalars("mem/cpu_peak_rss_mb"))
    split = {p: mean(f"time/{p}_s") for p in PHASES}
    split["step"] = mean("perf/step_s")
    return mean("perf/samples_per_s_total"), rss, split


def run(quick: bool) -> dict[str, float]:
    steps, skip = (6, 2) if quick else (12, 4)
    env = {k: v for k, v in os.environ.items()
           if k not in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT") and not k.startswith("SLURM_")}
    env["PYTHONPATH"] = str(REPO)
    env.setdefault("DS_ACCELERATOR", "cpu")
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        work = Path(tmp)
        url, sizes = _dataset(work, quick)
        common = ["--config", str(CONFIG), *(MICRO if quick else []), *sizes, f"data.url={url}",
                  f"out_dir={work / 'runs'}", f"max_steps={steps}", "logging.every_n_steps=1",
                  "logging.val_samples=0", "logging.image_every_n_steps=100000", "logging.progress=false",
                  f"checkpoint.every_n_steps={steps}", "--resume", "never"]
        # one thread per process in both runs: the comparison is 1 vs 2 workers, and OpenMP spinning
        # on an oversubscribed 2-core machine can cost 10x (measured)
        _run(1, [*common, "name=p1"], {**env, "OMP_NUM_THREADS": "1"})
        one, rss, split1 = _read(work / "runs" / "p1", skip)
        _run(2, [*common, "name=p2"], {**env, "OMP_NUM_THREADS": "1"})
        two, _, split2 = _read(work / "runs" / "p2", skip)
    return {
        "train_samples_per_s_tiny_1proc": one,
        "train_samples_per_s_tiny_2proc": two,
        "train_scaling_ratio_2proc": two / one,
        "train_peak_rss_mb_tiny": rss,
        **{f"train_step_split_tiny_1proc_{k}_s": v for k, v in split1.items()},
        **{f"train_step_split_tiny_2proc_{k}_s": v for k, v in split2.items()},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
