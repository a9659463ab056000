"""``python -m train`` / ``python -m train.export`` as real processes on a tiny real dataset.

One uninterrupted 6-step run is shared by the TensorBoard, export and bad-checkpoint tests; a second
run of the same seed and config is stopped with SIGUSR1 and resumed, and must end with bit-identical
weights (fp32, CPU, gloo).
"""

from __future__ import annotations

import shutil
import signal

import pytest
import torch
from test_train_helpers import CONFIG, MICRO, run_and_signal, run_train, tail, train_dataset  # noqa: F401

from train.checkpoint import LATEST, META, read_meta
from train.errors import EXIT_CHECKPOINT, EXIT_CONFIG, EXIT_OK, EXIT_PREEMPTED

STEPS = 6


def _args(dataset, out_dir, name="run", *extra):
    return ["--config", CONFIG, *MICRO, f"data.url={dataset}", f"out_dir={out_dir}", f"name={name}",
            f"max_steps={STEPS}", "checkpoint.every_n_steps=3", "checkpoint.keep_last=2", "logging.every_n_steps=1",
            "logging.image_every_n_steps=3", f"logging.val_every_n_steps={STEPS}", "logging.val_samples=2", *extra]


@pytest.fixture(scope="module")
def full_run(train_dataset, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    res = run_train(_args(train_dataset, out))
    assert res.returncode == EXIT_OK, tail(res.stdout)
    return out / "run", res.stdout


def _export(run_dir, out):
    res = run_train(["--ckpt", str(run_dir), "--out", str(out)], module="train.export")
    assert res.returncode == EXIT_OK, tail(res.stdout)
    from safetensors.torch import load_file

    return load_file(str(out))


def test_bad_config_exits_2_naming_the_key(tmp_path):
    res = run_train(["--config", CONFIG, "optim.lrr=1", f"out_dir={tmp_path}"])
    assert res.returncode == EXIT_CONFIG, tail(res.stdout)
    assert "optim.lrr: unknown key" in res.stdout
    res = run_train(["--config", str(tmp_path / "missing.yaml")])
    assert res.returncode == EXIT_CONFIG and "missing.yaml: config file not found" in res.stdout


def test_run_layout_and_tensorboard(full_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, out = full_run
    ck = run_dir / "checkpoints"
    assert (ck / LATEST).read_text().strip() == "step_00000006"
    assert sorted(p.name for p in ck.iterdir() if p.name.startswith("step_")) == ["step_00000003", "step_00000006"]
    assert read_meta(ck / "step_00000006")["step"] == STEPS
    assert (run_dir / "config.json").is_file()
    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0, "images": 0}).Reload()
    tags = acc.Tags()
    expected = ["loss/total", "loss/l1", "loss/ssim", "loss/lpips", "loss/geom", "loss/reg", "loss/vq", "opt/lr",
                "opt/grad_norm", "perf/images_per_s_per_gpu", "perf/images_per_s_total", "perf/samples_per_s_total",
                "perf/data_wait_fraction", "mem/cpu_rss_mb", "vq/perplexity_id", "vq/usage_expr",
                "train/nonfinite_total", "val/psnr", "val/ssim", "val/loss"]
    missing = [t for t in expected if t not in tags["scalars"]]
    assert not missing, (missing, tags["scalars"])
    assert {"images/train", "images/val"} <= set(tags["images"])
    assert [e.step for e in acc.Scalars("loss/total")] == list(range(1, STEPS + 1))
    img = acc.Images("images/train")[0]
    assert img.step == 3 and img.width == 3 * 32 and img.height == 2 * 32  # GT|render|error x 2 views
    lrs = [e.value for e in acc.Scalars("opt/lr")]
    assert lrs[0] < lrs[1] and lrs[-1] < lrs[1]  # warmup then decay


