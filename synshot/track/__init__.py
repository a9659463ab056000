"""Face tracker: fits the head model to 1-N photos of one person and writes a subject folder.

``track_subject(photos, out_dir, cfg) -> TrackResult`` is the entry point (docs/tracking.md).
Attributes are imported lazily so that configs can import ``synshot.track.config`` cheaply.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "track_subject": "synshot.track.api", "TrackResult": "synshot.track.api", "TrackingError": "synshot.track.api",
    "CUE_LANDMARKS": "synshot.track.api", "CUE_SILHOUETTE": "synshot.track.api",
    "TrackConfig": "synshot.track.config", "PhotoError": "synshot.track.photos",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'synshot.track' has no attribute {name!r}")
