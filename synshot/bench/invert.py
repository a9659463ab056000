"""Inversion benchmark: 3 images, the tiny prior (configs/model/tiny.yaml), on the CPU.

The inversion runs in a child process (the CLI, as a user runs it) so that its peak RSS is its own.
The prior is freshly initialised (timing does not depend on the weights) and the subject is a
64 px held-out subject from data_tools.subject (tiny head mesh, 4 spp, 1 eval view x 2 expressions).
Figures: ``invert_s_tiny_cpu`` (inversion wall time inside the CLI: load, both stages, all outputs),
``invert_peak_rss_mb_tiny``, ``invert_step_s_tiny_cpu`` (mean seconds per optimisation step),
``invert_cpu_s_tiny`` (CPU seconds of the child process, incl. interpreter start: on a shared machine
the wall time mostly measures the other jobs).
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def run(quick: bool = False) -> dict[str, float | int]:
    import torch

    from data_tools.subject import make_subject
    from synshot.config import load_config
    from synshot.model import ModelConfig, SynShotPrior, save_exported

    steps = 5 if quick else 30
    size = 64
    with tempfile.TemporaryDirectory(prefix="bench_invert_") as tmp:
        tmp = Path(tmp)
        subject = make_subject(11, tmp / "subject", size=size, spp=4, eval_views=1, eval_expressions=2,
                               tiny_head=True)
        mcfg = load_config(ModelConfig, ROOT / "configs/model/tiny.yaml")
        torch.manual_seed(0)
        prior = save_exported(SynShotPrior(mcfg), mcfg, tmp / "prior.safetensors")
        out = tmp / "out"
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        cmd = [sys.executable, "-m", "synshot.invert", str(subject), "--prior", str(prior),
               "--out", str(out), "--config", str(ROOT / "configs/invert/tiny.yaml"), "device=cpu",
               f"image_size={size}", "head_mesh=tiny", f"stage1.steps={steps}", f"stage2.steps={steps}",
               "progress=false", "output.turntable_frames=6"]
        proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                              env={**os.environ, "PYTHONPATH": str(ROOT)})
        if proc.returncode != 0:
            raise RuntimeError(f"inversion failed (rc {proc.returncode}): {proc.stderr[-2000:]}")
        m = json.loads((out / "metrics.json").read_text())
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu_s = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {
        "invert_cpu_s_tiny": float(cpu_s),  # CPU seconds of the child: less sensitive to other jobs
        "invert_s_tiny_cpu": float(m["wall_s"]),
        "invert_peak_rss_mb_tiny": float(m["peak_rss_mb"]),
        "invert_step_s_tiny_cpu": float((m["stage1_s"] + m["stage2_s"]) / (2 * steps)),
        "invert_gaussians_tiny": int(sum(SynShotPrior(mcfg).gaussian_counts().values())),
        "invert_steps_tiny": 2 * steps,
    }


if __name__ == "__main__":
    print(json.dumps(run(quick="--quick" in sys.argv), indent=2))
