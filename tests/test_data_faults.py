"""Data fault catalogue: lost shards weigh their sample counts, non-finite arrays are corrupt samples
naming the key, manifests are readable by group/others, data errors are exit-5 errors."""

from __future__ import annotations

import io
import os
import stat

import numpy as np
import pytest
from test_data_helpers import random_sample_arrays, write_dataset

from synshot.cli import EXIT_DATA
from synshot.data.loader import CorruptDataError, DataSpecError, LoaderConfig, make_loader
from synshot.data.reader import ShardFailure, iter_shard
from synshot.data.schema import CorruptSampleError, DataError, decode_sample, encode_sample
from synshot.data.writer import ManifestError, read_manifest

pytestmark = pytest.mark.faults


def _cfg(root, **kw):
    base = dict(url=root, batch_size=2, num_workers=0, views_per_sample=2, shuffle_buffer=0, seed=3,
                resampled=False, shuffle_shards=False, epochs=1)
    base.update(kw)
    return LoaderConfig(**base)


def test_missing_shards_weigh_their_manifest_counts(tmp_path):
    root = str(tmp_path)
    write_dataset(root, shards=4, per_shard=6)
    for i in (1, 3):  # half of the data set is gone
        os.remove(os.path.join(root, f"train-{i:06d}.tar"))
    (failure,) = list(iter_shard(os.path.join(root, "train-000001.tar"), expected_samples=6))
    assert isinstance(failure, ShardFailure) and failure.lost == 6
    loader = make_loader(_cfg(root, max_corrupt_fraction=0.9, corrupt_min_events=1))
    keys = [k for b in loader for k in b["key"]]
    c = loader.counters
    assert len(keys) == 12 and c["skipped"] == 12 and c["shard_errors"] == 2  # 50 %, not 2 of 14
    # and the threshold sees 50 %: a 20 % limit stops the run, naming a lost shard
    with pytest.raises(CorruptDataError, match=r"12 of 24 samples.*50\.0%.*train-00000[13]\.tar"):
        for _ in make_loader(_cfg(root, max_corrupt_fraction=0.2, corrupt_min_events=20)):
            pass


def test_truncated_shard_weighs_its_lost_tail(tmp_path):
    root = str(tmp_path)
    write_dataset(root, shards=1, per_shard=6)
    shard = tmp_path / "train-000000.tar"
    data = shard.read_bytes()
    shard.write_bytes(data[: len(data) // 3])
    items = list(iter_shard(str(shard), expected_samples=6))
    delivered = len(items) - 1
    assert isinstance(items[-1], ShardFailure) and items[-1].lost == 6 - delivered >= 3


@pytest.mark.parametrize("member", ["verts.npy", "exp.npy"])
def test_non_finite_arrays_are_corrupt_samples_naming_the_key(member):
    raw = encode_sample(*random_sample_arrays(7, 2))  # the writer refuses NaN: damage the bytes afterwards
    arr = np.load(io.BytesIO(raw[member]))
    arr[1, 2, 3] = np.nan
    buf = io.BytesIO()
    np.save(buf, arr)
    raw[member] = buf.getvalue()
    raw["__url__"] = "train-000000.tar"
    with pytest.raises(CorruptSampleError, match=rf"sample '000007_0002' in shard train-000000.tar: {member}: 1 of"):
        decode_sample(raw)


def test_non_finite_camera_or_expression_in_meta_is_corrupt():
    meta, *rest = random_sample_arrays(3, 1)
    meta["expression_coeffs"][0] = float("inf")
    raw = encode_sample(meta, *rest)
    with pytest.raises(CorruptSampleError, match="000003_0001.*expression_coeffs: 1 of 5 values are NaN/inf"):
        decode_sample(raw)


def test_manifests_and_shards_are_group_readable(tmp_path):
    old = os.umask(0o022)
    try:
        write_dataset(str(tmp_path), shards=1, per_shard=2)
    finally:
        os.umask(old)
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in tmp_path.iterdir() if p.is_file()}
    assert modes and all(m == 0o644 for m in modes.values()), modes


def test_data_errors_belong_to_the_exit_5_family(tmp_path):
    for cls in (DataError, CorruptSampleError, CorruptDataError, DataSpecError, ManifestError):
        assert cls.exit_code == EXIT_DATA, cls
    with pytest.raises(ManifestError) as e:
        read_manifest(str(tmp_path), "train")
    assert e.value.exit_code == EXIT_DATA
