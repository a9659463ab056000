"""Tracked geometry of held-out subjects: ``synshot eval track SUBJECT... [--out TRACKED_DIR]``.

The evaluation (and the demo) measure inversion from photos, so every method gets the geometry the
face tracker (synshot.track) fits to the subject's 3 input images, not the generator's truth.

What the tracker sees: only the subject's ``images/`` and ``masks/``, copied into a temporary photo
folder, so the held-out subject's ``cameras.json`` and ``params.json`` are never read. It writes a
subject folder (images, masks, cameras.json, params.json, tracking.json, tracking.png); the held-out
``eval/`` frames and ``meta.json`` (the split's seed) are then carried over unchanged.

Alignment rule (no eval image is used; synshot.eval.align): the eval frames keep their recorded
camera, head pose and expression as the driving signal. A monocular fit recovers the head only up to
a similarity (scale/depth, a global rotation), so the tracked head frame is mapped onto the recorded
one by the similarity that best maps the tracked head-to-camera transforms of the 3 INPUT photos onto
their recorded ones (medoid rotation, least-squares scale and translation of the camera centres);
the carried-over ``eval/cameras.json``/``eval/params.json`` are re-expressed in the tracked head
frame (``alignment.json`` records the similarity). The recorded input cameras are read only for this,
after tracking (the tracker never sees them). What tracking gets wrong beyond a similarity (shape,
per-photo pose and expression) shows up in the eval metrics, as it would for a user's photos.

Cache: ``heldout.json`` in the tracked folder holds a digest of the input images + masks bytes and
of the track config; a folder whose digest matches is reused (tuning trials and re-runs do not
re-track). The folder is published at once (synshot.fsio.publish_dir). ``tracking_error.json``
holds the tracking error against the truth (synshot.bench.track.compare), for the report only: the
truth is read after tracking and never feeds anything that is scored.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from functools import lru_cache
from pathlib import Path

import numpy as np

from synshot.cli import Command, UsageError, get_logger
from synshot.config import dump_config
from synshot.fsio import publish_dir
from synshot.track.config import TrackConfig

log = get_logger("synshot.eval.tracked")

TRACKED_FORMAT = 3  # bump when what this module writes changes (invalidates every cached tracked subject)
INPUT_FOLDERS = ("images", "masks")
STAMP = "heldout.json"
ERROR_FILE = "tracking_error.json"
ALIGNMENT_FILE = "alignment.json"
CARRIED = ("eval", "meta.json")
ERROR_KEYS = ("rot_err_deg", "face_vertex_err_mm", "cam_dist_err_pct")


def default_tracked_dir(subject_dir: Path) -> Path:
    """``<parent of the subjects' folder>/tracked``: shared by the demo, ``make eval`` and the tuning search."""
    return Path(subject_dir).resolve().parent.parent / "tracked"


def input_digest(subject_dir: Path, track_cfg: TrackConfig) -> str:
    """sha256 of what the tracker sees (images/ and masks/ bytes, by relative path), of its config and of
    the landmark correction's file when it is on (a rebuilt correction or predictor re-tracks), and of the
    predictor's training record when turned faces are read (their box map is in it)."""
    h = hashlib.sha256(f"tracked-format {TRACKED_FORMAT}\n{dump_config(track_cfg)}\n".encode())
    if track_cfg.detect.correct_landmarks:
        from synshot.track.landmark_correction import correction_source

        correction = correction_source(track_cfg.detect)
        h.update(correction.read_bytes() if correction.is_file() else b"<missing correction>")
    if track_cfg.turned_faces.enabled:    # the box map of turned faces is in the predictor's training record
        from synshot.track.landmark_predictor import predictor_path

        record = predictor_path(track_cfg.detect.predictor_file).with_suffix(".json")
        h.update(record.read_bytes() if record.is_file() else b"<missing predictor record>")
    return hash_files(h, Path(subject_dir), [p for folder in INPUT_FOLDERS for p in _tree(Path(subject_dir) / folder)])


def _tree(root: Path) -> list[Path]:
    return sorted(root.rglob("*")) if root.is_dir() else []


def hash_files(h, subject_dir: Path, files: list[Path]) -> str:
    """Add each existing file's path (relative to the subject) and content hash to ``h``; its hex digest."""
    for p in files:
        if p.is_file():
            h.update(f"{p.relative_to(subject_dir)}\n".encode())
            h.update(hashlib.sha256(p.read_bytes()).digest())
    return h.hexdigest()


def source_digest(subject_dir: Path) -> str:
    """sha256 of the held-out files read after tracking: the carried-over eval/ and meta.json, and the
    recorded cameras.json/params.json (the alignment and the error table). A change re-derives the
    tracked folder from the cached tracker outputs; it never re-tracks."""
    subject_dir = Path(subject_dir)
    files = [subject_dir / n for n in ("meta.json", "cameras.json", "params.json")] + _tree(subject_dir / "eval")
    return hash_files(hashlib.sha256(), subject_dir, files)


