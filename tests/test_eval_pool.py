"""The evaluation's process pool: workers do not outlive a killed evaluation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux only")
def test_workers_die_with_a_killed_parent():
    code = ("import time\nfrom synshot.eval.pool import pool_map\n"
            "pool_map(time.sleep, [120, 120], workers=2, threads=1)\n")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})
    try:
        deadline = time.time() + 120
        workers: list[int] = []
        while time.time() < deadline:  # the spawn resource tracker is a child too: wait for 2 more
            workers = [p for p in _children(parent.pid) if "spawn_main" in Path(f"/proc/{p}/cmdline").read_text()]
            if len(workers) >= 2:
                break
            time.sleep(0.5)
        assert len(workers) >= 2, "the pool did not start its workers"
        time.sleep(3)  # past the initializer (where the death signal is armed)
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        deadline = time.time() + 30
        while time.time() < deadline and any(_alive(p) for p in workers):
            time.sleep(0.5)
        assert not any(_alive(p) for p in workers), "pool workers outlived the killed evaluation"
    finally:
        if parent.poll() is None:
            parent.kill()
