"""The local SLURM cluster and slurm/train.sbatch with a small stand-in payload (real daemons).

The payload follows the trainer's launch contract (rank from the SLURM variables via
train.distributed, a gloo all-reduce across the emulated nodes, checkpoint + distinct exit code
on SIGUSR1, resume on restart) so the sbatch plumbing is tested independently of the trainer.
Under CI=true a cluster that cannot start fails these tests; elsewhere they are skipped.
"""

from __future__ import annotations

import json
import textwrap
import time
from pathlib import Path

import pytest

from slurm.cluster.local import REPO, LocalCluster, cluster_up, sacct_state

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(300)]

PREEMPT_CODE = 85  # exit code of the stand-in payload; train.sbatch is told via SYNSHOT_PREEMPT_EXIT_CODE

PAYLOAD = textwrap.dedent(
    """
    import json, os, sys, time
    from pathlib import Path
    from train.distributed import resolve_env

    out = Path(sys.argv[1]); steps = int(sys.argv[2]); step_s = float(sys.argv[3])
    env = resolve_env(os.environ, cuda_available=False)
    import torch, torch.distributed as dist
    dist.init_process_group("gloo", rank=env.rank, world_size=env.world_size,
                            init_method=f"tcp://{env.master_addr}:{env.master_port}")
    total = torch.tensor([float(env.rank + 1)]); dist.all_reduce(total)
    from train.preempt import StopRequest
    stop = StopRequest().install()  # the trainer's handler: a late second signal cannot kill the exit
    ckpt = out / "ckpt.json"
    start = json.loads(ckpt.read_text())["step"] if ckpt.exists() else 0
    with open(out / f"rank{env.rank}.jsonl", "a") as f:
        f.write(json.dumps(dict(rank=env.rank, world=env.world_size, local=env.local_rank,
                                master=env.master_addr, port=env.master_port, launcher=env.launcher,
                                allreduce=total.item(), node=os.environ.get("SLURMD_NODENAME"),
                                restart=os.environ.get("SLURM_RESTART_COUNT"), start=start,
                                cvd=os.environ.get("CUDA_VISIBLE_DEVICES"))) + "\\n")
    step = start
    (out / "running").touch()
    while step < steps:
        time.sleep(step_s)
        step += 1
        flag = torch.tensor([1.0 if stop.requested else 0.0]); dist.all_reduce(flag)
        if flag.item() > 0:
            if env.rank == 0:
                ckpt.write_text(json.dumps({"step": step}))
            dist.barrier()
            print(f"rank {env.rank}: checkpointed at step {step}", flush=True)
            os._exit(int(os.environ["SYNSHOT_PREEMPT_EXIT_CODE"]))
    if env.rank == 0:
        (out / "done.json").write_text(json.dumps({"step": step}))
    dist.barrier()
    # no interpreter teardown: a gloo process can abort in it ("terminate called without an active
    # exception", exit 134) after its work is done (tests/test_train_machinery.exit_without_teardown)
    sys.stdout.flush(); os._exit(0)
    """
)


@pytest.fixture
def payload(tmp_path: Path) -> dict[str, str]:
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "slurm_payload.py").write_text(PAYLOAD)
    (tmp_path / "out").mkdir()
    return {
        "PYTHONPATH": f"{REPO}:{tmp_path / 'pkg'}",
        "SYNSHOT_TRAIN_MODULE": "slurm_payload",
        "SYNSHOT_PREEMPT_EXIT_CODE": str(PREEMPT_CODE),
        "OMP_NUM_THREADS": "1",
    }


def _records(out: Path) -> list[dict]:
    return [json.loads(line) for p in sorted(out.glob("rank*.jsonl")) for line in p.read_text().splitlines()]


def test_cluster_has_two_idle_nodes_with_fake_gpus(cluster: LocalCluster):
    nodes = cluster.run("sinfo", "-h", "-N", "-o", "%N %t %G %c").stdout.split("\n")
    parsed = sorted(line.split() for line in nodes if line.strip())
    assert [p[0] for p in parsed] == ["n1", "n2"]
    for name, state, gres, cpus in parsed:
        assert state in ("idle", "mix", "alloc"), parsed
        assert gres.startswith("gpu:4"), parsed
        assert int(cpus) == 8
    # idempotent: a second up.sh is a fast no-op that leaves the same daemons running
    pid_before = (cluster.state_dir / "run" / "slurmctld.pid").read_text()
    t0 = time.monotonic()
    cluster_up(nodes=2)
    assert time.monotonic() - t0 < 10
    assert (cluster.state_dir / "run" / "slurmctld.pid").read_text() == pid_before


def test_train_sbatch_two_nodes_rendezvous(cluster: LocalCluster, payload, tmp_path: Path):
    out = tmp_path / "out"
    job = cluster.sbatch(
        "--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=1", "--cpus-per-task=1", "--time=15",
        f"--output={tmp_path}/job-%j.out",
        str(REPO / "slurm" / "train.sbatch"), str(out), "3", "0.1",
        cwd=REPO, env=payload,
    )  # fmt: skip
    info = cluster.wait(job, 120, log=tmp_path / f"job-{job}.out")
    log = (tmp_path / f"job-{job}.out").read_text()
    assert info["JobState"] == "COMPLETED", log
    recs = sorted(_records(out), key=lambda r: r["rank"])
    assert [(r["rank"], r["world"], r["local"], r["node"]) for r in recs] == [(0, 2, 0, "n1"), (1, 2, 0, "n2")], log
    assert all(r["master"] == "n1" and r["port"] == 20000 + job % 20000 and r["launcher"] == "slurm" for r in recs)
    assert all(r["allreduce"] == 3.0 and r["cvd"] == "0" for r in recs)
    assert json.loads((out / "done.json").read_text())["step"] == 3


