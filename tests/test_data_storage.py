"""Remote storage through REAL servers on 127.0.0.1: S3 (moto_server) write + read, HTTP (http.server) read."""

import os
import shutil
import sys

import pytest
import webdataset as wds
from test_data_helpers import free_port, start_server, stop_server, write_dataset

from synshot.data import storage
from synshot.data.loader import LoaderConfig, make_loader
from synshot.data.reader import iter_shard
from synshot.data.schema import decode_sample
from synshot.data.writer import completed_shards, read_manifest, write_shard

MOTO = os.path.join(os.path.dirname(sys.executable), "moto_server")


def _epoch_keys(url, storage_options=None, workers=0):
    cfg = LoaderConfig(url=url, batch_size=3, num_workers=workers, resampled=False, epochs=1, shuffle_buffer=4,
                       views_per_sample=2, storage_options=storage_options or {})
    return sorted(k for b in make_loader(cfg) for k in b["key"])


@pytest.fixture(scope="module")
def s3():
    if not os.path.exists(MOTO):
        pytest.fail(f"{MOTO} missing: install requirements-dev.txt (moto[server])")
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    proc = start_server([MOTO, "-H", "127.0.0.1", "-p", str(port)], endpoint)
    opts = {"key": "test", "secret": "test", "client_kwargs": {"endpoint_url": endpoint, "region_name": "us-east-1"}}
    fs, _ = storage.filesystem("s3://synshot-test", opts)
    fs.call_s3("create_bucket", Bucket="synshot-test")
    try:
        yield opts
    finally:
        stop_server(proc)


def test_s3_write_and_read(s3):
    root = "s3://synshot-test/ds"
    keys = write_dataset(root, shards=3, per_shard=4, storage_options=s3)
    assert sorted(completed_shards(root, "train", s3)) == [0, 1, 2]
    assert read_manifest(root, "train", s3)["num_samples"] == 12
    names = storage.list_names(root, s3)
    assert "train-000001.tar" in names and not any(".tmp" in n for n in names)
    assert _epoch_keys(root, s3) == sorted(keys)
    assert _epoch_keys(root, s3, workers=2) == sorted(keys)  # s3fs inside forked DataLoader workers


def test_s3_through_webdataset_gopen(s3):
    root = "s3://synshot-test/wds"
    write_dataset(root, shards=1, per_shard=3, storage_options=s3)
    storage.register_gopen(s3)
    ds = wds.WebDataset(storage.join(root, "train-000000.tar"), shardshuffle=False)
    assert [s["__key__"] for s in ds] == ["000000_0000", "000001_0000", "000002_0000"]


def test_http_read(tmp_path):
    root = tmp_path / "site"
    keys = write_dataset(str(root), shards=3, per_shard=4)
    port = free_port()
    proc = start_server([sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
                        f"http://127.0.0.1:{port}/train.json")
    try:
        url = f"http://127.0.0.1:{port}"
        assert _epoch_keys(url) == sorted(keys)  # fsspec http, streamed (no Range support in http.server)
        assert _epoch_keys(url, workers=2) == sorted(keys)
        shard = f"{url}/train-000002.tar"
        assert [decode_sample(s)["key"] for s in iter_shard(shard)] == keys[8:12]
        # webdataset's own curl opener on the same server
        ds = wds.WebDataset(shard, shardshuffle=False)
        assert [s["__key__"] for s in ds] == keys[8:12]
        # a missing shard is a countable failure, not a crash
        (failure,) = list(iter_shard(f"{url}/train-000009.tar"))
        assert "cannot open" in failure.message and "train-000009.tar" in failure.url
        with pytest.raises(storage.StorageError, match="read-only"):
            write_shard(url, "train", 5, [])
    finally:
        stop_server(proc)


def test_memory_and_file_urls(tmp_path):
    root = "memory://storage-test/ds"
    keys = write_dataset(root, shards=2, per_shard=2)
    storage.register_gopen()
    ds = wds.WebDataset([storage.join(root, "train-000000.tar"), storage.join(root, "train-000001.tar")], shardshuffle=False)
    assert [s["__key__"] for s in ds] == keys
    local = tmp_path / "plain"
    keys = write_dataset(str(local), shards=1, per_shard=2)
    assert _epoch_keys(f"file://{local}") == _epoch_keys(str(local)) == sorted(keys)
    assert storage.join("s3://b/x/", "y.tar") == "s3://b/x/y.tar"
    assert storage.join("rel/dir", "y.tar") == os.path.join("rel/dir", "y.tar")
    shutil.rmtree(local)
    assert storage.list_names(str(local)) == []


def test_synth_cli_writes_to_s3_and_inspect_reads_it(s3):
    """The real generator (head model + ray tracer) writing straight to the S3 server."""
    import json as _json

    from data_tools import synth as synth_cli
    from synshot.data.validate import inspect_dataset

    root = "s3://synshot-test/synth"
    config = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "configs", "data", "tiny.yaml")
    opts_yaml = _json.dumps(s3)  # JSON is YAML: passed as one key=value override
    args = ["--config", config, "--out", root, "--no-progress", "num_identities=2", "expressions_per_identity=1",
            "views=1", "image_size=24", "uv_size=16", "spp=1", "samples_per_shard=1",
            "splits={train: 0.5, val: 0.5, test: 0.0}", f"storage_options={opts_yaml}"]
    assert synth_cli.main(args) == 0
    report = inspect_dataset(root, storage_options=s3)
    assert report["ok"] and report["num_samples"] == 2, report
    assert set(report["splits"]) == {"train", "val"}
    assert not any(".tmp" in n for n in storage.list_names(root, s3))
