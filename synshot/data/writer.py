"""Shard writer and manifests: ``{split}-{index:06d}.tar`` + ``{split}-{index:06d}.tar.json`` + ``{split}.json``.

Why this shape: a shard is built in a local temporary file and published in one atomic step, so a
reader (or a crashed array task) never leaves a torn shard behind. The sidecar ``.tar.json`` is
written after the tar and marks the shard complete; re-runs skip complete shards; the per-split
manifest is rebuilt from the sidecars (idempotent), so any number of array tasks can finish in
any order and one final ``--finalize`` step makes the manifest exact.
"""

from __future__ import annotations

import io
import json
import os
import re
import tarfile
import tempfile
import time
from typing import Any, Iterable, Mapping

from synshot import fsio
from synshot.cli import DataFileError
from synshot.data import storage
from synshot.data.schema import SCHEMA_VERSION

SIDECAR_SUFFIX = ".json"
_SHARD_RE = re.compile(r"^(?P<split>[a-z0-9_]+)-(?P<index>\d{6})\.tar$")


class ManifestError(DataFileError, ValueError):
    """A manifest is missing or inconsistent; the message names the URL and the fix (exit 5)."""


def shard_name(split: str, index: int) -> str:
    return f"{split}-{int(index):06d}.tar"


def sidecar_name(split: str, index: int) -> str:
    return shard_name(split, index) + SIDECAR_SUFFIX


def manifest_name(split: str) -> str:
    return f"{split}.json"


def parse_shard_name(name: str) -> tuple[str, int] | None:
    m = _SHARD_RE.match(name)
    return (m.group("split"), int(m.group("index"))) if m else None


