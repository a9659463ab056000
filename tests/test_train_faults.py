"""Training fault catalogue: resume semantics, checkpoint integrity, non-resumable run dirs, run-dir lock.

In-process with the small regression task of test_train_machinery (real DeepSpeed engine, gloo).
"""

from __future__ import annotations

import os

import pytest
import torch

from synshot import fsio
from synshot.cli import EXIT_CHECKPOINT
from test_train_machinery import ListLoader, Regressor, _train, dist_env  # noqa: F401 (fixture)
from train.checkpoint import LATEST, META, CheckpointManager, read_meta, resolve_checkpoint
from train.config import DistributedConfig, OptimConfig
from train.engine import WarmupCosine, build_engine
from train.errors import CheckpointError
from train.resume import check_resume_config, classify_changes, rebuild_schedule

pytestmark = pytest.mark.faults


def _engine(dist_env, max_steps, lr=1e-2, min_lr=1e-4):  # noqa: F811
    torch.manual_seed(0)
    engine, _ = build_engine(Regressor(), OptimConfig(lr=lr, warmup_steps=2, min_lr=min_lr),
                             DistributedConfig(zero_stage=1, grad_clip=1.0), dist_env, 4, max_steps)
    return engine


def test_extended_run_continues_the_cosine_not_the_old_floor(tmp_path, dist_env):  # noqa: F811
    code, _, _, ckpt = _train(tmp_path, dist_env, 6, name="ext")  # the schedule reached min_lr at step 6
    path = resolve_checkpoint(ckpt.dir)
    engine = _engine(dist_env, 6)
    ckpt.load(engine, path)
    assert engine.get_lr()[0] == pytest.approx(1e-4)  # what a plain restore gives: the old floor
    lr = rebuild_schedule(engine, lr=1e-2, min_lr=1e-4, warmup_steps=2, max_steps=12)
    expected = 1e-2 * WarmupCosine(2, 12, 1e-2)(6)
    assert lr == pytest.approx(expected) and engine.get_lr()[0] == pytest.approx(expected)
    assert expected > 10 * 1e-4
    engine.lr_scheduler.step()  # the scheduler keeps following the new schedule
    assert engine.lr_scheduler.get_last_lr()[0] == pytest.approx(1e-2 * WarmupCosine(2, 12, 1e-2)(7))
    # a new lr takes effect too
    lr = rebuild_schedule(engine, lr=5e-3, min_lr=1e-4, warmup_steps=2, max_steps=12)
    assert lr == pytest.approx(5e-3 * WarmupCosine(2, 12, 1e-4 / 5e-3)(7))


def test_unchanged_schedule_is_reproduced_exactly(tmp_path, dist_env):  # noqa: F811
    _, _, _, ckpt = _train(tmp_path, dist_env, 6, name="same", ckpt_every=3)
    engine = _engine(dist_env, 6)
    ckpt.load(engine, ckpt.dir / "step_00000003")
    before = engine.get_lr()[0]
    assert rebuild_schedule(engine, lr=1e-2, min_lr=1e-4, warmup_steps=2, max_steps=6) == before


def test_resume_config_policy():
    saved = {"max_steps": 6, "optim": {"lr": 1e-2, "min_lr": 1e-4, "betas": [0.9, 0.99]},
             "logging": {"every_n_steps": 10}, "loss": {"w_rgb": 1.0}, "seed": 0}
    ok = {**saved, "max_steps": 12, "optim": {**saved["optim"], "lr": 5e-3}, "logging": {"every_n_steps": 1}}
    assert classify_changes(saved, ok) == (["max_steps", "optim.lr"], ["logging.every_n_steps"], [])
    lines = check_resume_config("ck", saved, ok)
    assert "max_steps: 6 -> 12" in lines and "optim.lr: 0.01 -> 0.005" in lines
    for bad in ({**saved, "loss": {"w_rgb": 2.0}}, {**saved, "seed": 1},
                {**saved, "optim": {**saved["optim"], "betas": [0.9, 0.9]}}):
        with pytest.raises(CheckpointError, match="change what training computes") as e:
            check_resume_config("ck", saved, bad)
        assert e.value.exit_code == EXIT_CHECKPOINT


def test_damaged_bytes_of_the_right_length_are_refused(tmp_path, dist_env):  # noqa: F811
    _, _, _, ckpt = _train(tmp_path, dist_env, 4, ckpt_every=2, name="hash")
    path = resolve_checkpoint(ckpt.dir)
    meta = read_meta(path)
    assert all(len(rec["sha256"]) == 64 for rec in meta["files"].values())
    big = max((path / f for f in meta["files"]), key=lambda f: f.stat().st_size)
    data = bytearray(big.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, one byte flipped
    big.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=rf"{big.name}.*content hash.*--resume .*step_00000002"):
        read_meta(path)
    with pytest.raises(CheckpointError, match="content hash"):
        ckpt.load(_engine(dist_env, 4), path)


