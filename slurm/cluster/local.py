"""Drive the local test cluster from Python: start it, submit, watch and inspect jobs.

Why: the SLURM tests (and anyone scripting the local cluster) need the same few operations with
hard timeouts everywhere -- a job whose request does not fit the cluster pends forever, and
``sbatch --wait`` would hang with it.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import signal
import subprocess
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
SLURM_DAEMONS = ("slurmctld", "slurmd", "slurmdbd")
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


def _preflight() -> None:
    """Refuse early (before creating anything) where up.sh cannot work."""
    if os.geteuid() != 0:
        raise ClusterError("the local SLURM cluster needs root (munged as the munge user, slurmd as root)")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        raise ClusterError("slurmctld is not installed and apt-get is not available")


def _state_dir(state_dir: Path | str | None) -> Path:
    """The cluster folder, created and canonical (the same path up.sh derives with ``pwd -P``)."""
    if state_dir is None:  # SYNSHOT_SLURM_DIR lets several checkouts share one cluster (same ports)
        state_dir = os.environ.get("SYNSHOT_SLURM_DIR") or REPO / ".cache" / "slurm"
    state_dir = Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    return state_dir.resolve()


def cluster_up(state_dir: Path | None = None, nodes: int = 2, gpus: int = 4, cpus: int = 8, timeout: float = 300) -> LocalCluster:
    """Run ``up.sh`` (idempotent) and return a handle; raise :class:`ClusterError` with the reason.

    Before that, the daemons' ports are checked (:func:`check_ports`): up.sh alone would only say
    "slurmd n1 did not stay up", with "Address already in use" deep in a log.
    """
    _preflight()
    state_dir = _state_dir(state_dir)
    check_ports(state_dir, cluster_ports(nodes))
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


def cluster_down(state_dir: Path | None = None, timeout: float = 120) -> None:
    """Run ``down.sh`` (cancels the jobs, stops the daemons, keeps the state)."""
    env = {**os.environ, "SYNSHOT_SLURM_DIR": str(_state_dir(state_dir))}
    try:
        proc = subprocess.run(["bash", str(HERE / "down.sh")], env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise ClusterError(f"slurm/cluster/down.sh did not finish in {timeout:.0f}s") from None
    if proc.returncode != 0:
        raise ClusterError(f"slurm/cluster/down.sh failed (rc={proc.returncode}): {proc.stderr.strip()}")


def cluster_running(state_dir: Path | None = None) -> bool:
    """Whether this folder's slurmctld runs (then up.sh reuses the cluster instead of starting one)."""
    return _pidfile_pid(_state_dir(state_dir) / "run" / "slurmctld.pid", "slurmctld") is not None


@contextmanager
def cluster_lease(nodes: int = 2, state_dir: Path | None = None, **kw) -> Iterator[LocalCluster]:
    """The cluster for one test run: started if needed, stopped again at the end.

    Why: a cluster left running outlives its checkout; once that is deleted nothing stops its
    daemons, and they hold the ports every other checkout's cluster needs. Left running: a cluster
    that already ran before (someone's own, or one shared through SYNSHOT_SLURM_DIR), and one that
    another test run still uses (each holds a shared lock on ``run/users.lock``). A
    cluster that failed half-way through starting is stopped too.
    """
    _preflight()
    state_dir = _state_dir(state_dir)
    (state_dir / "run").mkdir(parents=True, exist_ok=True)
    with open(state_dir / "run" / "users.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_SH)
        reused = cluster_running(state_dir)
        try:
            yield cluster_up(state_dir, nodes, **kw)
        except BaseException:
            _release(lock, state_dir, reused, quiet=True)
            raise
        _release(lock, state_dir, reused, quiet=False)


def _release(lock, state_dir: Path, reused: bool, quiet: bool) -> None:
    """Stop the cluster unless it was reused or another test run holds the lock too."""
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"local SLURM cluster in {state_dir} left running: another test run uses it", file=sys.stderr)
        return
    if reused:
        print(f"local SLURM cluster in {state_dir} left running: it ran before this test run", file=sys.stderr)
        return
    try:
        cluster_down(state_dir)
    except (ClusterError, OSError) as exc:
        if not quiet:
            raise
        print(f"could not stop the local SLURM cluster in {state_dir}: {exc}", file=sys.stderr)


# ---------------------------------------------------------------- ports held by other processes

def cluster_ports(nodes: int) -> dict[int, str]:
    """Port -> daemon for the ports up.sh configures (same arithmetic as up.sh: keep them in step)."""
    raw = os.environ.get("SYNSHOT_SLURM_PORT", "6817")
    if not raw.isdigit() or not 1024 <= int(raw) <= 65000:
        raise ClusterError(f"SYNSHOT_SLURM_PORT={raw!r}: must be a port number in 1024..65000 (default 6817)")
    ctld = int(raw)
    ports = {ctld: "slurmctld"}
    if os.environ.get("SYNSHOT_SLURM_DBD", "auto") != "0":
        ports[ctld + 2] = "slurmdbd"
    for i in range(1, nodes + 1):
        ports[17000 + ctld - 6817 + i] = f"slurmd n{i}"
    return ports


