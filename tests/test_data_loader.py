"""Streaming loader: batch contract, determinism, exact resume, node split, corrupt-data policy."""

import json
import logging
import os

import pytest
import torch
from test_data_helpers import encoded, write_dataset

from synshot.data.loader import CorruptDataError, DataSpecError, LoaderConfig, make_loader
from synshot.data.schema import SCHEMA_VERSION, SchemaVersionError
from synshot.data.writer import build_manifest, write_shard


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("ds"))
    keys = write_dataset(root, shards=4, per_shard=6)
    return root, keys


def _cfg(root, **kw):
    base = dict(url=root, batch_size=4, num_workers=0, views_per_sample=2, shuffle_buffer=5, seed=3)
    base.update(kw)
    return LoaderConfig(**base)


def _take(loader, n):
    it = iter(loader)
    return [next(it) for _ in range(n)]


def test_batch_contract(dataset):
    root, keys = dataset
    (batch,) = _take(make_loader(_cfg(root)), 1)
    f32 = torch.float32
    expect = {
        "tex": ((4, 3, 8, 8), f32), "verts": ((4, 3, 8, 8), f32), "exp": ((4, 3, 8, 8), f32),
        "rgb": ((4, 2, 3, 16, 16), f32), "mask": ((4, 2, 1, 16, 16), f32), "K": ((4, 2, 3, 3), f32),
        "w2c": ((4, 2, 4, 4), f32), "head_pose": ((4, 4, 4), f32), "expression_coeffs": ((4, 5), f32),
        "identity": ((4,), torch.int64), "expression": ((4,), torch.int64),
    }
    for name, (shape, dtype) in expect.items():
        assert tuple(batch[name].shape) == shape, name
        assert batch[name].dtype == dtype, name
    for name in ("tex", "rgb", "mask"):
        assert 0.0 <= batch[name].min() and batch[name].max() <= 1.0
    assert set(batch["mask"].unique().tolist()) <= {0.0, 1.0}
    assert len(batch["key"]) == 4 and all(k in keys for k in batch["key"])
    assert batch["identity"].tolist() == [int(k.split("_")[0]) for k in batch["key"]]
    # all views when views_per_sample is null
    (batch,) = _take(make_loader(_cfg(root, views_per_sample=None)), 1)
    assert batch["rgb"].shape[1] == 4


def _same(a, b):
    return a["key"] == b["key"] and all(torch.equal(a[k], b[k]) for k in ("rgb", "K", "w2c", "tex"))


def test_deterministic_for_a_seed(dataset):
    root, _ = dataset
    a = _take(make_loader(_cfg(root)), 8)
    b = _take(make_loader(_cfg(root)), 8)
    assert all(_same(x, y) for x, y in zip(a, b))
    c = _take(make_loader(_cfg(root, seed=4)), 8)
    assert [x["key"] for x in a] != [x["key"] for x in c]


@pytest.mark.parametrize("workers,resampled", [(0, True), (2, True), (2, False), (3, True)])
def test_resume_sees_the_same_batches(dataset, workers, resampled):
    root, _ = dataset
    cfg = _cfg(root, num_workers=workers, resampled=resampled)
    full = _take(make_loader(cfg), 13)  # 13 batches span epochs (24 samples / 4 per batch) and workers
    first = make_loader(cfg)
    it = iter(first)
    for i in range(5):
        assert _same(next(it), full[i])
    state = json.loads(json.dumps(first.state_dict()))  # must survive JSON
    del it
    resumed = make_loader(cfg)
    resumed.load_state_dict(state)
    rest = _take(resumed, 8)
    for i, batch in enumerate(rest):
        assert _same(batch, full[5 + i]), f"batch {5 + i} differs after resume"
    assert resumed.counters["batches"] == 13
    assert resumed.counters["samples"] >= 13 * 4


