"""2-process DeepSpeed training on CPU (torchrun, gloo) for ZeRO 0, 1 and 2 vs one process.

Same seed, same global batch (2 x 1 sample vs 1 x 2 samples). The three 2-process runs see exactly
the same data, so their losses must agree to float rounding; the 1-process run sees other samples
of the same dataset (the loader splits the stream by rank), so it must agree within a loose
tolerance. The 2-process runs also produce identical weights on both ranks (checked via export).
"""

from __future__ import annotations

import pytest
from test_train_helpers import CONFIG, MICRO, run_train, tail, train_dataset  # noqa: F401

from train.errors import EXIT_OK

STEPS = 5
pytestmark = pytest.mark.slow


def _losses(run_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    return [e.value for e in acc.Scalars("loss/total")]


def _run(dataset, out, name, nproc, zero, batch):
    args = ["--config", CONFIG, *MICRO, f"data.url={dataset}", f"out_dir={out}", f"name={name}",
            f"max_steps={STEPS}", f"distributed.zero_stage={zero}", f"data.batch_size={batch}",
            "logging.every_n_steps=1", "logging.val_samples=0", f"checkpoint.every_n_steps={STEPS}"]
    res = run_train(args, nproc=nproc)
    assert res.returncode == EXIT_OK, tail(res.stdout)
    if nproc > 1:
        assert f"world {nproc}" in res.stdout and "(gloo)" in res.stdout
        _check_telemetry(out / name, nproc)
    return _losses(out / name)


def _check_telemetry(run_dir, nproc):
    """The step-time split of a real multi-process run: rasteriser forward and collectives are measured."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tb"), size_guidance={"scalars": 0}).Reload()
    last = {tag: acc.Scalars(tag)[-1].value for tag in acc.Tags()["scalars"]}
    assert 0 < last["time/render_forward_s"] < last["time/forward_s"], last
    assert last["time/comm_s"] > 0 and last["time/backward_s"] > 0 and last["time/optimizer_s"] > 0, last
    rates = [last[f"perf/images_per_s_rank/{r}"] for r in range(nproc)]
    assert all(r > 0 for r in rates) and sum(rates) == pytest.approx(last["perf/images_per_s_total"], rel=1e-6)


def test_two_processes_zero_0_1_2_match_one_process(train_dataset, tmp_path):
    one = _run(train_dataset, tmp_path, "one", 1, 1, 2)
    two = {z: _run(train_dataset, tmp_path, f"two_z{z}", 2, z, 1) for z in (0, 1, 2)}
    for z in (1, 2):
        assert two[z] == pytest.approx(two[0], rel=1e-4), (z, two[z], two[0])
    assert one[0] == pytest.approx(two[0][0], rel=0.1), (one, two[0])  # same weights, other samples
    mean_one, mean_two = sum(one[-3:]) / 3, sum(two[0][-3:]) / 3
    assert mean_one == pytest.approx(mean_two, rel=0.1), (one, two[0])
    assert len(one) == len(two[0]) == STEPS


def test_two_processes_signal_to_one_rank_then_resume_is_bit_identical(train_dataset, tmp_path):
    """SIGUSR1 to ONE worker: the stop flag is all-reduced, both ranks save the same step and exit 75."""
    import subprocess
    import time

    import psutil
    import torch
    from safetensors.torch import load_file
    from test_train_helpers import clean_env, train_cmd

    def args(name):
        return ["--config", CONFIG, *MICRO, f"data.url={train_dataset}", f"out_dir={tmp_path}", f"name={name}",
                "max_steps=6", "data.batch_size=1", "logging.every_n_steps=1", "logging.val_samples=0",
                "checkpoint.every_n_steps=100"]

    assert run_train(args("full"), nproc=2).returncode == EXIT_OK
    proc = subprocess.Popen(train_cmd(args("part"), nproc=2), cwd=tmp_path, env=clean_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    lines, sent = [], False
    try:
        for line in proc.stdout:
            lines.append(line)
            if not sent and "[train] step 2/6" in line:
                workers = [c for c in psutil.Process(proc.pid).children() if "train" in " ".join(c.cmdline())]
                assert len(workers) == 2, workers
                workers[-1].send_signal(10)  # SIGUSR1 to one rank only
                sent = True
        proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
    out = "".join(lines)
    assert sent and "stopped by signal" in out and "exitcode  : 75" in out, tail(out)
    ck = tmp_path / "part" / "checkpoints"
    stopped = int((ck / "latest").read_text().split("_")[1])
    assert 2 <= stopped < 6
    res = run_train(args("part"), nproc=2)
    assert res.returncode == EXIT_OK and f"at step {stopped}" in res.stdout, tail(res.stdout)
    weights = []
    for name in ("full", "part"):
        r = run_train(["--ckpt", str(tmp_path / name), "--out", str(tmp_path / f"{name}.st")], module="train.export")
        assert r.returncode == EXIT_OK, tail(r.stdout)
        weights.append(load_file(str(tmp_path / f"{name}.st")))
    a, b = weights
    assert all(torch.equal(a[k], b[k]) for k in a), "2-rank interrupted+resumed run differs from the uninterrupted one"