def _stamp(tracked: Path) -> dict:
    try:
        return json.loads((tracked / STAMP).read_text())
    except (OSError, json.JSONDecodeError):
        return {}


def is_current(tracked: Path, digest: str, source: str | None = None) -> bool:
    """A tracked folder made from the same inputs with the same config (and complete); with ``source``,
    also from the same carried-over/recorded files (:func:`source_digest`)."""
    stamp = _stamp(tracked)
    return (stamp.get("input_digest") == digest and (tracked / "params.json").is_file()
            and (source is None or stamp.get("source_digest") == source))


@lru_cache(maxsize=2)
def _head_model(mesh: str):
    """The head model at one mesh resolution, built once per process (its template takes seconds)."""
    from synshot.head import HeadConfig, HeadModel

    return HeadModel(HeadConfig.tiny() if mesh == "tiny" else HeadConfig())


def tracking_error(truth_dir: Path, tracked_dir: Path, head_mesh: str) -> dict | None:
    """Per-photo and mean tracking error against the generator's truth; None when there is no truth."""
    if not ((truth_dir / "cameras.json").is_file() and (truth_dir / "params.json").is_file()):
        return None
    from synshot.bench.track import compare

    try:
        rows = compare(truth_dir, tracked_dir, _head_model(head_mesh))
    except (OSError, ValueError, KeyError, TypeError) as exc:  # a truth this module cannot read: no error table
        log.warning("%s: no tracking error (cannot read the truth: %s)", truth_dir, exc)
        return None
    mean = {k: float(np.mean([r[k] for r in rows])) for k in ERROR_KEYS}
    worst = {k: float(np.max([r[k] for r in rows])) for k in ERROR_KEYS}
    return {"photos": rows, "mean": mean, "max": worst}


def tracked_head_points(params: dict, count: int = 400) -> dict[str, np.ndarray]:
    """Head-frame vertices of the tracked identity in each photo's tracked expression (a fixed subsample)."""
    import torch

    from synshot.head import IdentityParams

    head = _head_model("tiny")
    identity = IdentityParams.from_dict(params["identity"])
    out = {}
    for frame in params["frames"]:
        with torch.no_grad():
            v = head.vertices(identity, torch.tensor(frame["expression"], dtype=torch.float32)).double().numpy()
        out[frame["file"]] = v[np.linspace(0, len(v) - 1, min(count, len(v))).astype(int)]
    return out


def align_eval_to_tracking(subject_dir: Path, tracked: Path) -> dict | None:
    """Re-express ``tracked/eval``'s cameras in the tracked head frame (module docstring); None without eval/."""
    from synshot.eval.align import align_eval_frames, alignment_from_subjects

    if not (tracked / "eval" / "cameras.json").is_file():
        return None
    try:
        recorded = [json.loads((subject_dir / n).read_text()) for n in ("cameras.json", "params.json")]
    except (OSError, json.JSONDecodeError) as exc:
        raise UsageError(f"{subject_dir}: the recorded input cameras (cameras.json, params.json) are needed to align "
                         f"the tracked head frame with the eval frames ({exc}); re-render the subject with "
                         f"`synshot data subject`") from None
    tracked_json = [json.loads((tracked / n).read_text()) for n in ("cameras.json", "params.json")]
    alignment = alignment_from_subjects(*recorded, *tracked_json, points=tracked_head_points(tracked_json[1]))
    eval_json = [json.loads((tracked / "eval" / n).read_text()) for n in ("cameras.json", "params.json")]
    cams, pars = align_eval_frames(*eval_json, alignment)
    (tracked / "eval" / "cameras.json").write_text(json.dumps(cams, indent=1))
    (tracked / "eval" / "params.json").write_text(json.dumps(pars, indent=1))
    return alignment.to_dict()