def _add_member(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = 0  # deterministic bytes: the same seed gives byte-identical shards
    info.mode = 0o444
    info.uname = info.gname = ""
    tar.addfile(info, io.BytesIO(data))


def write_tar(path: str, samples: Iterable[Mapping[str, Any]]) -> list[str]:
    """Write encoded samples (``{"__key__", member: bytes}``) to the local tar ``path``; returns the keys."""
    keys: list[str] = []
    with tarfile.open(path, "w", format=tarfile.USTAR_FORMAT) as tar:
        for sample in samples:
            key = sample["__key__"]
            if "." in key or "/" in key:
                raise ValueError(f"sample key '{key}' must not contain '.' or '/' (webdataset splits names at the first dot)")
            for member, data in sample.items():
                if member.startswith("__"):
                    continue
                if not isinstance(data, (bytes, bytearray)):
                    raise TypeError(f"sample '{key}' member '{member}': expected bytes (use schema.encode_sample), got {type(data).__name__}")
                _add_member(tar, f"{key}.{member}", bytes(data))
            keys.append(key)
    return keys


def write_shard(
    root: str,
    split: str,
    index: int,
    samples: Iterable[Mapping[str, Any]],
    storage_options: Mapping[str, Any] | None = None,
    tmp_dir: str | None = None,
    fingerprint: str | None = None,
) -> dict[str, Any]:
    """Build shard ``index`` of ``split`` from ``samples`` locally, then publish tar + sidecar atomically.

    ``fingerprint`` (of the generator config) is stored in the sidecar so that a re-run with another
    config can refuse to mix its shards with these.

    ``samples`` may be a lazy generator (rendering happens while the tar is built); if it raises or the
    process dies, nothing is published. Returns the sidecar record ``{name, num_samples, bytes, sha256, keys}``.
    """
    name = shard_name(split, index)
    url = storage.join(root, name)
    local_target = storage.is_local(root)
    if local_target:
        storage.makedirs(root)
        tmp_dir = os.path.dirname(os.path.abspath(storage.local_path(url)))  # same file system -> rename, no copy
        for stale in os.listdir(tmp_dir):  # left by a killed writer of this shard; hidden, never listed
            if stale.startswith(f".{name}.tmp-"):
                os.unlink(os.path.join(tmp_dir, stale))
    fd, tmp = tempfile.mkstemp(prefix=f".{name}.tmp-", dir=tmp_dir)
    os.close(fd)
    try:
        keys = write_tar(tmp, samples)
        record = {
            "name": name,
            "num_samples": len(keys),
            "bytes": os.path.getsize(tmp),
            "sha256": fsio.file_sha256(tmp),
            "keys": keys,
            "schema_version": SCHEMA_VERSION,
            "fingerprint": fingerprint,
            "written_at": time.strftime("%Y-%m-%dT%H:%M:%S"),
        }
        if local_target:
            os.chmod(tmp, fsio.file_mode())  # mkstemp creates 0600; shards are read by others
            os.replace(tmp, storage.local_path(url))
        else:
            storage.put_file_atomic(tmp, url, storage_options)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    storage.write_bytes_atomic(storage.join(root, sidecar_name(split, index)), json.dumps(record, indent=1).encode(), storage_options)
    return record


def read_sidecar(root: str, split: str, index: int, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
    url = storage.join(root, sidecar_name(split, index))
    try:
        return json.loads(storage.read_bytes(url, storage_options))
    except FileNotFoundError:
        return None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{url}: sidecar is not valid JSON ({exc}); delete it to re-render that shard") from None


def completed_shards(
    root: str, split: str, storage_options: Mapping[str, Any] | None = None, known_counts: Mapping[str, int] | None = None
) -> dict[int, dict[str, Any]]:
    """``{index: sidecar}`` of the complete shards of ``split`` (tar present and sidecar written after it).

    ``known_counts`` (shard name -> samples, e.g. from the generation plan) skips reading those sidecars:
    one listing instead of one request per shard, for the rebuild every array task does at its end.
    """
    names = set(storage.list_names(root, storage_options))
    out: dict[int, dict[str, Any]] = {}
    for name in names:
        parsed = parse_shard_name(name)
        if parsed is None or parsed[0] != split or name + SIDECAR_SUFFIX not in names:
            continue
        if known_counts is not None and name in known_counts:
            out[parsed[1]] = {"name": name, "num_samples": int(known_counts[name])}
            continue
        record = read_sidecar(root, split, parsed[1], storage_options)
        if record is not None and record.get("name") == name:
            out[parsed[1]] = record
    return out


def shard_is_complete(
    root: str, split: str, index: int, storage_options: Mapping[str, Any] | None = None, fingerprint: str | None = None
) -> bool:
    """True when the shard and its sidecar exist. With ``fingerprint``, a complete shard written under
    another generator config is an error (mixing two configs in one dataset would go unnoticed)."""
    record = read_sidecar(root, split, index, storage_options)
    if record is None or not storage.exists(storage.join(root, shard_name(split, index)), storage_options):
        return False
    if fingerprint is not None and record.get("fingerprint") != fingerprint:
        raise ManifestError(
            f"{storage.join(root, shard_name(split, index))} was written with another generator config "
            f"(fingerprint {record.get('fingerprint')!r}, now {fingerprint!r}); write to a new --out or delete "
            "the old shards (the same config must be used for every task and re-run)"
        )
    return True


def build_manifest(
    root: str,
    split: str,
    generator_config: Mapping[str, Any],
    planned_shards: int | None = None,
    storage_options: Mapping[str, Any] | None = None,
    known_counts: Mapping[str, int] | None = None,
) -> dict[str, Any]:
    """Rebuild ``{split}.json`` from the complete shards and publish it atomically (idempotent)."""
    done = completed_shards(root, split, storage_options, known_counts)
    shards = [{"name": done[i]["name"], "num_samples": int(done[i]["num_samples"])} for i in sorted(done)]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "split": split,
        "shards": shards,
        "num_samples": sum(s["num_samples"] for s in shards),
        "planned_shards": planned_shards,
        "complete": planned_shards is not None and len(shards) == planned_shards,
        "generator_config": dict(generator_config),
    }
    storage.write_bytes_atomic(storage.join(root, manifest_name(split)), json.dumps(manifest, indent=1).encode(), storage_options)
    return manifest


def read_manifest(root: str, split: str, storage_options: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Read and check ``{split}.json``; errors name the URL and how to fix it."""
    url = storage.join(root, manifest_name(split))
    try:
        manifest = json.loads(storage.read_bytes(url, storage_options))
    except FileNotFoundError:
        raise ManifestError(
            f"{url}: manifest not found; is '{root}' a dataset root with split '{split}'? "
            "(write one with `synshot data synth ... --finalize`)"
        ) from None
    except json.JSONDecodeError as exc:
        raise ManifestError(f"{url}: manifest is not valid JSON ({exc})") from None
    for field in ("schema_version", "split", "shards", "num_samples"):
        if field not in manifest:
            raise ManifestError(f"{url}: manifest lacks '{field}'")
    if manifest["schema_version"] != SCHEMA_VERSION:
        raise ManifestError(
            f"{url}: schema_version {manifest['schema_version']!r} but this code reads version {SCHEMA_VERSION}; "
            "regenerate the dataset or use the matching code version"
        )
    if sum(int(s["num_samples"]) for s in manifest["shards"]) != manifest["num_samples"]:
        raise ManifestError(f"{url}: num_samples {manifest['num_samples']} != sum over shards")
    return manifest