def test_step_dirs_without_a_complete_checkpoint_refuse_to_start(tmp_path):
    ck = CheckpointManager(tmp_path / "ck", 0, 1, keep_last=2)
    for tag in ("step_00000002", "step_00000004"):
        (ck.dir / tag).mkdir(parents=True)
        (ck.dir / tag / "mp_rank_00_model_states.pt").write_bytes(b"x" * 10)
    with pytest.raises(CheckpointError, match="none is complete.*--resume never"):
        ck.find("auto")
    assert ck.find("never") is None  # told to: start afresh, the old step dirs are moved aside, not lost
    aside = [p for p in ck.dir.iterdir() if p.name.startswith("incomplete-")]
    assert len(aside) == 1 and sorted(p.name for p in aside[0].iterdir()) == ["step_00000002", "step_00000004"]
    assert ck.find("auto") is None  # now a clean start


def test_latest_naming_an_incomplete_step_is_refused(tmp_path, dist_env):  # noqa: F811
    _, _, _, ckpt = _train(tmp_path, dist_env, 2, ckpt_every=2, name="inc")
    os.remove(ckpt.dir / "step_00000002" / META)
    assert (ckpt.dir / LATEST).is_file()
    with pytest.raises(CheckpointError, match="incomplete checkpoint"):
        read_meta(ckpt.find("auto"))


def test_two_trainings_cannot_share_a_run_dir(tmp_path, monkeypatch):
    """The second `python -m train` into a locked run dir exits 2 naming the first (no traceback)."""
    from train.run import main

    run_dir = tmp_path / "runs" / "tiny"
    lock = fsio.OutputLock(run_dir, purpose="train")
    lock.path.parent.mkdir(parents=True)
    # the holder: another live process on this host (pid 1 always exists)
    lock.path.write_text('{"host": "%s", "pid": 1, "purpose": "train", "command": "python -m train"}'
                         % __import__("socket").gethostname())
    rc = main(["--config", "configs/train/tiny.yaml", f"out_dir={tmp_path / 'runs'}", "name=tiny",
               f"data.url={tmp_path / 'nodata'}"])
    assert rc == 2


def test_missing_manifest_is_a_data_error_exit_5(tmp_path, capsys):
    from train.run import main

    rc = main(["--config", "configs/train/tiny.yaml", f"out_dir={tmp_path / 'runs'}", f"data.url={tmp_path / 'nodata'}"])
    err = capsys.readouterr().err
    assert rc == 5, err
    assert "manifest not found" in err and "Traceback" not in err


def test_checkpoint_of_a_diverged_run_is_refused_on_load(tmp_path, dist_env):  # noqa: F811
    """Weights with NaN saved (hash consistent) by a diverged run: exit 4 with the older step to use."""
    from train.checkpoint import NonFiniteCheckpointError

    code, engine, trainer, ckpt = _train(tmp_path, dist_env, 2, ckpt_every=1, name="div")
    with torch.no_grad():
        next(engine.module.parameters()).fill_(float("nan"))
    trainer.step = 3
    trainer.save()
    with pytest.raises(NonFiniteCheckpointError, match=r"step_00000003: the restored weights hold NaN.*step_00000002") as e:
        ckpt.load(_engine(dist_env, 6), ckpt.dir / "step_00000003")
    assert e.value.exit_code == 4


def test_locked_run_dir_stops_every_rank_of_a_torchrun_job(tmp_path):
    """Rank 0 finds the run dir locked; the other rank gets the same error instead of waiting in a
    collective until the timeout (2 real processes)."""
    import socket
    import subprocess
    import sys

    run_dir = tmp_path / "runs" / "tiny"
    run_dir.mkdir(parents=True)
    (run_dir / fsio.LOCK_NAME).write_text(
        '{"host": "%s", "pid": 1, "purpose": "train", "command": "python -m train"}' % socket.gethostname())
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "train",
         "--config", "configs/train/tiny.yaml", f"out_dir={tmp_path / 'runs'}", "name=tiny",
         f"data.url={tmp_path / 'nodata'}", "distributed.timeout_minutes=30"],
        capture_output=True, text=True, timeout=400, env=env)
    assert proc.returncode != 0
    assert proc.stderr.count("in use by train (pid 1") >= 1, proc.stderr[-3000:]
    assert "Timeout" not in proc.stderr and "manifest not found" not in proc.stderr
