"""Storage helpers: one code path for every fsspec URL (plain paths, file://, s3://, gs://, http(s)://, memory://).

Why: the same dataset root must work on a laptop, a cluster file system and an object store,
configured only by the URL plus ``storage_options`` (e.g. ``{"endpoint_url": ..., "key": ...}`` for
an S3-compatible server). Writes are atomic: a reader never sees a half-written object.
"""

from __future__ import annotations

import importlib
import os
import posixpath
import shutil
import tempfile
import uuid
from typing import Any, BinaryIO, Mapping

import fsspec
from fsspec.core import url_to_fs

from synshot import fsio
from synshot.cli import DataFileError

# Object stores publish an object only when its upload completes, so a direct put is atomic.
_ATOMIC_PUT_PROTOCOLS = {"s3", "s3a", "gs", "gcs", "memory", "az", "abfs", "abfss", "adl", "oci"}
_READ_ONLY_PROTOCOLS = {"http", "https"}


class StorageError(DataFileError, OSError):
    """A storage operation failed; the message names the URL and the likely fix."""


def protocol_of(url: str) -> str:
    """``"s3"`` for ``s3://b/k``, ``"file"`` for plain paths and ``file://``."""
    if "://" not in url:
        return "file"
    return url.split("://", 1)[0].lower()


def is_local(url: str) -> bool:
    return protocol_of(url) == "file"


def local_path(url: str) -> str:
    """The file-system path of a local URL (plain path or ``file://``)."""
    return url[len("file://"):] if url.startswith("file://") else url


def join(root: str, *parts: str) -> str:
    """Join path parts onto a root URL without mangling ``scheme://`` (``os.path.join`` would)."""
    if is_local(root) and not root.startswith("file://"):
        return os.path.join(root, *parts)
    out = root.rstrip("/")
    for part in parts:
        out = out + "/" + part.strip("/")
    return out


def basename(url: str) -> str:
    return posixpath.basename(url.rstrip("/")) if not is_local(url) else os.path.basename(local_path(url))


def filesystem(url: str, storage_options: Mapping[str, Any] | None = None):
    """``(fs, path)`` for ``url``; ``storage_options`` go to the file system of the URL's protocol."""
    try:
        return url_to_fs(url, **dict(storage_options or {}))
    except ImportError as exc:
        raise StorageError(f"{url}: no fsspec driver for protocol '{protocol_of(url)}' ({exc})") from exc


def exists(url: str, storage_options: Mapping[str, Any] | None = None) -> bool:
    fs, path = filesystem(url, storage_options)
    try:
        return bool(fs.exists(path))
    except FileNotFoundError:
        return False


def list_names(root: str, storage_options: Mapping[str, Any] | None = None) -> list[str]:
    """Base names of the objects directly under ``root`` (empty when ``root`` does not exist)."""
    fs, path = filesystem(root, storage_options)
    fs.invalidate_cache()  # listings are cached per instance; other processes may have written since
    try:
        entries = fs.ls(path, detail=False)
    except (FileNotFoundError, NotADirectoryError):
        return []
    return sorted(posixpath.basename(str(e).rstrip("/")) for e in entries)


def open_url(url: str, mode: str = "rb", storage_options: Mapping[str, Any] | None = None) -> BinaryIO:
    """Open ``url`` as a file object. HTTP is streamed (``block_size=0``): plain servers lack Range support."""
    opts = dict(storage_options or {})
    if protocol_of(url) in _READ_ONLY_PROTOCOLS:
        opts.setdefault("block_size", 0)
    try:
        return fsspec.open(url, mode, **opts).open()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"{url}: not found") from exc


def read_bytes(url: str, storage_options: Mapping[str, Any] | None = None) -> bytes:
    with open_url(url, "rb", storage_options) as f:
        return f.read()


def _check_writable(url: str) -> None:
    if protocol_of(url) in _READ_ONLY_PROTOCOLS:
        raise StorageError(
            f"{url}: http(s) storage is read-only here; write the dataset to a local path or s3:// "
            "and serve that directory over HTTP for readers"
        )


def put_file_atomic(src_path: str, url: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Copy a finished local file to ``url`` so that ``url`` appears only complete.

    Local: copy next to the target then ``os.replace`` (atomic on POSIX). Object stores: one put
    (objects become visible only when the upload completes). Other file systems: put under a
    temporary name, then rename.
    """
    _check_writable(url)
    if is_local(url):
        with fsio.atomic_path(local_path(url)) as tmp:
            shutil.copyfile(src_path, tmp)
        return
    fs, path = filesystem(url, storage_options)
    if protocol_of(url) in _ATOMIC_PUT_PROTOCOLS:
        fs.put_file(src_path, path)
    else:
        tmp = f"{path}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        fs.put_file(src_path, tmp)
        fs.mv(tmp, path)
    fs.invalidate_cache()


def write_bytes_atomic(url: str, data: bytes, storage_options: Mapping[str, Any] | None = None) -> None:
    """Write ``data`` to ``url`` atomically (see :func:`put_file_atomic`)."""
    _check_writable(url)
    if is_local(url):
        fsio.write_bytes(local_path(url), data)  # fsync-ed, mode 0666 & ~umask (readable like the shards)
        return
    with tempfile.NamedTemporaryFile(suffix=".part") as tmp:
        tmp.write(data)
        tmp.flush()
        put_file_atomic(tmp.name, url, storage_options)


def makedirs(url: str, storage_options: Mapping[str, Any] | None = None) -> None:
    """Create the directory ``url`` where that means something (local); object stores need none."""
    if is_local(url):
        os.makedirs(local_path(url), exist_ok=True)


def register_gopen(storage_options: Mapping[str, Any] | None = None, http: str = "curl") -> None:
    """Make ``webdataset`` open any fsspec URL (s3://, gs://, memory://, ...) with ``storage_options``.

    ``http="curl"`` keeps webdataset's default curl opener for http(s) (fast, retries);
    ``http="fsspec"`` routes http(s) through fsspec in streaming mode instead.
    """
    gopen_module = importlib.import_module("webdataset.gopen")  # `webdataset.gopen` the attribute is a function
    opts = dict(storage_options or {})

    def _open(url: str, mode: str = "rb", bufsize: int = 8192, **_: Any):
        return open_url(url, mode, opts)

    for proto in ("s3", "s3a", "gs", "gcs", "memory", "az", "abfs", "abfss"):
        gopen_module.gopen_schemes[proto] = _open
    if http == "fsspec":
        gopen_module.gopen_schemes["http"] = _open
        gopen_module.gopen_schemes["https"] = _open
    elif http != "curl":
        raise ValueError(f"register_gopen(http={http!r}): expected 'curl' or 'fsspec'")
