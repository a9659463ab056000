"""Helpers for the data tests: small schema-valid samples from seeded random arrays, and a server launcher.

(Format tests need many tiny valid samples fast; the end-to-end test in test_data_synth.py uses the
real head model and ray tracer.)
"""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np

from synshot.data.schema import encode_sample
from synshot.data.writer import build_manifest, write_shard


def random_sample_arrays(identity: int, expression: int, views: int = 4, size: int = 16, uv: int = 8, seed: int = 0):
    rng = np.random.default_rng([seed, identity, expression])
    K = [[size * 1.2, 0, size / 2], [0, size * 1.2, size / 2], [0, 0, 1]]
    w2c = np.eye(4)
    w2c[2, 3] = 1.0 + identity * 0.01
    meta = {
        "identity": identity,
        "expression": expression,
        "head_model_version": "test-arrays",
        "identity_params": {"seed": identity},
        "expression_coeffs": rng.uniform(-1, 1, 5).round(4).tolist(),
        "expression_names": [f"e{i}" for i in range(5)],
        "head_pose": np.eye(4).tolist(),
        "views": [{"K": K, "w2c": (w2c + v * 0.1 * np.eye(4)).tolist(), "width": size, "height": size} for v in range(views)],
        "lighting_id": 0,
        "renderer": {"name": "test", "version": "0", "variant": "none", "spp": 1},
    }
    tex = rng.integers(0, 256, (uv, uv, 3), dtype=np.uint8)
    verts = rng.normal(size=(3, uv, uv)).astype(np.float16)
    exp = (rng.normal(size=(3, uv, uv)) * 0.01).astype(np.float16)
    rgbs = [rng.integers(0, 256, (size, size, 3), dtype=np.uint8) for _ in range(views)]
    masks = [(rng.random((size, size)) > 0.5).astype(np.uint8) * 255 for _ in range(views)]
    return meta, tex, verts, exp, rgbs, masks


def encoded(identity: int, expression: int, **kw):
    return encode_sample(*random_sample_arrays(identity, expression, **kw))


def write_dataset(root: str, split: str = "train", shards: int = 4, per_shard: int = 6, storage_options=None, **kw) -> list[str]:
    """Shards of ``per_shard`` samples each (identity = running index, expression 0); returns all keys."""
    keys = []
    for s in range(shards):
        samples = [encoded(s * per_shard + i, 0, **kw) for i in range(per_shard)]
        keys += [x["__key__"] for x in samples]
        write_shard(root, split, s, samples, storage_options)
    build_manifest(root, split, {"test": True}, shards, storage_options)
    return keys


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(args: list[str], url: str, timeout: float = 20.0) -> subprocess.Popen:
    """Start a server subprocess and wait until ``url`` answers (any HTTP status)."""
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + timeout
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server {args} exited with {proc.returncode}")
        try:
            urllib.request.urlopen(url, timeout=1)
            return proc
        except urllib.error.HTTPError:
            return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"server {args} did not answer at {url} within {timeout} s")


def stop_server(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


PYTHON = sys.executable
