"""Launcher variables -> torch.distributed variables (SLURM, torchrun, single process)."""

import pytest

from train.distributed import DistributedSetupError, expand_nodelist, first_host, resolve_env


@pytest.mark.parametrize(
    "nodelist, hosts",
    [
        ("vm", ["vm"]),
        ("n[1-2]", ["n1", "n2"]),
        ("n[01-03,7]", ["n01", "n02", "n03", "n7"]),
        ("gpu-[1-2]-ib,login", ["gpu-1-ib", "gpu-2-ib", "login"]),
        ("a[1,3],b[09-10]", ["a1", "a3", "b09", "b10"]),
    ],
)
def test_expand_nodelist(nodelist, hosts):
    assert expand_nodelist(nodelist) == hosts


@pytest.mark.parametrize("bad", ["n[1-2", "n[3-1]", "n[a-b]"])
def test_expand_nodelist_errors(bad):
    with pytest.raises(DistributedSetupError, match="SLURM_JOB_NODELIST"):
        expand_nodelist(bad)


def test_first_host_without_scontrol(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert first_host("node[12-13]") == "node12"


def test_single_process_defaults():
    env = {}
    d = resolve_env(env, cuda_available=False)
    assert (d.rank, d.world_size, d.local_rank, d.launcher, d.backend, d.device) == (0, 1, 0, "single", "gloo", "cpu")
    assert env["RANK"] == "0" and env["WORLD_SIZE"] == "1" and env["MASTER_ADDR"] == "127.0.0.1"
    assert 0 < int(env["MASTER_PORT"]) < 65536


def test_torchrun_wins():
    env = {"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "1234",
           "TORCHELASTIC_RUN_ID": "x", "SLURM_PROCID": "0", "SLURM_NTASKS": "1", "SLURM_STEP_ID": "0"}
    d = resolve_env(env, cuda_available=True)
    assert (d.rank, d.world_size, d.local_rank, d.master_addr, d.master_port) == (1, 2, 1, "h", 1234)
    assert (d.launcher, d.backend, d.device) == ("torchrun", "nccl", "cuda:1")


def test_srun_task_mapping(monkeypatch):
    monkeypatch.setenv("PATH", "/nonexistent")  # exercise the python parser
    env = {"SLURM_PROCID": "3", "SLURM_NTASKS": "4", "SLURM_LOCALID": "1", "SLURM_STEP_ID": "0",
           "SLURM_JOB_NODELIST": "n[1-2]", "SLURM_JOB_ID": "1234"}
    d = resolve_env(env, cuda_available=True)
    assert (d.rank, d.world_size, d.local_rank, d.launcher, d.device) == (3, 4, 1, "slurm", "cuda:1")
    assert env["MASTER_ADDR"] == "n1" and env["MASTER_PORT"] == str(20000 + 1234)
    assert env["RANK"] == "3" and env["WORLD_SIZE"] == "4" and env["LOCAL_RANK"] == "1"
    # the sbatch script's MASTER_ADDR/PORT take precedence
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0", "SLURM_JOB_NODELIST": "n[1-2]",
           "SLURM_JOB_ID": "7", "MASTER_ADDR": "head", "MASTER_PORT": "29999"}
    d = resolve_env(env, cuda_available=False)
    assert (d.master_addr, d.master_port, d.backend) == ("head", 29999, "gloo")


def test_batch_shell_is_a_single_process():
    # inside sbatch but outside srun (no SLURM_STEP_ID): one plain process
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_JOB_NODELIST": "vm", "SLURM_JOB_ID": "5"}
    assert resolve_env(env, cuda_available=False).launcher == "single"
    env = {"SLURM_PROCID": "0", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "4294967291", "SLURM_JOB_ID": "5"}
    assert resolve_env(env, cuda_available=False).launcher == "single"  # batch pseudo-step


def test_inconsistent_env_is_an_error():
    with pytest.raises(DistributedSetupError, match="outside world size"):
        resolve_env({"RANK": "2", "WORLD_SIZE": "2", "MASTER_PORT": "1"}, cuda_available=False)
    with pytest.raises(DistributedSetupError, match="MASTER_PORT"):
        resolve_env({"RANK": "0", "WORLD_SIZE": "2"}, cuda_available=False)
    with pytest.raises(DistributedSetupError, match="not an integer"):
        resolve_env({"SLURM_PROCID": "x", "SLURM_NTASKS": "2", "SLURM_STEP_ID": "0"}, cuda_available=False)