def track_heldout(subject_dir: str | Path, tracked_dir: str | Path, track_cfg: TrackConfig | None = None,
                  reuse: bool = True) -> Path:
    """Track a held-out subject from its input images + masks only -> ``tracked_dir/<name>`` (cached)."""
    from synshot.track import track_subject

    subject_dir, cfg = Path(subject_dir), track_cfg or TrackConfig()
    out = Path(tracked_dir) / subject_dir.name
    if out.resolve() == subject_dir.resolve():
        raise UsageError(f"{out}: the tracked folder would replace the held-out subject; use another tracked_dir")
    if not (subject_dir / "images").is_dir():
        raise UsageError(f"{subject_dir / 'images'}: missing; a held-out subject needs images/ (and eval/)")
    digest, source = input_digest(subject_dir, cfg), source_digest(subject_dir)
    if reuse and is_current(out, digest, source):
        log.debug("%s: tracked earlier (same images, masks and track config), reusing %s", subject_dir.name, out)
        return out
    retrack = not (reuse and is_current(out, digest))
    with tempfile.TemporaryDirectory(prefix=f"heldout_{subject_dir.name}_") as tmp:
        if retrack:
            log.info("%s: tracking from images/ and masks/ only -> %s", subject_dir.name, out)
            photos = Path(tmp) / subject_dir.name
            photos.mkdir()
            for folder in INPUT_FOLDERS:
                if (subject_dir / folder).is_dir():
                    shutil.copytree(subject_dir / folder, photos / folder)
            seconds = track_subject(photos, Path(tmp) / "tracked", cfg).seconds
        else:  # same tracker inputs, other eval/ or recorded files: keep the fit, redo what follows it
            log.info("%s: eval/ or recorded files changed; re-aligning the earlier tracking -> %s", subject_dir.name, out)
            derived = (*CARRIED, ALIGNMENT_FILE, ERROR_FILE, STAMP)
            shutil.copytree(out, Path(tmp) / "tracked", ignore=lambda d, names: [n for n in names if Path(d) == out
                                                                                and n in derived])
            seconds = float(_stamp(out).get("seconds", 0.0))
        error = tracking_error(subject_dir, Path(tmp) / "tracked", cfg.head_mesh)  # after tracking: report only
        with publish_dir(out, keep_previous=False, purpose="eval track") as stage:
            shutil.copytree(Path(tmp) / "tracked", stage, dirs_exist_ok=True)
            for name in CARRIED:
                src = subject_dir / name
                if src.is_dir():
                    shutil.copytree(src, stage / name)
                elif src.is_file():
                    shutil.copy2(src, stage / name)
            alignment = align_eval_to_tracking(subject_dir, stage)
            if alignment is not None:
                (stage / ALIGNMENT_FILE).write_text(json.dumps(alignment, indent=1))
            if error is not None:
                (stage / ERROR_FILE).write_text(json.dumps(error, indent=1))
            (stage / STAMP).write_text(json.dumps({
                "input_digest": digest, "source_digest": source, "source": str(subject_dir), "seconds": round(seconds, 2),
                "inputs": list(INPUT_FOLDERS), "carried": [n for n in CARRIED if (subject_dir / n).exists()]},
                indent=1))
    if error is not None:
        m = error["mean"]
        log.info("%s: tracked in %.0f s; rotation error %.1f deg, face vertex %.1f mm, camera distance %.1f %%",
                 subject_dir.name, seconds, m["rot_err_deg"], m["face_vertex_err_mm"], m["cam_dist_err_pct"])
    return out


def read_tracking_error(tracked: Path) -> dict | None:
    path = Path(tracked) / ERROR_FILE
    return json.loads(path.read_text()) if path.is_file() else None


CLI = Command("eval track", "Track held-out subjects from their input images only (cached) for the evaluation.",
              config_cls=TrackConfig, default_config="configs/track/default.yaml",
              out_help="folder of tracked subjects (default: tracked/ beside the subjects' folder)",
              example="synshot eval track runs/demo/subjects/s3001 runs/demo/subjects/s3002 --out runs/demo/tracked")
CLI.parser.add_argument("subjects", nargs="+", help="held-out subject folders (images/, masks/, eval/, meta.json)")
CLI.parser.add_argument("--no-reuse", action="store_true", help="re-track even when a current tracked folder exists")
CLI.parser.add_argument("--workers", type=int, default=None,
                        help="subjects tracked at once in spawned processes (default: min(CPU cores, subjects))")


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def _track_one(task: tuple) -> Path:
    return track_heldout(*task)


def track_all(subjects: list[Path], tracked_dirs: list[Path], cfg: TrackConfig, workers: int | None = None,
              threads: int | None = None, reuse: bool = True) -> list[Path]:
    """Track held-out subjects (the ones without a current tracked folder in parallel processes,
    synshot.eval.pool) -> each tracked folder, in order."""
    from synshot.eval.pool import pool_map, pool_size

    tasks = [(Path(s), Path(d), cfg, reuse) for s, d in zip(subjects, tracked_dirs)]
    todo = [t for t in tasks if not (reuse and is_current(t[1] / t[0].name, input_digest(t[0], cfg),
                                                          source_digest(t[0])))]
    n, threads = pool_size(workers, len(todo), threads)
    # one line, not one per subject (a search checks the subjects once per trial), quiet when all are current
    (log.info if todo else log.debug)("%d of %d subjects tracked earlier (same images, masks and track config), "
                                      "reused", len(tasks) - len(todo), len(tasks))
    if todo:
        log.info("tracking %d of %d subjects from their input images (%d workers)", len(todo), len(tasks), n)
    if n > 1 and todo:
        pool_map(_track_one, todo, n, threads)
        tasks = [(*t[:3], True) for t in tasks]  # tracked just now: the loop below only checks them
    return [_track_one(t) for t in tasks]


def run(args, cfg: TrackConfig) -> int:
    subjects = [Path(s) for s in args.subjects]
    dirs = [Path(args.out) if args.out else default_tracked_dir(s) for s in subjects]
    for subject, out in zip(subjects, track_all(subjects, dirs, cfg, args.workers, reuse=not args.no_reuse)):
        log.info("%s -> %s", subject, out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
