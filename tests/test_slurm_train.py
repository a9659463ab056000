"""The real trainer launched on the local SLURM cluster (2 emulated nodes, 1 CPU task each, gloo).

(a) ``sbatch slurm/train.sbatch`` trains the tiny config (few steps, tiny shards) to the end and
    writes TensorBoard events with the expected tags;
(b) a USR1 to the batch shell mid-run checkpoints, the job requeues (Restarts=1), resumes at the
    saved step and ends with the same exported weights as (a) (same seed, same world size);
(c) the submitit path: submit, ``job._interrupt()``, requeue, finish, same weights again.

Weights are compared exactly (max |diff| == 0): the runs are the same deterministic computation
on CPU (same seed, data order restored from the checkpoint, gloo sums two ranks in a fixed
order), so any difference is a resume bug, not noise.
(d) a 2-node job preempted, resized to 1 node while requeued, resumes elastically and finishes.
Under CI=true a cluster that cannot start fails these tests; elsewhere they are skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from slurm.cluster.local import REPO, LocalCluster, cluster_up, sacct_state

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.timeout(900)]

STEPS = 12
SEED = 3
JOB_TIMEOUT = 300  # s, per job, including a requeue; jobs are cancelled when it expires


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> Path:
    """Tiny schema-valid shards (train + val) at 32 px / 32 UV, and a folder for the runs."""
    sys.path.insert(0, str(Path(__file__).parent))
    from test_data_helpers import write_dataset

    root = tmp_path_factory.mktemp("slurm_train")
    write_dataset(str(root / "data"), "train", shards=2, per_shard=8, views=4, size=32, uv=32)
    write_dataset(str(root / "data"), "val", shards=1, per_shard=4, views=4, size=32, uv=32)
    return root


def overrides(work: Path, name: str) -> list[str]:
    return [
        f"name={name}", f"out_dir={work / 'runs'}", f"data.url={work / 'data'}", "data.image_size=32",
        "model.uv_size=32", f"max_steps={STEPS}", f"seed={SEED}", "optim.warmup_steps=2",
        "checkpoint.every_n_steps=2", "checkpoint.keep_last=3", "logging.every_n_steps=1",
        "logging.image_every_n_steps=6", "logging.val_every_n_steps=6", "logging.val_samples=2",
    ]  # fmt: skip


JOB_ENV = {"OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
# The emulated nodes share one host: on a GPU machine the fake GRES would hand both ranks the
# same real GPU 0 (NCCL refuses duplicate GPUs). There, each task runs the trainer with CUDA hidden.
CPU_TRAIN = "import os, runpy\nos.environ['CUDA_VISIBLE_DEVICES'] = ''\nrunpy.run_module('train', run_name='__main__')\n"


def _train_module(work: Path) -> str:
    import torch

    if not torch.cuda.is_available():
        return "train"
    (work / "pkg").mkdir(exist_ok=True)
    (work / "pkg" / "cpu_train.py").write_text(CPU_TRAIN)
    JOB_ENV["PYTHONPATH"] = f"{REPO}{os.pathsep}{work / 'pkg'}"
    return "cpu_train"


def sbatch_train(cluster: LocalCluster, work: Path, name: str) -> tuple[int, Path]:
    log = work / f"{name}.out"
    job = cluster.sbatch(
        "--nodes=2", "--ntasks-per-node=1", "--gpus-per-node=1", "--cpus-per-task=1", "--time=15",
        f"--output={log}", f"--job-name={name}",
        str(REPO / "slurm" / "train.sbatch"), "--config", "configs/train/tiny.yaml", *overrides(work, name),
        cwd=REPO, env={**JOB_ENV, "SYNSHOT_TRAIN_MODULE": _train_module(work)},
    )  # fmt: skip
    return job, log


def wait_for_checkpoint(cluster: LocalCluster, job: int, ckpt_dir: Path, log: Path, timeout: float) -> None:
    """Block until the run wrote its first periodic checkpoint (proof that it is mid-run)."""
    deadline = time.monotonic() + timeout
    while not (ckpt_dir / "latest").exists():
        state = cluster.job(job).get("JobState")
        if state not in ("PENDING", "RUNNING", "CONFIGURING") or time.monotonic() > deadline:
            cluster.run("scancel", str(job), check=False)
            pytest.fail(f"job {job} ({state}) wrote no checkpoint in {timeout:.0f}s:\n{_read(log)}")
        time.sleep(0.2)


def _read(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else f"({path} missing)"


def export(ckpt_dir: Path, out: Path) -> dict:
    """Consolidated weights through the trainer's exporter, read back without DeepSpeed."""
    proc = subprocess.run(
        [sys.executable, "-m", "train.export", "--ckpt", str(ckpt_dir), "--out", str(out)],
        cwd=REPO, env={**os.environ, **JOB_ENV}, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    from safetensors.torch import load_file

    return load_file(str(out))


def assert_same_weights(a: dict, b: dict) -> None:
    assert a.keys() == b.keys()
    worst = max(float((a[k].float() - b[k].float()).abs().max()) for k in a if a[k].numel())
    assert worst == 0.0, f"weights differ after resume: max |diff| = {worst}"


@pytest.fixture(scope="module")
def reference(cluster: LocalCluster, work: Path) -> dict:
    """The uninterrupted run (a); its exported weights are the reference for (b) and (c)."""
    t0 = time.monotonic()
    job, log = sbatch_train(cluster, work, "ref")
    info = cluster.wait(job, JOB_TIMEOUT, log=log)
    wall = time.monotonic() - t0
    out = {"job": job, "info": info, "log": log, "wall": wall, "run_dir": work / "runs" / "ref"}
    if info.get("JobState") == "COMPLETED":
        out["weights"] = export(out["run_dir"] / "checkpoints", work / "ref.safetensors")
    return out


def test_sbatch_trains_tiny_to_the_end_with_tensorboard(reference: dict):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    log = _read(reference["log"])
    assert reference["info"]["JobState"] == "COMPLETED", log
    assert reference["info"]["ExitCode"] == "0:0", log
    assert "launcher slurm | world 2" in log, log
    assert f"finished at step {STEPS}" in log, log
    ea = EventAccumulator(str(reference["run_dir"] / "tb"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    scalars = set(ea.Tags()["scalars"])
    expected = {"loss/total", "opt/lr", "perf/images_per_s_per_gpu", "perf/images_per_s_total",
                "perf/data_wait_fraction"}  # fmt: skip
    assert expected <= scalars, sorted(scalars)
    assert any(t.startswith("val/") for t in scalars), sorted(scalars)
    assert "images/train" in ea.Tags()["images"], ea.Tags()
    steps = [e.step for e in ea.Scalars("loss/total")]
    assert steps == list(range(1, STEPS + 1)), steps
    print(f"\n[measure] sbatch tiny {STEPS} steps, 2 nodes: {reference['wall']:.1f} s wall")


def test_sbatch_usr1_preemption_requeues_and_resumes_to_identical_weights(cluster, work, reference):
    assert "weights" in reference, f"the reference run failed:\n{_read(reference['log'])}"
    t0 = time.monotonic()
    job, log = sbatch_train(cluster, work, "pre")
    run_dir = work / "runs" / "pre"
    wait_for_checkpoint(cluster, job, run_dir / "checkpoints", log, JOB_TIMEOUT)
    # what the time limit does with --signal=B:USR1@<s>: USR1 to the batch shell only
    cluster.run("scancel", "--signal=USR1", "--batch", str(job))
    info = cluster.wait(job, JOB_TIMEOUT, log=log)
    wall = time.monotonic() - t0
    text = _read(log)
    assert info["JobState"] == "COMPLETED", text
    assert info["Restarts"] == "1", f"expected exactly one requeue:\n{text}"
    assert "got SIGUSR1, forwarding" in text and "checkpointed for preemption" in text, text
    stopped = [line for line in text.splitlines() if "stopped by signal at step" in line]
    resumed = [line for line in text.splitlines() if "resumed from" in line]
    assert len(stopped) == 1 and len(resumed) == 1, text
    saved = int(stopped[0].split("at step ")[1].split(";")[0])
    assert 0 < saved < STEPS, text
    assert resumed[0].rstrip().endswith(f"at step {saved}"), text
    assert f"finished at step {STEPS}" in text, text
    assert "restart=1] start" in text, text  # the second run saw SLURM_RESTART_COUNT=1
    assert_same_weights(reference["weights"], export(run_dir / "checkpoints", work / "pre.safetensors"))
    print(f"\n[measure] sbatch preempted at step {saved} + requeue + resume: {wall:.1f} s wall")


def test_submitit_interrupt_requeues_and_finishes(cluster, work, reference, monkeypatch):
    assert "weights" in reference, f"the reference run failed:\n{_read(reference['log'])}"
    from slurm.submit import SubmitConfig, submit

    monkeypatch.setenv("SLURM_CONF", cluster.env["SLURM_CONF"])  # submitit calls sbatch/sacct itself
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    cfg = SubmitConfig(
        config="configs/train/tiny.yaml", overrides=overrides(work, "sub"), nodes=2, gpus_per_node=1,
        cpus_per_task=1, time_min=15, signal_delay_s=60, folder=str(work / "submitit" / "%j"),
        python=sys.executable, module=_train_module(work),
    )  # fmt: skip
    monkeypatch.setenv("PYTHONPATH", JOB_ENV["PYTHONPATH"])
    t0 = time.monotonic()
    monkeypatch.chdir(REPO)
    job = submit(cfg)
    jid = int(job.job_id)
    log = Path(str(job.paths.stdout).replace("%t", "0"))
    wait_for_checkpoint(cluster, jid, work / "runs" / "sub" / "checkpoints", log, JOB_TIMEOUT)
    job._interrupt()  # SIGTERM + USR2, what submitit's tests use to simulate preemption
    info = cluster.wait(jid, JOB_TIMEOUT, log=log)
    wall = time.monotonic() - t0
    text = _read(log) + _read(Path(str(job.paths.stderr).replace("%t", "0")))
    assert info["JobState"] == "COMPLETED", text
    assert info["Restarts"] == "1", text
    results = job.results()  # one per task
    assert [r["exit_code"] for r in results] == [0, 0] and results[0]["restarts"] == 1, results
    assert sacct_state(job) == "COMPLETED"  # submitit's view, through slurmdbd
    assert "Requeued job" in text, text
    assert_same_weights(reference["weights"], export(work / "runs" / "sub" / "checkpoints", work / "sub.safetensors"))
    print(f"\n[measure] submitit interrupt + requeue + finish: {wall:.1f} s wall")


def test_two_node_job_preempted_then_finishes_on_one_node(cluster, work):
    """Elastic resume on the cluster: the 2-node job checkpoints on USR1 and requeues; while it waits in
    the queue it is resized to 1 node (what a scheduler does when only one node is free); the second run
    resumes the 2-rank checkpoint on 1 rank (universal checkpoint, re-split data) and finishes."""
    name = "elastic"
    job, log = sbatch_train(cluster, work, name)
    run_dir = work / "runs" / name
    wait_for_checkpoint(cluster, job, run_dir / "checkpoints", log, JOB_TIMEOUT)
    cluster.run("scancel", "--signal=USR1", "--batch", str(job))
    deadline = time.monotonic() + JOB_TIMEOUT
    while True:  # requeued: Restarts=1 and pending (held cred_expire+1 s before it may start again)
        info = cluster.job(job)
        if info.get("Restarts") == "1" and info.get("JobState") == "PENDING":
            break
        if info.get("JobState") in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT") or time.monotonic() > deadline:
            pytest.fail(f"job {job} was not requeued ({info.get('JobState')}):\n{_read(log)}")
        time.sleep(0.1)
    cluster.run("scontrol", "update", f"JobId={job}", "NumCPUs=1", "NumNodes=1-1", "NumTasks=1")
    info = cluster.wait(job, JOB_TIMEOUT, log=log)
    text = _read(log)
    assert info["JobState"] == "COMPLETED" and info["NumNodes"] == "1", (info, text)
    assert "launcher slurm | world 2" in text and "launcher slurm | world 1" in text, text
    assert "elastic resume: checkpoint of 2 ranks -> 1 ranks" in text, text
    assert f"finished at step {STEPS}" in text, text
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    steps = [e.step for e in acc.Scalars("loss/total")]
    assert steps[-1] == STEPS and all(e.value == e.value and e.value < 10 for e in acc.Scalars("loss/total")), steps
