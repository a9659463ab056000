"""``synshot plan`` arithmetic and sources, and ``make gpu-check``'s refusal without CUDA."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from synshot.plan import PlanConfig, main, plan

BENCH = {"figures": {"scale_synth_cpu_s_per_megasample_px": 2.0, "scale_synth_cpu_s_per_view_fixed": 0.5, "scale_shard_mb_per_view_512": 0.05,
                     "scale_shard_mb_maps_per_sample_uv256": 1.0, "scale_loader_samples_per_s_512": 10.0,
                     "scale_ckpt_write_mb_per_s": 500.0}}


@pytest.fixture()
def bench(tmp_path):
    path = tmp_path / "bench.json"
    path.write_text(json.dumps(BENCH))
    return path


def test_paper_plan_figures_follow_from_inputs(bench, tmp_path):
    cfg = PlanConfig(bench=str(bench), nodes=2, gpus_per_node=4, gpu_step_s=0.5)
    f = {k: v["value"] for k, v in plan(cfg)["figures"].items()}
    assert f["dataset_images"] == 2000 * 350 * 20  # the paper's ~14M images (configs/data/paper.yaml)
    assert f["storage_shards"] == 7000
    mb = 20 * 0.05 + 1.0 * (512 / 256) ** 2  # views scaled from the measured view size, maps to UV 512
    assert f["storage_mb_per_sample"] == pytest.approx(mb)
    assert f["storage_tb"] == pytest.approx(700_000 * mb / 2**20)
    assert f["loader_need_samples_per_s_per_gpu"] == pytest.approx(4 / 0.5)
    assert f["train_global_batch"] == 4 * 8
    assert f["train_hours"] == pytest.approx(400_000 * 0.5 / 0.9 / 3600)
    assert f["model_parameters"] > 1e6
    assert f["checkpoint_gb"] == pytest.approx(f["model_parameters"] * 16 / 2**30)
    assert f["datagen_cpu_core_hours"] == pytest.approx((14e6 * 512**2 * 64 / 1e6 * 2.0 + 14e6 * 0.5) / 3600)


def test_gpu_figures_replace_the_assumed_step_time(bench, tmp_path):
    gpu = tmp_path / "gpu.json"
    gpu.write_text(json.dumps({"figures": {"train_step_s": 0.25}}))
    result = plan(PlanConfig(bench=str(bench), gpu_figures=str(gpu), nodes=1))
    assert result["inputs"]["gpu_step_s"] == 0.25 and "measured" in result["inputs"]["gpu_step_source"]
    assert result["figures"]["train_hours"]["value"] == pytest.approx(400_000 * 0.25 / 3600)  # 1 node: no efficiency


def test_cli_writes_json_and_names_missing_bench(bench, tmp_path, capsys):
    out = tmp_path / "plan.json"
    assert main([f"bench={bench}", "nodes=1", "gpus_per_node=2", "--out", str(out)]) == 0
    assert "| storage_tb |" in capsys.readouterr().out and json.loads(out.read_text())["inputs"]["gpus"] == 2
    assert main([f"bench={tmp_path / 'none.json'}"]) == 2
    assert "make bench" in capsys.readouterr().err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without CUDA")
def test_gpu_check_refuses_without_cuda(tmp_path):
    res = subprocess.run([sys.executable, "-m", "synshot.bench.gpu_check", "--out", str(tmp_path / "g.json")],
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 2 and "needs a CUDA GPU" in res.stderr, res.stderr
    assert not (tmp_path / "g.json").exists()