def check_ports(state_dir: Path, ports: dict[int, str], stop_orphans: bool = True) -> None:
    """Raise :class:`ClusterError` naming each port in ``ports`` that a process other than this
    cluster's own daemons listens on: the port, the daemon that needs it, the holder's pid and
    command line, and how to free it.

    A SLURM daemon whose cluster folder no longer exists (its checkout was deleted, so no down.sh
    can reach it) is stopped instead when ``stop_orphans``: nothing can use or stop it any more.
    Anything else is only reported: it may be someone's running cluster.
    """
    own = {pid for f in (state_dir / "run").glob("*.pid") if (pid := _pidfile_pid(f)) is not None}
    listening = _listening_sockets()
    problems = []
    for port, daemon in ports.items():
        inode = listening.get(port)
        if inode is None:
            continue
        pid = _socket_owner(inode)
        if pid in own:
            continue
        if pid is None:
            problems.append(f"port {port} (for {daemon}) is held by a process this user cannot see; "
                            f"find it with `ss -ltnp 'sport = :{port}'` as root")
            continue
        cmd = _cmdline(pid)
        where = _slurm_conf(pid)
        orphan = _orphan_cluster(where)
        if orphan is not None and stop_orphans:
            print(f"stopping pid {pid} ({cmd}) on port {port}: a SLURM daemon of {orphan}, which no longer exists",
                  file=sys.stderr)
            _terminate(pid)
            continue
        fix = (f"stop that cluster with `SYNSHOT_SLURM_DIR={Path(where).parent.parent} bash slurm/cluster/down.sh` "
               f"(or down.sh from its checkout), or `kill {pid}`" if where else f"stop it: `kill {pid}`")
        problems.append(f"port {port} (for {daemon}) is held by pid {pid}: {cmd}; {fix}")
    if problems:
        raise ClusterError(
            "the local cluster cannot start, its ports are taken:\n  " + "\n  ".join(problems)
            + "\n(or use other ports: SYNSHOT_SLURM_PORT=<n> moves slurmctld to n, slurmdbd to n+2, slurmd to 17001+n-6817)"
        )


def _pidfile_pid(pidfile: Path, comm: str | None = None) -> int | None:
    """The pid in ``pidfile`` if that process runs (not a zombie: see lib.sh) and, if given, is ``comm``."""
    try:
        pid = int(pidfile.read_text().strip())
        actual = Path(f"/proc/{pid}/comm").read_text().strip()
    except (OSError, ValueError):
        return None
    if _proc_state(pid) in (None, "Z", "X") or (comm is not None and actual != comm):
        return None
    return pid


def _proc_state(pid: int) -> str | None:
    """The one-letter state of ``pid`` from /proc/<pid>/stat (Z: zombie, X: dead), None when it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(") ", 1)[-1][:1]
    except OSError:
        return None


def _listening_sockets() -> dict[int, int]:
    """Listening TCP port -> socket inode, from /proc/net/tcp{,6} (no root and no ss needed)."""
    out: dict[int, int] = {}
    for name in ("tcp", "tcp6"):
        try:
            lines = Path("/proc/net", name).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A":  # 0A = LISTEN
                out.setdefault(int(fields[1].rsplit(":", 1)[1], 16), int(fields[9]))
    return out


def _socket_owner(inode: int) -> int | None:
    """The pid with socket ``inode`` open (scans /proc/*/fd: every process as root, else one's own)."""
    target = f"socket:[{inode}]"
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fds = os.listdir(proc / "fd")
        except OSError:
            continue
        for fd in fds:
            try:
                if os.readlink(proc / "fd" / fd) == target:
                    return int(proc.name)
            except OSError:
                continue
    return None


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return "?"


def _slurm_conf(pid: int) -> str | None:
    """SLURM_CONF of a SLURM daemon (up.sh starts them with it), else None."""
    try:
        if Path(f"/proc/{pid}/comm").read_text().strip() not in SLURM_DAEMONS:
            return None
        environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    except OSError:
        return None
    for item in environ:
        if item.startswith(b"SLURM_CONF="):
            return item.split(b"=", 1)[1].decode(errors="replace")
    return None


def _orphan_cluster(conf: str | None) -> Path | None:
    """The cluster folder of a SLURM daemon started with ``SLURM_CONF=conf`` (``<dir>/etc/slurm.conf``)
    when that folder is gone, else None."""
    if conf is None:
        return None
    lab = Path(conf).parent.parent
    return None if lab.exists() else lab


def _terminate(pid: int, timeout: float = 15) -> None:
    """SIGTERM, wait until it is gone (or a zombie), then SIGKILL: what lib.sh's stop_pidfile does."""
    for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, 5)):
        try:
            os.kill(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait
        while time.monotonic() < deadline:
            if _proc_state(pid) in (None, "Z", "X"):
                return
            time.sleep(0.1)


def sacct_state(job, timeout: float = 60) -> str:
    """A submitit job's state from sacct; accounting lags scontrol by a few seconds under load."""
    deadline = time.monotonic() + timeout
    pending = ("RUNNING", "PENDING", "REQUEUED", "UNKNOWN")
    while (state := job.get_info(mode="force").get("State", "UNKNOWN")) in pending and time.monotonic() < deadline:
        time.sleep(1)
    return state
