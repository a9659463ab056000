"""Photos in, subject out, before an inversion: ``synshot invert`` on a folder of plain photos tracks it first."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Callable

from synshot.track.config import TrackConfig

TRACKED_SUBJECT = "tracked_subject"


def needs_tracking(subject_dir: str | Path) -> bool:
    """A folder of photos (or images/ without cameras.json) that the tracker must turn into a subject."""
    from synshot.invert.subject import IMAGE_SUFFIXES

    d = Path(subject_dir)
    if not d.is_dir() or (d / "cameras.json").is_file():
        return False
    images = d / "images" if (d / "images").is_dir() else d
    return any(p.suffix.lower() in IMAGE_SUFFIXES for p in images.iterdir() if p.is_file())


def track_if_needed(subject_dir: str | Path, out_dir: str | Path, cfg: TrackConfig,
                    log: Callable[[str], None] = print) -> Path:
    """``subject_dir`` itself when it is a subject; else track its photos into ``out_dir/tracked_subject``."""
    if not needs_tracking(subject_dir):
        return Path(subject_dir)
    from synshot.track.api import track_subject

    out_dir = Path(out_dir)
    target = staged_tracked_subject(out_dir)   # moved into the outputs when they are published
    discard_tracked_subject(target, out_dir)   # one left by a killed run
    log(f"{subject_dir} holds photos but no cameras.json: tracking them first (synshot track) -> "
        f"{out_dir / TRACKED_SUBJECT}")
    try:
        result = track_subject(subject_dir, target, cfg)
    except BaseException:
        discard_tracked_subject(target, out_dir)
        raise
    for fr in result.frames:
        log(f"  {fr['file']}: {fr['cue']}" + (f", landmark RMSE {fr['landmark_rmse_px']:.2f} px"
                                                       if fr["cue"] == "landmarks" else
                                                       f", silhouette IoU {fr['silhouette_iou']:.2f}"))
    return target


def staged_tracked_subject(out_dir: str | Path) -> Path:
    """Where :func:`track_if_needed` writes the tracked subject until the inversion's outputs are published."""
    out_dir = Path(out_dir)
    return out_dir.parent / f".{out_dir.name}.{TRACKED_SUBJECT}"


def keep_tracked_subject(subject_dir: str | Path, out_dir: str | Path, staging: Path) -> None:
    """Move a subject tracked by :func:`track_if_needed` into the outputs being published (``staging``)."""
    tracked = staged_tracked_subject(out_dir)
    if Path(subject_dir) == tracked and tracked.is_dir():
        shutil.move(str(tracked), str(Path(staging) / TRACKED_SUBJECT))
    discard_tracked_subject(subject_dir, out_dir)


def discard_tracked_subject(subject_dir: str | Path, out_dir: str | Path) -> None:
    """Remove the hidden tracked subject (and its publish lock / ``.previous``) that :func:`track_if_needed`
    staged beside ``out_dir``: called when the inversion fails, so a failed run leaves nothing hidden
    behind. A ``subject_dir`` that is not that staged folder (a user's subject) is never touched."""
    tracked = staged_tracked_subject(out_dir)
    if Path(subject_dir) != tracked:
        return
    for p in (tracked, tracked.parent / f"{tracked.name}.previous"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
    (tracked.parent / f".{tracked.name}.lock").unlink(missing_ok=True)
