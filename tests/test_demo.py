"""The demo pipeline end to end at a very small size: every stage, every artifact, and reuse.

This runs the real commands (ray-traced shards, 2-process DeepSpeed training, export, held-out
subjects, inversion, driving, evaluation) with tiny sizes, then checks what each stage wrote.
"""

import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]


def demo_overrides(out: Path) -> list[str]:
    return [
        f"out={out}",
        "data_overrides=[num_identities=6,expressions_per_identity=2,views=2,image_size=64,uv_size=64,spp=4,"
        "samples_per_shard=4]",
        "train_overrides=[max_steps=4,data.image_size=64,model.uv_size=64,data.batch_size=1,checkpoint.every_n_steps=2,"
        "logging.every_n_steps=1,logging.image_every_n_steps=2,logging.val_every_n_steps=4,logging.val_samples=1]",
        "nproc=2",
        "subject_seeds=[3001,3002]",
        # 128 px (the demo's size): smaller renders of s3002 have no face the detector finds
        "subject_args=[--size,128,--spp,2,--eval-views,2,--eval-expressions,1,--tiny-head]",
        "track_overrides=[fit.pose_steps=30,fit.shape_steps=40,fit.expression_steps=40,silhouette.steps=30]",
        "invert_overrides=[stage1.steps=2,stage2.steps=2,image_size=48,head_mesh=tiny,output.turntable_frames=4]",
        "eval_overrides=[bootstrap_replicates=100]",
    ]


def run_demo(out: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "synshot.demo", "--config", "configs/demo/tiny.yaml", *demo_overrides(out)]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=1500)


def test_demo_pipeline_writes_every_artifact(tmp_path):
    out = tmp_path / "demo"
    proc = run_demo(out)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]

    # data: manifests + contact sheet
    manifest = json.loads((out / "data" / "train.json").read_text())
    assert manifest["num_samples"] > 0 and manifest["shards"]
    assert (out / "data_sheet.png").stat().st_size > 0
    # training: 2 ranks, checkpoint, TensorBoard events with the loss terms
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    tb = EventAccumulator(str(out / "train" / "tb"), size_guidance={"scalars": 0}).Reload()
    scalars = tb.Tags()["scalars"]
    assert any("loss" in t for t in scalars), scalars
    assert (out / "train" / "checkpoints" / "latest").is_file()
    # export: loads without DeepSpeed
    from synshot.model import load_exported

    model, _ = load_exported(out / "prior.safetensors")
    assert sum(model.gaussian_counts().values()) > 0
    # inversion outputs (of the tracked subject)
    inv = out / "invert" / "s3001"
    assert json.loads((out / ".stages" / "invert.json").read_text())["commands"][0][3] == str(out / "tracked" / "s3001")
    metrics = json.loads((inv / "metrics.json").read_text())
    assert np.isfinite(metrics["eval_psnr_full"])
    from synshot.invert.ply import read_ply
    from synshot.invert.video import read_mp4_frames

    ply = read_ply(inv / "avatar.ply")
    assert ply.means.shape == (sum(model.gaussian_counts().values()), 3)
    assert len(read_mp4_frames(inv / "turntable.mp4")) == 4
    assert len(read_mp4_frames(inv / "driven.mp4")) >= 1
    assert (inv / "inputs_vs_renders.png").stat().st_size > 0
    # evaluation + summary report
    report = (out / "report.md").read_text()
    from synshot.eval.protocol import ORACLE_METHOD

    for method in ("no_prior", "full", ORACLE_METHOD):
        assert f"| {method} |" in report
    assert "Geometry: tracked" in report and "Tracking error" in report
    summary = json.loads((out / "metrics.json").read_text())
    assert set(summary["eval_mean"]) == {"no_prior", "full", ORACLE_METHOD}
    assert (out / "tracked" / "s3001" / "tracking.png").is_file() and (out / "tracked" / "s3002" / "eval").is_dir()
    assert (out / "eval" / "grid_s3001.png").is_file() and (out / "eval" / "grid_s3002.png").is_file()

    # re-running reuses every finished stage
    start = time.perf_counter()
    again = run_demo(out)
    assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
    assert again.stderr.count("reusing") == 8, again.stderr
    assert time.perf_counter() - start < 60