@pytest.mark.slow
def test_sigusr1_checkpoints_exits_75_and_resume_is_bit_identical(full_run, train_dataset, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run_dir, _ = full_run
    args = _args(train_dataset, tmp_path)
    rc, out = run_and_signal(args, when=f"[train] step 2/{STEPS}", sig=signal.SIGUSR1)
    assert rc == EXIT_PREEMPTED, tail(out)
    assert "got SIGUSR1" in out
    ck = tmp_path / "run" / "checkpoints"
    stopped = int((ck / LATEST).read_text().strip().split("_")[1])
    assert 2 <= stopped < STEPS
    res = run_train(args)
    assert res.returncode == EXIT_OK, tail(res.stdout)
    assert f"resumed from {ck / f'step_{stopped:08d}'} at step {stopped}" in res.stdout
    a = _export(run_dir, tmp_path / "a.safetensors")
    b = _export(tmp_path / "run", tmp_path / "b.safetensors")
    assert a.keys() == b.keys()
    diff = {k: (a[k] - b[k]).abs().max().item() for k in a if a[k].is_floating_point() and not torch.equal(a[k], b[k])}
    assert not diff, f"interrupted+resumed run differs from the uninterrupted one: {diff}"
    steps = [e.step for e in EventAccumulator(str(tmp_path / "run" / "tb")).Reload().Scalars("loss/total")]
    assert sorted(set(steps)) == list(range(1, STEPS + 1))


def test_export_roundtrip_equal_weights_and_forward(full_run, tmp_path):
    from synshot.model import SynShotPrior, load_exported
    from train.config import TrainConfig

    run_dir, _ = full_run
    tensors = _export(run_dir, tmp_path / "prior.safetensors")
    step_dir = run_dir / "checkpoints" / "step_00000006"
    module = torch.load(step_dir / "mp_rank_00_model_states.pt", map_location="cpu", weights_only=False)["module"]
    assert tensors.keys() == module.keys()
    for k in module:
        assert torch.equal(tensors[k], module[k].float() if module[k].is_floating_point() else module[k]), k
    model, cfg = load_exported(tmp_path / "prior.safetensors")
    train_cfg = TrainConfig.model_validate(read_meta(step_dir)["config"])
    assert cfg == train_cfg.model
    ref = SynShotPrior(train_cfg.model).eval()
    ref.load_state_dict(module)
    g = torch.Generator().manual_seed(0)
    s = cfg.uv_size
    x = (torch.rand(1, 3, s, s, generator=g), torch.randn(1, 3, s, s, generator=g) * 0.05,
         torch.randn(1, 3, s, s, generator=g) * 0.002, torch.eye(4)[None])
    with torch.no_grad():
        o1, o2 = model(*x), ref(*x)
    for name in ("means", "scales", "opacities", "sh"):
        assert torch.equal(getattr(o1.gaussians, name), getattr(o2.gaussians, name)), name


@pytest.mark.slow
def test_bad_checkpoints_are_clear_errors(full_run, train_dataset, tmp_path):
    run_dir, _ = full_run
    copy = tmp_path / "run"
    shutil.copytree(run_dir, copy)
    # incompatible architecture -> exit 3 naming the key
    res = run_train(_args(train_dataset, tmp_path, "run", "max_steps=8", "model.feature_channels=16"))
    assert res.returncode == EXIT_CHECKPOINT, tail(res.stdout)
    assert "model.feature_channels" in res.stdout and "step_00000006" in res.stdout
    # truncated file -> exit 3 naming the file (train and export)
    step = copy / "checkpoints" / "step_00000006"
    victim = step / "mp_rank_00_model_states.pt"
    victim.write_bytes(victim.read_bytes()[:1000])
    res = run_train(_args(train_dataset, tmp_path, "run", "max_steps=8"))
    assert res.returncode == EXIT_CHECKPOINT, tail(res.stdout)
    assert str(victim) in res.stdout and "truncated" in res.stdout
    res = run_train(["--ckpt", str(copy), "--out", str(tmp_path / "x.safetensors")], module="train.export")
    assert res.returncode == EXIT_CHECKPOINT and "truncated" in res.stdout, tail(res.stdout)
    # 'latest' naming a missing directory
    shutil.rmtree(step)
    res = run_train(["--ckpt", str(copy), "--out", str(tmp_path / "x.safetensors")], module="train.export")
    assert res.returncode == EXIT_CHECKPOINT and "does not exist" in res.stdout, tail(res.stdout)
    # an incomplete save (no meta) is refused, not loaded
    (copy / "checkpoints" / LATEST).write_text("step_00000003\n")
    (copy / "checkpoints" / "step_00000003" / META).unlink()
    res = run_train(["--ckpt", str(copy), "--out", str(tmp_path / "x.safetensors")], module="train.export")
    assert res.returncode == EXIT_CHECKPOINT and "incomplete checkpoint" in res.stdout, tail(res.stdout)
