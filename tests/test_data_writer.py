"""Shard writer: atomic publication, skip of complete shards, disjoint array tasks, manifests."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from test_data_helpers import encoded

from synshot.data.synthesize import SPLITS, DatasetPlan, SynthConfig
from synshot.data.writer import (
    ManifestError,
    build_manifest,
    completed_shards,
    read_manifest,
    shard_is_complete,
    write_shard,
)


def test_failed_write_publishes_nothing(tmp_path):
    root = str(tmp_path)

    def samples():
        yield encoded(0, 0)
        yield encoded(1, 0)
        raise RuntimeError("renderer crashed")

    with pytest.raises(RuntimeError, match="renderer crashed"):
        write_shard(root, "train", 0, samples())
    assert os.listdir(root) == []  # no tar, no sidecar, no temporary file
    assert not shard_is_complete(root, "train", 0)
    assert build_manifest(root, "train", {}, 1)["shards"] == []


def test_killed_writer_leaves_no_visible_shard(tmp_path):
    """SIGKILL mid-shard (no cleanup code runs): the shard name never appears; a re-run completes it."""
    root = str(tmp_path)
    script = textwrap.dedent(f"""
        import sys, time
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_data_helpers import encoded
        from synshot.data.writer import write_shard
        def slow():
            for i in range(1000):
                yield encoded(i, 0)
                print("wrote", i, flush=True)
                time.sleep(0.02)
        write_shard({root!r}, "train", 0, slow())
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONPATH": os.getcwd()})
    for _ in range(5):  # a few samples into the shard
        assert proc.stdout.readline().startswith("wrote")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    names = os.listdir(root)
    assert "train-000000.tar" not in names and "train-000000.tar.json" not in names
    assert all(n.startswith(".train-000000.tar.tmp-") for n in names)  # hidden partial file only
    assert completed_shards(root, "train") == {}
    record = write_shard(root, "train", 0, [encoded(0, 0), encoded(1, 0)])
    assert sorted(os.listdir(root)) == ["train-000000.tar", "train-000000.tar.json"]  # stale temp removed
    assert record["num_samples"] == 2 and shard_is_complete(root, "train", 0)


def test_same_samples_give_byte_identical_shards(tmp_path):
    a = write_shard(str(tmp_path / "a"), "val", 3, [encoded(5, 1), encoded(6, 2)])
    b = write_shard(str(tmp_path / "b"), "val", 3, [encoded(5, 1), encoded(6, 2)])
    assert a["sha256"] == b["sha256"] and a["name"] == "val-000003.tar"


def test_manifest_counts_and_errors(tmp_path):
    root = str(tmp_path)
    write_shard(root, "train", 0, [encoded(i, 0) for i in range(3)])
    write_shard(root, "train", 2, [encoded(i, 1) for i in range(2)])
    m = build_manifest(root, "train", {"seed": 1}, planned_shards=3)
    assert m["shards"] == [{"name": "train-000000.tar", "num_samples": 3}, {"name": "train-000002.tar", "num_samples": 2}]
    assert m["num_samples"] == 5 and not m["complete"]
    assert read_manifest(root, "train")["generator_config"] == {"seed": 1}
    path = tmp_path / "train.json"
    bad = json.loads(path.read_text())
    bad["schema_version"] = 99
    path.write_text(json.dumps(bad))
    with pytest.raises(ManifestError, match="schema_version 99"):
        read_manifest(root, "train")
    with pytest.raises(ManifestError, match=r"val\.json: manifest not found"):
        read_manifest(root, "val")


@pytest.mark.parametrize("num_tasks", [1, 3, 5])
def test_array_tasks_partition_the_plan(tmp_path, num_tasks):
    cfg = SynthConfig(num_identities=11, expressions_per_identity=3, samples_per_shard=4,
                      splits={"train": 0.6, "val": 0.2, "test": 0.2})
    plan = DatasetPlan(cfg)
    # splits are by identity: disjoint, covering all identities
    ids = [set(plan.identities[s]) for s in SPLITS]
    assert sum(map(len, ids)) == 11 and set().union(*ids) == set(range(11))
    assert all(not (a & b) for i, a in enumerate(ids) for b in ids[i + 1 :])
    # tasks get disjoint contiguous ranges that cover every shard exactly once
    per_task = [plan.task_shards(i, num_tasks) for i in range(num_tasks)]
    flat = [(j.split, j.index) for jobs in per_task for j in jobs]
    assert sorted(flat) == sorted((j.split, j.index) for j in plan.shards) and len(flat) == len(set(flat))
    # "render" each task's shards, as the array tasks would, and check the manifests add up
    root = str(tmp_path)
    for jobs in per_task:
        for job in jobs:
            write_shard(root, job.split, job.index, [encoded(i, e) for i, e in job.samples])
    for split in SPLITS:
        m = build_manifest(root, split, {}, len(plan.shards_of(split)))
        assert m["complete"] and m["num_samples"] == plan.num_samples(split) == 3 * len(plan.identities[split])
    assert DatasetPlan(cfg).shards == plan.shards  # the plan is a pure function of the config
    with pytest.raises(ValueError, match="--shard-index 3"):
        plan.task_shards(3, 3)


def test_inspect_flags_shards_from_two_configs(tmp_path):
    from synshot.data.validate import inspect_split

    root = str(tmp_path)
    write_shard(root, "train", 0, [encoded(0, 0)], fingerprint="aaaa")
    write_shard(root, "train", 1, [encoded(1, 0)], fingerprint="aaaa")
    build_manifest(root, "train", {}, 2)
    assert inspect_split(root, "train", verify_hash=True)["ok"]
    write_shard(root, "train", 1, [encoded(1, 0)], fingerprint="bbbb")
    report = inspect_split(root, "train", verify_hash=True)
    assert not report["ok"] and "2 different generator configs" in report["errors"][0]
    with pytest.raises(ManifestError, match="another generator config"):
        shard_is_complete(root, "train", 1, fingerprint="aaaa")
