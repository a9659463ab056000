"""2 processes (torchrun, gloo), grad_accum 2: a NaN micro-batch on ONE rank skips the whole optimizer
step on BOTH ranks (ZeRO 0, 1, 2), and rank 0 logs the keys of the non-finite samples of rank 1."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from test_train_helpers import REPO, clean_env, free_port, tail

pytestmark = pytest.mark.slow


def test_nonfinite_micro_batch_on_one_rank_skips_the_step_on_all(tmp_path):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", str(free_port()),
           str(REPO / "tests" / "dist_nonfinite_worker.py"), str(tmp_path)]
    res = subprocess.run(cmd, cwd=REPO / "tests", env=clean_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                         text=True, timeout=600)
    assert res.returncode == 0, tail(res.stdout)
    for rank in (0, 1):
        result = json.loads((tmp_path / f"rank{rank}.json").read_text())
        for zero, r in result["stages"].items():
            assert r["weights_equal"] and r["lr_equal"] and r["finite"], (rank, zero, r)
            assert r["nonfinite_total"] == 1 and r["loader_pos"] == 6, (rank, zero, r)
            if rank == 0:
                assert len(r["log"]) == 1, r["log"]
                assert "skipped on all ranks" in r["log"][0] and "rank 1: b3s0, b3s1" in r["log"][0], r["log"]
                assert "rank 0:" not in r["log"][0] and "16 samples of the step discarded" in r["log"][0], r["log"]
