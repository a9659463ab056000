"""slurm.submit without a cluster: argument/config validation and the distributed env mapping."""

from __future__ import annotations

import subprocess
import sys
from types import SimpleNamespace

import pytest

from slurm.cluster.local import REPO
from slurm.submit import SubmitConfig, distributed_env, master_port
from synshot.config import ConfigError


def test_distributed_env_from_job_environment():
    job_env = SimpleNamespace(global_rank=5, local_rank=1, num_tasks=8, hostnames=["gpu-01", "gpu-02"], raw_job_id="1234")
    assert distributed_env(job_env) == {
        "RANK": "5", "LOCAL_RANK": "1", "WORLD_SIZE": "8", "MASTER_ADDR": "gpu-01", "MASTER_PORT": "21234",
    }  # fmt: skip
    assert master_port("41234") == 21234  # same rule as train.sbatch: 20000 + id % 20000
    assert 20000 <= master_port("local-abc") < 40000


def test_submit_config_rejects_bad_launch_settings():
    with pytest.raises(ValueError, match="signal_delay_s=300 must be shorter"):
        SubmitConfig(config="c.yaml", time_min=5)
    with pytest.raises(ValueError, match="one task per GPU"):
        SubmitConfig(config="c.yaml", gpus_per_node=4, tasks_per_node=2)
    assert SubmitConfig(config="c.yaml", gpus_per_node=8).ntasks_per_node == 8
    assert SubmitConfig(config="c.yaml", gpus_per_node=0, tasks_per_node=3).ntasks_per_node == 3


def test_cli_fails_fast_on_bad_training_config():
    proc = subprocess.run(
        [sys.executable, "-m", "slurm.submit", "--config", "configs/train/tiny.yaml", "optim.lrr=1"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 2, proc.stderr
    assert "optim.lrr" in proc.stderr and "unknown key" in proc.stderr, proc.stderr
    assert "submitted" not in proc.stdout
    with pytest.raises(ConfigError):
        from slurm.submit import parse_args

        parse_args(["--config", "x.yaml", "--time-min", "1"])
