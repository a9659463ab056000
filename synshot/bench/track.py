"""Tracking accuracy on synthetic held-out subjects, where the truth is known.

Subjects: validation identity seeds 2001-2010 from ``data_tools.subject`` (frontal neutral,
near-frontal smile, ~65 degree profile; never the test seeds 3001+). The tracker sees only their
images and masks (the masks stand in for a user's masks/ folder: a profile without a detectable face
is fitted from its silhouette, or, with ``turned_faces``, by landmarks read from the silhouette pose).

Comparison rule (documented in docs/tracking.md): the tracker's head frame and the generator's are
both the head model's own frame, and the world frame drops out of the head-to-camera transform
``w2c @ head_pose``. So head rotation and camera distance are compared directly on that transform;
face vertices (face-region skin of the fitted vs true identity + expression, head frame) are compared
after a similarity (Umeyama) alignment, which removes the scale/depth ambiguity of a monocular fit.

Figures (means over photos, with the 90th percentile): ``track_rot_err_deg`` (every photo, whichever cue
fitted it), ``track_rot_err_deg_{landmarks,silhouette}``,
``track_{rot_err_deg,face_vertex_err_mm,cam_dist_err_pct}_{frontal,expressive,profile}`` (means),
``track_face_vertex_err_mm``, ``track_cam_dist_err_pct``, ``track_landmark_rmse_px``,
``track_rot_err_deg_landmark_floor`` (the landmark-fitted photos re-fitted for pose alone with the true
identity, expressions and focal: the error landmarks alone leave; :func:`landmark_pose_floor`),
``track_s_per_photo``, ``track_detected_fraction``, ``track_failed_subjects`` (subjects the tracker refused
with its own error, e.g. no face in any photo: counted and left out, not fatal). The same figures of
``configs/track/predictor.yaml`` (the tracker for renders of the head model) are ``track_predictor_*``.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np

VALIDATION_SEEDS = tuple(range(2001, 2011))
INPUT_KINDS = {"frontal": "000.png", "expressive": "001.png", "profile": "002.png"}   # data_tools.subject inputs
RENDERS_CONFIG = Path(__file__).resolve().parents[2] / "configs/track/predictor.yaml"   # the tracker for renders


def subject_files(folder: Path) -> tuple[dict, dict, dict]:
    """(cameras by file, params by file, the whole params.json) of a subject folder."""
    cams = {f["file"]: f for f in json.loads((folder / "cameras.json").read_text())["frames"]}
    params = json.loads((folder / "params.json").read_text())
    return cams, {f["file"]: f for f in params["frames"]}, params


def compare(truth_dir: Path, tracked_dir: Path, head) -> list[dict]:
    """Per-photo errors of a tracked subject against the generator's truth."""
    import torch

    from synshot.head import IdentityParams
    from synshot.head.template import PART, REGION
    from synshot.track.geometry import head_to_camera, rotation_error_deg, similarity_align

    t_cam, t_par, t_par_all = subject_files(truth_dir)
    f_cam, f_par, f_par_all = subject_files(tracked_dir)
    report = {f["file"]: f for f in json.loads((tracked_dir / "tracking.json").read_text())["frames"]}
    t_id = IdentityParams.from_dict(t_par_all["identity"])
    f_id = IdentityParams.from_dict(f_par_all["identity"])
    t = head.template
    face = np.nonzero((t.region == REGION["face"]) & (t.part == PART["skin"]))[0]
    rows = []
    for name in sorted(t_cam):
        if name not in f_cam:
            continue
        T_true, T_fit = head_to_camera(t_cam[name], t_par[name]), head_to_camera(f_cam[name], f_par[name])
        with torch.no_grad():
            v_true = head.vertices(t_id, torch.tensor(t_par[name]["expression"], dtype=torch.float32)).double().numpy()
            v_fit = head.vertices(f_id, torch.tensor(f_par[name]["expression"], dtype=torch.float32)).double().numpy()
        s, R, tr = similarity_align(v_fit[face], v_true[face])
        err = np.linalg.norm((s * v_fit[face] @ R.T + tr) - v_true[face], axis=1)
        d_true, d_fit = np.linalg.norm(T_true[:3, 3]), np.linalg.norm(T_fit[:3, 3])
        rows.append({"file": name, "cue": report[name]["cue"],
                     "rot_err_deg": rotation_error_deg(T_fit[:3, :3], T_true[:3, :3]),
                     "face_vertex_err_mm": 1000 * float(err.mean()),
                     "cam_dist_err_pct": 100 * abs(d_fit - d_true) / d_true,
                     "landmark_rmse_px": report[name].get("landmark_rmse_px")})
    return rows