def test_state_from_other_config_is_rejected(dataset):
    root, _ = dataset
    loader = make_loader(_cfg(root))
    _take(loader, 1)
    other = make_loader(_cfg(root, seed=9))
    with pytest.raises(ValueError, match="seed: saved 3 now 9"):
        other.load_state_dict(loader.state_dict())
    with pytest.raises(ValueError, match="world_size"):
        make_loader(_cfg(root), rank=0, world_size=2).load_state_dict(loader.state_dict())


def _epoch_keys(root, rank, world, workers):
    cfg = _cfg(root, resampled=False, epochs=1, num_workers=workers, batch_size=5)
    return [k for b in make_loader(cfg, rank, world) for k in b["key"]]


def test_one_epoch_split_by_node_and_worker_is_disjoint_and_complete(dataset):
    root, keys = dataset
    r0, r1 = _epoch_keys(root, 0, 2, 2), _epoch_keys(root, 1, 2, 0)
    assert len(r0) == len(set(r0)) == 12 and len(r1) == len(set(r1)) == 12
    assert not set(r0) & set(r1)
    assert sorted(r0 + r1) == sorted(keys)
    assert sorted(_epoch_keys(root, 0, 1, 2)) == sorted(keys)
    with pytest.raises(Exception, match="cannot feed"):
        make_loader(_cfg(root, resampled=False, num_workers=3), 0, 2)


def test_memory_filesystem():
    root = "memory://loader-test/ds"
    keys = write_dataset(root, shards=2, per_shard=3)
    got = [k for b in make_loader(_cfg(root, resampled=False, epochs=1, batch_size=2)) for k in b["key"]]
    assert sorted(got) == sorted(keys)


