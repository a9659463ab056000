"""Drive the local test cluster from Python: start it, submit, watch and inspect jobs.

Why: the SLURM tests (and anyone scripting the local cluster) need the same few operations with
hard timeouts everywhere -- a job whose request does not fit the cluster pends forever, and
``sbatch --wait`` would hang with it.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
FINAL_STATES = {"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE"}


class ClusterError(RuntimeError):
    """The local cluster could not be started or a job did not behave (message says where to look)."""


@dataclass
class LocalCluster:
    """A running local cluster: ``env`` holds SLURM_CONF for every client command."""

    state_dir: Path
    nodes: int
    env: dict[str, str] = field(repr=False)

    def run(self, *cmd: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(cmd), env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise ClusterError(f"{' '.join(cmd)} -> rc={proc.returncode}: {proc.stderr.strip() or proc.stdout.strip()}")
        return proc

    def sbatch(self, *args: str, cwd: Path, env: dict[str, str] | None = None) -> int:
        """Submit and return the job id (``sbatch --parsable``)."""
        full_env = {**self.env, **(env or {})}
        proc = subprocess.run(
            ["sbatch", "--parsable", *args], env=full_env, cwd=cwd, capture_output=True, text=True, timeout=30
        )
        if proc.returncode != 0:
            raise ClusterError(f"sbatch {' '.join(args)} failed (rc={proc.returncode}): {proc.stderr.strip()}")
        return int(proc.stdout.strip().split(";")[0])

    def job(self, job_id: int) -> dict[str, str]:
        """``scontrol show job`` as a dict (JobState, Restarts, ExitCode, ...); {} once it is gone."""
        proc = self.run("scontrol", "-o", "show", "job", str(job_id), check=False)
        if proc.returncode != 0:
            return {}
        out: dict[str, str] = {}
        for token in proc.stdout.split():
            if "=" in token:
                key, value = token.split("=", 1)
                out.setdefault(key, value)
        return out

    def wait(self, job_id: int, timeout: float, *, states: set[str] = FINAL_STATES, log: Path | None = None) -> dict:
        """Poll until the job reaches one of ``states``; on timeout cancel it and raise with the log tail."""
        deadline = time.monotonic() + timeout
        info: dict[str, str] = {}
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in states:
                return info
            time.sleep(0.5)
        self.run("scancel", str(job_id), check=False)
        tail = _tail(log) if log else ""
        raise ClusterError(
            f"job {job_id} not in {sorted(states)} after {timeout:.0f}s (last: {info.get('JobState')} "
            f"reason={info.get('Reason')}); cancelled it. Logs: {self.state_dir / 'log'}{tail}"
        )

    def cancel_all(self) -> None:
        ids = self.run("squeue", "-h", "-o", "%i", check=False).stdout.split()
        if ids:
            self.run("scancel", *ids, check=False)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return f"\n({path} not readable)"
    return f"\n--- last {lines} lines of {path} ---\n" + "\n".join(text[-lines:])


def cluster_up(state_dir: Path | None = None, nodes: int = 2, gpus: int = 4, cpus: int = 8, timeout: float = 300) -> LocalCluster:
    """Run ``up.sh`` (idempotent) and return a handle; raise :class:`ClusterError` with the reason."""
    if os.geteuid() != 0:
        raise ClusterError("the local SLURM cluster needs root (munged as the munge user, slurmd as root)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        raise ClusterError("slurmctld is not installed and apt-get is not available")
    if state_dir is None:  # SYNSHOT_SLURM_DIR lets several checkouts share one cluster (same ports)
        state_dir = os.environ.get("SYNSHOT_SLURM_DIR") or REPO / ".cache" / "slurm"
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    state_dir = state_dir.resolve()  # same canonical path as up.sh uses (pwd -P)
    env = dict(os.environ)
    env.update(
        SYNSHOT_SLURM_DIR=str(state_dir),
        SYNSHOT_SLURM_NODES=str(nodes),
        SYNSHOT_SLURM_GPUS=str(gpus),
        SYNSHOT_SLURM_CPUS=str(cpus),
    )
    try:
        proc = subprocess.run(
            ["bash", str(HERE / "up.sh")], env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise ClusterError(f"slurm/cluster/up.sh did not finish in {timeout:.0f}s: {exc.stderr}") from None
    if proc.returncode != 0:
        raise ClusterError(f"slurm/cluster/up.sh failed (rc={proc.returncode}): {proc.stderr.strip()}")
    env["SLURM_CONF"] = str(state_dir / "etc" / "slurm.conf")
    return LocalCluster(state_dir=state_dir, nodes=nodes, env=env)


def sacct_state(job, timeout: float = 60) -> str:
    """A submitit job's state from sacct; accounting lags scontrol by a few seconds under load."""
    deadline = time.monotonic() + timeout
    pending = ("RUNNING", "PENDING", "REQUEUED", "UNKNOWN")
    while (state := job.get_info(mode="force").get("State", "UNKNOWN")) in pending and time.monotonic() < deadline:
        time.sleep(1)
    return state
