"""Telemetry read back from the TensorBoard event files: step-time split, per-rank images/s, peak memory,
loader queue depth, and the on-demand profiler trace (in-process, world size 1, small regression task)."""

from __future__ import annotations

import json
import time

import pytest
import torch
from test_train_machinery import ListLoader, RegressionTask, Regressor

from train.checkpoint import CheckpointManager
from train.config import DistributedConfig, OptimConfig, ProfileConfig
from train.distributed import setup_distributed
from train.engine import build_engine
from train.loop import LoopSettings, Trainer
from train.preempt import StopRequest
from train.state import seed_everything
from train.tb import TBLogger
from train.telemetry import parse_steps


def _scalars(tb_dir):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tb_dir), size_guidance={"scalars": 0}).Reload()
    return {tag: [(e.step, e.value) for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


class QueueLoader(ListLoader):
    def queue_depth(self):
        return 3


def test_step_split_memory_queue_and_profiler_trace_in_tensorboard(tmp_path):
    env = setup_distributed()
    seed_everything(0, 0)
    engine, _ = build_engine(Regressor(), OptimConfig(lr=1e-2, warmup_steps=2), DistributedConfig(zero_stage=1),
                             env, 4, 6)
    lines: list[str] = []
    tb = TBLogger(tmp_path / "tb", enabled=True)
    trainer = Trainer(engine=engine, task=RegressionTask(), loader=QueueLoader(),
                      settings=LoopSettings(max_steps=6, log_every=2, ckpt_every=100, profile_steps=(3, 4)),
                      device="cpu", rank=0, world_size=1, ckpt=CheckpointManager(tmp_path / "ck", 0, 1, 1), tb=tb,
                      stop=StopRequest(signals=()), meta={}, log=lines.append)
    assert trainer.run() == 0
    tb.close()
    sc = _scalars(tmp_path / "tb")
    for phase in ("data_wait", "forward", "render_forward", "backward", "optimizer", "comm"):
        assert [s for s, _ in sc[f"time/{phase}_s"]] == [1, 2, 4, 6], phase
    for phase in ("forward", "backward", "optimizer"):
        assert all(v > 0 for _, v in sc[f"time/{phase}_s"]), (phase, sc[f"time/{phase}_s"])
    # the phases are parts of the step
    for (_, step_s), *parts in zip(sc["perf/step_s"], *(sc[f"time/{p}_s"] for p in
                                                        ("data_wait", "forward", "backward", "optimizer"))):
        assert sum(v for _, v in parts) <= step_s * 1.05 + 1e-4
    assert all(v == 3 for _, v in sc["loader/queue_depth"])
    assert sc["perf/images_per_s_rank/0"][-1][1] == pytest.approx(sc["perf/images_per_s_total"][-1][1])
    assert sc["mem/cpu_peak_rss_mb"][-1][1] > 10
    step_lines = [m for m in lines if m.startswith("[train] step 6/6")]
    assert step_lines and "img/s" in step_lines[0] and " fwd " in step_lines[0] and " comm " in step_lines[0]
    # profiler: one trace of steps 3-4 with the phase ranges, where TensorBoard's profiler plugin looks
    traces = list((tmp_path / "tb" / "profile").glob("rank0*.pt.trace.json"))
    assert len(traces) == 1, traces
    names = {e.get("name") for e in json.loads(traces[0].read_text())["traceEvents"]}
    assert {"synshot/forward", "synshot/backward", "synshot/optimizer", "synshot/data_wait"} <= names
    assert sum(1 for n in names if n == "synshot/forward") == 1
    assert any("profiler trace written" in m for m in lines)
    # ... and TensorBoard's PyTorch Profiler plugin parses it into its views
    from torch_tb_profiler.profiler.data import RunProfileData
    from torch_tb_profiler.profiler.run_generator import RunGenerator

    data = RunProfileData.parse("rank0", None, str(traces[0]), str(tmp_path / "cache"))
    profile = RunGenerator("rank0", None, data).generate_run_profile()
    assert {v.display_name for v in profile.views} >= {"Overview", "Operator", "Trace"}, profile.views


def test_parse_steps_and_config():
    assert parse_steps("20-24") == (20, 24) and parse_steps("7") == (7, 7) and parse_steps(None) is None
    assert ProfileConfig(steps="3-5").window() == (3, 5)
    with pytest.raises(ValueError):
        parse_steps("5-3")
    with pytest.raises(ValueError):
        ProfileConfig(steps="a-b")


def test_loader_queue_depth_counts_ready_batches(train_dataset):
    from synshot.data import make_loader
    from synshot.data.loader import LoaderConfig

    loader = make_loader(LoaderConfig(url=str(train_dataset), batch_size=1, num_workers=1, prefetch_factor=2,
                                      views_per_sample=2, shuffle_buffer=0))
    assert loader.queue_depth() == 0  # nothing started yet
    it = iter(loader)
    next(it)
    deadline = time.monotonic() + 60
    while loader.queue_depth() < 1 and time.monotonic() < deadline:
        time.sleep(0.1)
    assert 1 <= loader.queue_depth() <= 2  # prefetch_factor bounds what a worker may hold ready


from test_train_helpers import train_dataset  # noqa: E402,F401


def test_telemetry_and_memory_switches_may_change_on_resume():
    from train.resume import classify_changes

    saved = {"profile": {"steps": None}, "distributed": {"comm_timing": True, "activation_checkpointing": False}}
    new = {"profile": {"steps": "5-6"}, "distributed": {"comm_timing": False, "activation_checkpointing": True}}
    _, operational, refused = classify_changes(saved, new)
    assert not refused and len(operational) == 3
    _, operational, refused = classify_changes({"distributed": {}}, new)  # a checkpoint from before the switches
    assert not refused