def _corrupt_dataset(root, n_good=5, per_shard=6):
    """n_good valid shards + one truncated mid-member + one garbage shard (both listed in the manifest)."""
    write_dataset(root, shards=n_good + 2, per_shard=per_shard)
    trunc = os.path.join(root, f"train-{n_good:06d}.tar")
    data = open(trunc, "rb").read()
    open(trunc, "wb").write(data[: len(data) // 2 + 100])
    garbage = os.path.join(root, f"train-{n_good + 1:06d}.tar")
    open(garbage, "wb").write(os.urandom(3000))
    return trunc, garbage


def test_corrupt_and_truncated_shards_are_skipped_and_counted(tmp_path, caplog):
    root = str(tmp_path)
    trunc, garbage = _corrupt_dataset(root)
    cfg = _cfg(root, resampled=False, epochs=1, batch_size=4, max_corrupt_fraction=0.5, corrupt_min_events=5)
    loader = make_loader(cfg)
    with caplog.at_level(logging.WARNING, logger="synshot.data"):
        keys = [k for b in loader for k in b["key"]]
    c = loader.counters
    assert len(keys) == len(set(keys)) == c["samples"]
    assert 30 < c["samples"] < 42  # 5 good shards + the readable head of the truncated one
    assert c["shard_errors"] == 2 and c["skipped"] >= 2
    text = caplog.text
    assert "train-000006.tar" in text and "train-000005.tar" in text


def test_corrupt_fraction_threshold_raises_naming_the_shard(tmp_path):
    root = str(tmp_path)
    _corrupt_dataset(root, n_good=1, per_shard=4)
    cfg = _cfg(root, resampled=False, shuffle_shards=False, epochs=1, batch_size=2, max_corrupt_fraction=0.05, corrupt_min_events=3)
    with pytest.raises(CorruptDataError, match=r"max_corrupt_fraction=0.05.*train-00000[12]\.tar"):
        for _ in make_loader(cfg):
            pass
    # the same through worker processes
    cfg = cfg.model_copy(update={"num_workers": 1})
    with pytest.raises(Exception, match="max_corrupt_fraction"):
        for _ in make_loader(cfg):
            pass


def test_schema_mismatch_and_size_mismatch_are_errors(tmp_path):
    root = str(tmp_path)
    sample = encoded(0, 0)
    meta = json.loads(sample["meta.json"])
    meta["schema_version"] = SCHEMA_VERSION + 1
    sample["meta.json"] = json.dumps(meta).encode()
    write_shard(root, "train", 0, [sample, encoded(1, 0)])
    build_manifest(root, "train", {}, 1)
    with pytest.raises(SchemaVersionError, match="train-000000.tar"):
        _take(make_loader(_cfg(root, batch_size=1, shuffle_buffer=0, max_corrupt_fraction=1.0)), 2)
    root2 = str(tmp_path / "b")
    write_dataset(root2, shards=1, per_shard=2)
    with pytest.raises(DataSpecError, match="image_size=32"):
        _take(make_loader(_cfg(root2, image_size=32)), 1)
    with pytest.raises(DataSpecError, match="views_per_sample=9"):
        _take(make_loader(_cfg(root2, views_per_sample=9)), 1)


def test_missing_manifest_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match=r"train\.json: manifest not found"):
        make_loader(_cfg(str(tmp_path)))


def test_finite_loader_passes_and_resume_mid_pass(dataset):
    root, keys = dataset
    cfg = _cfg(root, resampled=False, epochs=1, num_workers=2, batch_size=5)
    loader = make_loader(cfg)
    first = [b["key"] for b in loader]
    second = [b["key"] for b in loader]  # iterating a finished loader runs the next pass
    assert sorted(sum(first, [])) == sorted(sum(second, [])) == sorted(keys)
    assert first != second
    # resume in the middle of the second pass
    loader = make_loader(cfg)
    list(loader)
    it = iter(loader)
    head = [next(it)["key"] for _ in range(2)]
    state = loader.state_dict()
    del it
    resumed = make_loader(cfg)
    resumed.load_state_dict(state)
    assert head + [b["key"] for b in resumed] == second


def test_reader_reports_truncation_mid_member_and_at_a_boundary(tmp_path):
    import tarfile

    from synshot.data.reader import ShardFailure, iter_shard

    record = write_shard(str(tmp_path), "train", 0, [encoded(i, 0) for i in range(4)])
    path = tmp_path / "train-000000.tar"
    data = path.read_bytes()
    with tarfile.open(path) as tar:
        members = tar.getmembers()
    # cut inside the data of a member of the third sample: a read error after the cut sample
    third = next(m for m in members if m.name.startswith("000002_0000.rgb"))
    (tmp_path / "mid.tar").write_bytes(data[: third.offset_data + third.size // 2])
    items = list(iter_shard(str(tmp_path / "mid.tar"), expected_samples=4))
    assert [i["__key__"] for i in items[:-1]] == ["000000_0000", "000001_0000", "000002_0000"]
    assert isinstance(items[-1], ShardFailure) and "read error" in items[-1].message
    # cut exactly between samples: tar stream mode ends silently; the manifest count catches it
    fourth = next(m for m in members if m.name.startswith("000003_0000"))
    (tmp_path / "edge.tar").write_bytes(data[: fourth.offset])
    items = list(iter_shard(str(tmp_path / "edge.tar"), expected_samples=record["num_samples"]))
    assert [i["__key__"] for i in items[:-1]] == ["000000_0000", "000001_0000", "000002_0000"]
    assert isinstance(items[-1], ShardFailure) and "holds 3 samples but the manifest says 4" in items[-1].message


def test_resume_with_corrupt_shards_restores_batches_and_counters(tmp_path):
    root = str(tmp_path)
    _corrupt_dataset(root, n_good=3, per_shard=4)
    cfg = _cfg(root, num_workers=2, batch_size=3, max_corrupt_fraction=0.9, corrupt_min_events=1000)
    full_loader = make_loader(cfg)
    it = iter(full_loader)
    full = [next(it) for _ in range(12)]
    full_counters = full_loader.counters
    del it
    first = make_loader(cfg)
    _take(first, 5)
    resumed = make_loader(cfg)
    resumed.load_state_dict(first.state_dict())
    rest = _take(resumed, 7)
    assert all(_same(a, b) for a, b in zip(rest, full[5:]))
    assert resumed.counters == full_counters and full_counters["shard_errors"] > 0