def test_train_sbatch_usr1_checkpoints_requeues_and_resumes(cluster: LocalCluster, payload, tmp_path: Path):
    out = tmp_path / "out"
    job = cluster.sbatch(
        "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", "--time=15",
        f"--output={tmp_path}/job-%j.out",
        str(REPO / "slurm" / "train.sbatch"), str(out), "40", "0.25",
        cwd=REPO, env=payload,
    )  # fmt: skip
    logf = tmp_path / f"job-{job}.out"
    deadline = time.monotonic() + 90
    while not (out / "running").exists():
        assert time.monotonic() < deadline, f"payload never started\n{logf.read_text() if logf.exists() else ''}"
        assert cluster.job(job).get("JobState") in ("PENDING", "RUNNING", "CONFIGURING"), logf.read_text()
        time.sleep(0.3)
    time.sleep(1.5)
    # what --signal=B:USR1@<s> does before the time limit: USR1 to the batch shell only
    cluster.run("scancel", "--signal=USR1", "--batch", str(job))
    info = cluster.wait(job, 150, log=logf)
    log = logf.read_text()
    assert info["JobState"] == "COMPLETED", log
    assert info["Restarts"] == "1", log
    assert "got SIGUSR1, forwarding" in log and "requeueing" in log, log
    recs = _records(out)
    first = [r for r in recs if r["restart"] is None]
    second = [r for r in recs if r["restart"] == "1"]
    assert len(first) == 2 and len(second) == 2, recs
    saved = second[0]["start"]
    assert 0 < saved < 40, recs  # resumed mid-run from the checkpoint, not from 0
    assert all(r["start"] == saved for r in second)
    assert f"checkpointed at step {saved}" in log
    assert json.loads((out / "done.json").read_text())["step"] == 40


def test_submitit_task_interrupt_requeues_and_resumes(cluster: LocalCluster, payload, tmp_path: Path, monkeypatch):
    """slurm.submit.TrainTask around the payload: _interrupt() -> checkpoint -> submitit requeue -> finish."""
    from slurm.submit import SubmitConfig, TrainTask, make_executor
    from train.errors import EXIT_PREEMPTED

    for key, value in {**payload, "SLURM_CONF": cluster.env["SLURM_CONF"],
                       "SYNSHOT_PREEMPT_EXIT_CODE": str(EXIT_PREEMPTED)}.items():
        monkeypatch.setenv(key, value)
    out = tmp_path / "out"
    cfg = SubmitConfig(config="unused", nodes=2, gpus_per_node=1, cpus_per_task=1, time_min=5,
                       signal_delay_s=30, folder=str(tmp_path / "sub" / "%j"))
    job = make_executor(cfg).submit(TrainTask([str(out), "40", "0.25"], cfg.python, str(REPO), "slurm_payload"))
    jid = int(job.job_id)
    deadline = time.monotonic() + 90
    while not (out / "running").exists():
        assert time.monotonic() < deadline, "payload never started"
        time.sleep(0.3)
    time.sleep(1.5)
    job._interrupt()  # SIGTERM then USR2 to the tasks (submitit's preemption)
    info = cluster.wait(jid, 150)
    text = "".join(p.read_text() for p in sorted((tmp_path / "sub").rglob("*_log.*")))
    assert info["JobState"] == "COMPLETED", text
    assert info["Restarts"] == "1", text
    results = job.results()
    assert [r["exit_code"] for r in results] == [0, 0] and results[0]["restarts"] == 1, text
    assert sacct_state(job) == "COMPLETED"  # submitit's view, through slurmdbd
    recs = _records(out)
    second = [r for r in recs if r["restart"] == "1"]
    assert len(second) == 2 and 0 < second[0]["start"] < 40, recs
    assert all(r["launcher"] == "torchrun" and r["master"] == "n1" for r in recs), recs  # RANK/WORLD_SIZE from JobEnvironment
    assert "Requeued job" in text, text


def test_scancel_checkpoints_but_does_not_requeue(cluster: LocalCluster, payload, tmp_path: Path):
    """SIGTERM (scancel) means stop: the payload still checkpoints, the batch shell must not requeue."""
    out = tmp_path / "out"
    job = cluster.sbatch(
        "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=1", "--time=15",
        f"--output={tmp_path}/job-%j.out",
        str(REPO / "slurm" / "train.sbatch"), str(out), "200", "0.25",
        cwd=REPO, env=payload,
    )  # fmt: skip
    logf = tmp_path / f"job-{job}.out"
    deadline = time.monotonic() + 90
    while not (out / "running").exists():
        assert time.monotonic() < deadline, f"payload never started\n{logf.read_text() if logf.exists() else ''}"
        time.sleep(0.3)
    cluster.run("scancel", str(job))
    info = cluster.wait(job, 60, log=logf)
    time.sleep(1)  # let the batch shell finish its last log line
    log = logf.read_text()
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", log
    assert (out / "ckpt.json").exists(), log  # the tasks got SIGTERM and checkpointed within KillWait
    assert "not requeueing from here" in log, log
    assert not (out / "done.json").exists()