def landmark_pose_floor(truth_dir: Path, tracked_dir: Path, head, cfg) -> dict[str, float]:
    """Rotation error (deg) per landmark-fitted photo of a pose-only fit with the true identity,
    expressions and focal length on the same detected landmarks: what landmarks alone allow, so the
    tracker's error can be split into the landmarks' share and the shape/expression fit's share."""
    from synshot.head import IdentityParams
    from synshot.track.fit import PhotoObservation, box_face_size, fit_landmarks
    from synshot.track.geometry import head_to_camera, rotation_error_deg

    t_cam, t_par, t_par_all = subject_files(truth_dir)
    report = [f for f in json.loads((tracked_dir / "tracking.json").read_text())["frames"] if f["cue"] == "landmarks"]
    if not report:
        return {}
    obs = []
    for f in report:
        cam = t_cam[f["file"]]
        obs.append(PhotoObservation(f["file"], cam["width"], cam["height"], np.asarray(f["detected_landmarks"]),
                                    box_face_size(f["face_box"]), float(np.asarray(cam["K"])[0][0])))
    known = (IdentityParams.from_dict(t_par_all["identity"]), np.stack([t_par[f["file"]]["expression"] for f in report]))
    fit = fit_landmarks(head, obs, cfg.fit.model_copy(update={"fit_focal": False}), False, known=known)
    return {o.name: rotation_error_deg(fit.rotations[k], head_to_camera(t_cam[o.name], t_par[o.name])[:3, :3])
            for k, o in enumerate(obs)}


def _stat(values: list[float]) -> tuple[float, float]:
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if len(v) == 0:
        return float("nan"), float("nan")
    return float(v.mean()), float(np.percentile(v, 90))


def run(quick: bool = False, seeds=None, size: int | None = None, spp: int | None = None,
        keep: str | Path | None = None, rendered: str | Path | None = None, overrides: list[str] | None = None,
        config: str | Path | None = None, renders_config: bool = True) -> dict[str, float | int]:
    """Track each validation subject from its images + masks and compare with its truth. ``rendered``:
    a folder of subjects already made by ``data_tools.subject`` (``s<seed>/``, tiny head), reused
    instead of rendering them again; ``keep``: copy each tracked folder there; ``config``: a tracker
    config file (default: the built-in defaults); ``overrides``: tracker config ``key=value`` strings.
    Without ``config`` (and with ``renders_config``) the same subjects are also tracked with
    ``configs/track/predictor.yaml``, the tracker for renders of the head model: its figures are
    ``track_predictor_*``."""
    from data_tools.subject import make_subject
    from synshot.config import load_config
    from synshot.track import TrackConfig

    seeds = list(seeds or (VALIDATION_SEEDS[:1] if quick else VALIDATION_SEEDS))
    size = size or (128 if quick else 256)
    spp = spp or (4 if quick else 16)
    runs = [("track_", config)] + ([("track_predictor_", RENDERS_CONFIG)] if config is None and renders_config else [])
    out: dict[str, float | int] = {}
    with tempfile.TemporaryDirectory(prefix="bench_track_") as tmp:
        tmp = Path(tmp)
        truths = {}
        for seed in seeds:
            truth = Path(rendered) / f"s{seed}" if rendered else None
            if truth is None or not (truth / "params.json").is_file():
                truth = make_subject(seed, tmp / f"s{seed}", size=size, spp=spp, eval_views=0, tiny_head=True)
            truths[seed] = truth
        for prefix, path in runs:
            cfg = load_config(TrackConfig, path, list(overrides or []))
            figures = _track_subjects(truths, cfg, tmp / prefix, Path(keep) / prefix.strip("_") if keep and
                                      len(runs) > 1 else keep)
            out.update({f"{prefix}{k}": v for k, v in figures.items()})
    out["track_image_size"] = size
    return out


