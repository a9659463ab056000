"""slurm.cluster.local without a cluster: ports held by other processes, and the cleanup after a test run.

A cluster left running by a deleted checkout keeps its ports; the next checkout's up.sh then only
said "slurmd n1 did not stay up". Now the holder is named (port, pid, command, fix), an orphaned
SLURM daemon (its cluster folder is gone) is stopped, and a test run stops the cluster it
started. Stand-in listeners replace the daemons: no root, no SLURM, a few seconds.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from slurm.cluster import local
from slurm.cluster.local import ClusterError, check_ports, cluster_ports, cluster_lease

LISTENER = textwrap.dedent(
    """
    import socket, sys, time
    s = socket.socket(); s.bind(("127.0.0.1", 0)); s.listen()
    print(s.getsockname()[1], flush=True)
    time.sleep(120)
    """
)


@pytest.fixture
def listen(tmp_path):
    """Start a listener (optionally as an executable named like a SLURM daemon); yield (proc, port)."""
    procs = []

    def start(name: str = "python", env: dict[str, str] | None = None) -> tuple[subprocess.Popen, int]:
        exe = Path(sys.executable)
        if name != "python":  # the kernel names a process (comm) after the file it exec'd
            exe = tmp_path / "bin" / name
            exe.parent.mkdir(exist_ok=True)
            exe.symlink_to(Path(sys.executable).resolve())
        proc = subprocess.Popen([str(exe), "-c", LISTENER, "listen_forever"], stdout=subprocess.PIPE, text=True,
                                env={**os.environ, **(env or {})})
        procs.append(proc)
        return proc, int(proc.stdout.readline())

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_port_held_by_another_process_names_port_pid_command_and_fix(tmp_path, listen):
    proc, port = listen()
    with pytest.raises(ClusterError) as err:
        check_ports(tmp_path, {port: "slurmd n1"})
    msg = str(err.value)
    assert f"port {port} (for slurmd n1) is held by pid {proc.pid}" in msg, msg
    assert "listen_forever" in msg and f"kill {proc.pid}" in msg and "SYNSHOT_SLURM_PORT" in msg, msg
    assert proc.poll() is None  # only reported: it is not ours to stop


def test_own_daemon_on_the_port_is_no_conflict(tmp_path, listen):
    proc, port = listen()
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "slurmd-n1.pid").write_text(f"{proc.pid}\n")
    check_ports(tmp_path, {port: "slurmd n1"})  # up.sh keeps its own running daemons


def test_slurm_daemon_of_another_existing_cluster_points_to_its_down_sh(tmp_path, listen):
    other = tmp_path / "other-checkout" / ".cache" / "slurm"
    (other / "etc").mkdir(parents=True)
    proc, port = listen("slurmd", {"SLURM_CONF": str(other / "etc" / "slurm.conf")})
    with pytest.raises(ClusterError) as err:
        check_ports(tmp_path, {port: "slurmd n1"})
    msg = str(err.value)
    assert f"pid {proc.pid}" in msg and f"SYNSHOT_SLURM_DIR={other} bash slurm/cluster/down.sh" in msg, msg
    assert proc.poll() is None


def test_slurm_daemon_of_a_deleted_cluster_folder_is_stopped(tmp_path, listen, capfd):
    gone = tmp_path / "deleted-checkout" / ".cache" / "slurm"
    proc, port = listen("slurmd", {"SLURM_CONF": str(gone / "etc" / "slurm.conf")})
    check_ports(tmp_path, {port: "slurmd n1"})
    assert proc.wait(timeout=20) != 0
    assert f"stopping pid {proc.pid}" in capfd.readouterr().err


def test_cluster_ports_follow_up_sh_and_reject_a_bad_port(monkeypatch):
    monkeypatch.delenv("SYNSHOT_SLURM_DBD", raising=False)
    monkeypatch.setenv("SYNSHOT_SLURM_PORT", "6917")
    assert cluster_ports(2) == {6917: "slurmctld", 6919: "slurmdbd", 17101: "slurmd n1", 17102: "slurmd n2"}
    monkeypatch.setenv("SYNSHOT_SLURM_PORT", "68l7")
    with pytest.raises(ClusterError, match="SYNSHOT_SLURM_PORT='68l7': must be a port number"):
        cluster_ports(2)


@pytest.fixture
def fake_cluster(monkeypatch, tmp_path):
    """cluster_lease with up/down replaced: records whether the lease stopped the cluster."""
    calls = {"down": 0, "running": False, "fail": False}

    def up(state_dir, nodes, **kw):
        if calls["fail"]:
            raise ClusterError("slurm/cluster/up.sh failed")
        return "cluster"

    monkeypatch.setattr(local, "_preflight", lambda: None)
    monkeypatch.setattr(local, "cluster_up", up)
    monkeypatch.setattr(local, "cluster_down", lambda state_dir: calls.__setitem__("down", calls["down"] + 1))
    monkeypatch.setattr(local, "cluster_running", lambda state_dir: calls["running"])
    return calls


def test_lease_stops_the_cluster_it_started(tmp_path, fake_cluster):
    with cluster_lease(state_dir=tmp_path) as cluster:
        assert cluster == "cluster" and fake_cluster["down"] == 0
    assert fake_cluster["down"] == 1


def test_lease_leaves_a_cluster_that_ran_before(tmp_path, fake_cluster):
    fake_cluster["running"] = True
    with cluster_lease(state_dir=tmp_path):
        pass
    assert fake_cluster["down"] == 0


def test_lease_leaves_a_cluster_another_test_run_uses(tmp_path, fake_cluster):
    (tmp_path / "run").mkdir()
    with open(tmp_path / "run" / "users.lock", "a") as other:  # a second test run, still running
        fcntl.flock(other, fcntl.LOCK_SH)
        with cluster_lease(state_dir=tmp_path):
            pass
    assert fake_cluster["down"] == 0


def test_lease_stops_a_half_started_cluster(tmp_path, fake_cluster):
    fake_cluster["fail"] = True
    with pytest.raises(ClusterError, match="up.sh failed"):
        with cluster_lease(state_dir=tmp_path):
            pass
    assert fake_cluster["down"] == 1
