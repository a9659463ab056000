"""Synthetic head dataset: sample schema, shard writer/manifests, storage helpers and the streaming loader.

Public names are imported lazily (``from synshot.data import make_loader``) so that importing the
package does not pull in torch or fsspec drivers.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "SCHEMA_VERSION": "schema", "sample_key": "schema", "encode_sample": "schema", "decode_sample": "schema",
    "CorruptSampleError": "schema", "SchemaVersionError": "schema", "DataError": "schema",
    "write_shard": "writer", "build_manifest": "writer", "read_manifest": "writer", "shard_name": "writer",
    "LoaderConfig": "loader", "StreamingLoader": "loader", "make_loader": "loader",
    "CorruptDataError": "loader", "DataSpecError": "loader",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        return getattr(importlib.import_module(f"synshot.data.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'synshot.data' has no attribute '{name}'")