def _track_subjects(truths: dict[int, Path], cfg, work: Path, keep: str | Path | None) -> dict[str, float | int]:
    """Figures of one tracker config over rendered subjects (``truths``: seed -> subject folder)."""
    from synshot.cli import UsageError
    from synshot.head import HeadConfig, HeadModel
    from synshot.track import track_subject

    head = HeadModel(HeadConfig.tiny())
    rows, seconds, n_photos, false_warnings, failed = [], 0.0, 0, 0, []
    for seed, truth in truths.items():
        photos = work / f"photos{seed}"
        photos.mkdir(parents=True)
        shutil.copytree(truth / "images", photos / "images")
        shutil.copytree(truth / "masks", photos / "masks")
        start = time.perf_counter()
        try:
            track_subject(photos, work / f"t{seed}", cfg)
        except UsageError as e:    # e.g. no face in any photo: the tracker's own error, counted
            failed.append(seed)
            print(f"[bench track] seed {seed}: not tracked: {e}", flush=True)
            continue
        seconds += time.perf_counter() - start
        n_photos += 3
        report = json.loads((work / f"t{seed}" / "tracking.json").read_text())
        false_warnings += sum("different people" in w for w in report["warnings"])   # one person each
        sub = compare(truth, work / f"t{seed}", head)
        floor = landmark_pose_floor(truth, work / f"t{seed}", head, cfg)
        for r in sub:
            r["seed"] = seed
            r["rot_err_deg_floor"] = floor.get(r["file"])
        rows += sub
        print(f"[bench track] seed {seed}: " + ", ".join(
            f"{r['file']} {r['cue']} rot {r['rot_err_deg']:.1f} deg"
            + (f" (floor {r['rot_err_deg_floor']:.1f})" if r["rot_err_deg_floor"] is not None else "")
            + f", face {r['face_vertex_err_mm']:.1f} mm, dist {r['cam_dist_err_pct']:.1f}%" for r in sub), flush=True)
        if keep:
            dst = Path(keep) / f"s{seed}"
            shutil.rmtree(dst, ignore_errors=True)
            shutil.copytree(work / f"t{seed}", dst)
    lm = [r for r in rows if r["cue"] == "landmarks"]
    sil = [r for r in rows if r["cue"] == "silhouette"]
    out: dict[str, float | int] = {"subjects": len(truths), "failed_subjects": len(failed),
                                   "detected_fraction": len(lm) / max(1, len(rows)),
                                   "s_per_photo": seconds / max(1, n_photos),
                                   "false_different_people_warnings": false_warnings}
    for key, subset, field in (("rot_err_deg_landmarks", lm, "rot_err_deg"), ("rot_err_deg_silhouette", sil, "rot_err_deg"),
                               ("face_vertex_err_mm", rows, "face_vertex_err_mm"),
                               ("face_vertex_err_mm_landmarks", lm, "face_vertex_err_mm"),
                               ("cam_dist_err_pct", rows, "cam_dist_err_pct"),
                               ("landmark_rmse_px", lm, "landmark_rmse_px"),
                               ("rot_err_deg_landmark_floor", lm, "rot_err_deg_floor")):
        mean, p90 = _stat([r[field] for r in subset])
        out[key] = mean
        out[f"{key}_p90"] = p90
    mean, p90 = _stat([r["rot_err_deg"] for r in rows])
    out["rot_err_deg"], out["rot_err_deg_p90"] = mean, p90      # every photo, whichever cue fitted it
    for kind, file in INPUT_KINDS.items():     # the generator's three inputs, whichever cue fitted them
        sub = [r for r in rows if r["file"] == file]
        for field in ("rot_err_deg", "face_vertex_err_mm", "cam_dist_err_pct"):
            out[f"{field}_{kind}"] = _stat([r[field] for r in sub])[0]
    return out


if __name__ == "__main__":
    import argparse

    ap = argparse.ArgumentParser(description="tracking accuracy on validation subjects (docs/tracking.md)")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--seeds", type=int, nargs="*", help="subject seeds (default: validation 2001-2010)")
    ap.add_argument("--config", help="tracker config file (default: the built-in defaults)")
    ap.add_argument("--size", type=int)
    ap.add_argument("--rendered", help="folder of already rendered subjects s<seed>/ to reuse")
    ap.add_argument("--keep", help="copy each tracked subject folder here")
    ap.add_argument("--no-renders-config", action="store_true",
                    help="without --config: skip the second run with configs/track/predictor.yaml")
    ap.add_argument("overrides", nargs="*", help="tracker config key=value")
    a = ap.parse_args()
    print(json.dumps(run(a.quick, a.seeds, a.size, keep=a.keep, rendered=a.rendered, overrides=a.overrides,
                         config=a.config, renders_config=not a.no_renders_config), indent=1))
