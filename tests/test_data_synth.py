"""End to end through the real head model and Mitsuba ray tracer: synth CLI (array tasks, skip,
finalize) -> inspect --json -> loader; determinism of a rendered sample; the SLURM array job."""

import json
import os
import sys
import time
from pathlib import Path

import pytest

from data_tools import inspect as inspect_cli
from data_tools import synth as synth_cli
from synshot.config import load_config
from synshot.data.loader import LoaderConfig, make_loader
from synshot.data.synthesize import DatasetPlan, SynthConfig, default_renderers, render_sample
from synshot.data.writer import read_manifest

REPO = Path(__file__).resolve().parent.parent
CONFIG = str(REPO / "configs" / "data" / "tiny.yaml")
# 2 identities (one train, one val) x 2 expressions, 2 views of 32 px, 1 sample per shard
SMALL = ["num_identities=2", "expressions_per_identity=2", "views=2", "image_size=32", "spp=2", "uv_size=32",
         "samples_per_shard=1", "splits={train: 0.5, val: 0.5, test: 0.0}"]


def test_synth_array_tasks_skip_finalize_inspect_and_load(tmp_path, capsys):
    out = str(tmp_path / "ds")
    plan = DatasetPlan(load_config(SynthConfig, CONFIG, SMALL))
    assert [len(plan.shards_of(s)) for s in ("train", "val", "test")] == [2, 2, 0]
    # two array tasks, each a disjoint half; the manifest is partial until both are done
    assert synth_cli.main(["--config", CONFIG, "--out", out, "--shard-index", "0", "--num-shards", "2", "--no-progress", *SMALL]) == 0
    assert read_manifest(out, "train")["complete"] and "val.json" in os.listdir(out)
    assert not read_manifest(out, "val")["complete"]
    assert synth_cli.main(["--config", CONFIG, "--out", out, "--shard-index", "1", "--num-shards", "2", "--no-progress", *SMALL]) == 0
    capsys.readouterr()
    # re-running a task skips its complete shards
    assert synth_cli.main(["--config", CONFIG, "--out", out, "--shard-index", "0", "--num-shards", "2", "--no-progress", *SMALL]) == 0
    assert "rendered 0 shards, skipped 2 complete" in capsys.readouterr().err
    assert synth_cli.main(["--config", CONFIG, "--out", out, "--finalize", *SMALL]) == 0
    assert "val: 2 samples in 2 shards, complete" in capsys.readouterr().err
    manifest = read_manifest(out, "train")
    assert manifest["complete"] and manifest["num_samples"] == 2
    assert manifest["generator_config"]["synth"]["image_size"] == 32
    assert manifest["generator_config"]["head_model_version"]
    # inspect --json: valid, counts match, contact sheet written
    sheet = tmp_path / "sheet.png"
    assert inspect_cli.main([out, "--json", "--out", str(sheet), "--verify-hash"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["ok"] and report["num_samples"] == 4 and report["corrupt_samples"] == 0
    assert report["splits"]["train"]["image_sizes"] == [[32, 32]] and report["splits"]["val"]["uv_sizes"] == [32]
    assert sheet.stat().st_size > 1000
    # the loader streams it with the batch contract
    cfg = LoaderConfig(url=out, batch_size=2, views_per_sample=2, image_size=32, uv_size=32, resampled=False, epochs=1)
    (batch,) = list(make_loader(cfg))
    assert tuple(batch["rgb"].shape) == (2, 2, 3, 32, 32) and tuple(batch["verts"].shape) == (2, 3, 32, 32)
    assert batch["mask"].mean() > 0.05  # the head is in the frame
    assert batch["expression_coeffs"].shape[1] >= 10
    neutral = batch["expression"] == 0
    assert (batch["expression_coeffs"][neutral] == 0).all()  # expression 0 is the neutral face
    # a damaged shard is reported by inspect with a non-zero exit
    shard = Path(out) / "val-000001.tar"
    shard.write_bytes(shard.read_bytes()[:3000])
    assert inspect_cli.main([out, "--split", "val"]) == 1
    assert "val-000001.tar" in capsys.readouterr().out


def test_rendered_sample_is_deterministic():
    cfg = load_config(SynthConfig, CONFIG, SMALL)
    head, tracer = default_renderers(cfg)
    a = render_sample(head, tracer, cfg, 1, 1)
    render_sample(head, tracer, cfg, 0, 0)  # other renders in between must not change it
    b = render_sample(head, tracer, cfg, 1, 1)
    assert a.keys() == b.keys()
    assert all(a[k] == b[k] for k in a), [k for k in a if a[k] != b[k]]
    c = render_sample(head, tracer, cfg.model_copy(update={"seed": 1}), 1, 1)
    assert c["meta.json"] != a["meta.json"]


@pytest.mark.slurm
@pytest.mark.slow
def test_synth_sbatch_array_on_local_cluster(tmp_path, cluster):
    out = tmp_path / "ds"
    logs = tmp_path / "logs"
    logs.mkdir()
    env = {"PYTHONPATH": str(REPO), "SYNSHOT_PYTHON": sys.executable, "OMP_NUM_THREADS": "1",
           "SYNSHOT_SYNTH_FINALIZE_OUTPUT": f"{logs}/finalize-%j.out"}
    job = cluster.sbatch("--array=0-1", "--cpus-per-task=1", f"--output={logs}/synth-%A_%a.out", "--time=10",
                         str(REPO / "slurm" / "synth.sbatch"), "--config", CONFIG, "--out", str(out), *SMALL,
                         cwd=REPO, env=env)
    for task in (0, 1):
        info = cluster.wait(f"{job}_{task}", timeout=240, log=logs / f"synth-{job}_{task}.out")
        assert info["JobState"] == "COMPLETED", (info, (logs / f"synth-{job}_{task}.out").read_text())
    # the finalize job submitted by task 0 runs after the array and leaves complete manifests
    deadline = time.time() + 120
    while time.time() < deadline:
        queue = cluster.run("squeue", "-h", "-n", "synshot-synth-finalize", "-o", "%i", check=False).stdout.split()
        if not queue and (out / "val.json").exists() and read_manifest(str(out), "val")["complete"]:
            break
        time.sleep(1)
    for split, n in (("train", 2), ("val", 2)):
        m = read_manifest(str(out), split)
        assert m["complete"] and m["num_samples"] == n, (split, m)
    finalize_logs = list(logs.glob("finalize-*.out"))
    assert len(finalize_logs) == 1 and "rebuilding manifests" in finalize_logs[0].read_text()


def test_rerun_with_another_config_refuses_to_mix(tmp_path):
    from synshot.data.synthesize import config_fingerprint, synthesize
    from synshot.data.writer import ManifestError

    cfg = load_config(SynthConfig, CONFIG, SMALL + ["num_identities=1", "splits={train: 1.0, val: 0.0, test: 0.0}",
                                                    "storage_options={anon: false}"])
    out = str(tmp_path)
    assert len(synthesize(cfg, out, progress=False)["rendered"]) == 2
    manifest = read_manifest(out, "train")
    assert manifest["generator_config"]["fingerprint"] == config_fingerprint(cfg)
    assert "storage_options" not in manifest["generator_config"]["synth"]  # may hold credentials
    assert synthesize(cfg.model_copy(update={"torch_threads": 2}), out, progress=False)["skipped"] == [
        "train-000000.tar", "train-000001.tar"]  # thread count does not change the bytes
    with pytest.raises(ManifestError, match="another generator config"):
        synthesize(cfg.model_copy(update={"spp": 3}), out, progress=False)
