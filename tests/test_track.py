"""Face tracker (synshot.track): a real photo tracked and inverted end to end, and every bad input.

The real photo is ``skimage.data.astronaut()`` (NASA, public domain; ships with scikit-image).
dlib's CNN detector is slow on a loaded CPU, so photos are small and tracking runs few steps.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from synshot.config import load_config
from synshot.track.config import TrackConfig

# each tracking run detects with dlib's CNN detector and fits for a few seconds on a free CPU
slow = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[1]
FAST = ["fit.pose_steps=30", "fit.shape_steps=40", "fit.expression_steps=40", "silhouette.steps=30",
        "silhouette.points=800", "detect.work_side=256", "image_side=256"]


def fast_cfg(*extra: str) -> TrackConfig:
    return load_config(TrackConfig, None, FAST + list(extra))


def astronaut(size: int = 256) -> Image.Image:
    from skimage import data

    img = Image.fromarray(data.astronaut())
    return img.crop((96, 16, 336, 256)).resize((size, size), Image.LANCZOS)  # the face, centred


@pytest.fixture(scope="module")
def astronaut_dir(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("photos") / "astro"
    d.mkdir()
    astronaut().save(d / "a.jpg", quality=95)
    return d


@pytest.fixture(scope="module")
def tracked(astronaut_dir, tmp_path_factory):
    from synshot.track import track_subject

    out = tmp_path_factory.mktemp("tracked") / "astro"
    return track_subject(astronaut_dir, out, fast_cfg())


@slow
def test_dlib_finds_the_astronaut():
    from synshot.faces import detect_faces, face_descriptor, landmarks68

    img = np.asarray(astronaut())
    faces = detect_faces(img, upsample=0)
    assert len(faces) >= 1 and faces[0].size > 60
    lm = landmarks68(img, faces[0])
    assert lm.shape == (68, 2)
    l, t, r, b = faces[0].box
    assert (lm[36:48, 1] < lm[48:60, 1].min()).all()          # eyes above the mouth
    d = face_descriptor(img, faces[0])
    assert d.shape == (128,) and np.isfinite(d).all() and np.linalg.norm(d) > 0.1
    from synshot.faces import descriptor_distance

    mirrored = face_descriptor(np.ascontiguousarray(img[:, ::-1]))
    assert descriptor_distance(d, mirrored) < 0.6                    # the same person


@slow
def test_track_writes_a_loadable_subject(tracked):
    from synshot.invert.subject import load_subject

    out = tracked.out_dir
    for name in ("images/a.png", "masks/a.png", "cameras.json", "params.json", "tracking.json", "tracking.png"):
        assert (out / name).is_file(), name
    rep = json.loads((out / "tracking.json").read_text())
    fr = rep["frames"][0]
    assert fr["cue"] == "landmarks" and fr["detector_score"] > 0 and len(fr["face_box"]) == 4
    assert fr["landmark_rmse_px"] < 0.06 * 256       # a real fit, not a placeholder
    # the landmark correction, learned on renders, would move this real face's points by ~10 % of the face
    # (more than nearly all it learned): not used, and recorded
    corr = fr["landmark_correction"]
    assert corr["offset_rms"] > 0.08 and not corr["kept"]
    assert fr["detected_landmarks"] == fr["dlib_landmarks"]
    subject = load_subject(out, size=128)
    assert len(subject.frames) == 1
    mask = np.asarray(Image.open(out / "masks/a.png")) / 255.0
    assert 0.05 < mask.mean() < 0.9                   # GrabCut found a head, not everything or nothing


@slow
def test_track_is_deterministic(astronaut_dir, tracked, tmp_path):
    from synshot.track import track_subject

    again = track_subject(astronaut_dir, tmp_path / "again", fast_cfg())
    a = json.loads((tracked.out_dir / "cameras.json").read_text())
    b = json.loads((again.out_dir / "cameras.json").read_text())
    assert a == b


def _photo_dir(tmp_path: Path, name: str, img: Image.Image, **save) -> Path:
    d = tmp_path / name
    d.mkdir()
    img.save(d / save.pop("fname", "p.png"), **save)
    return d


@slow
def test_exif_rotation_is_honoured(tmp_path):
    from synshot.track import track_subject

    rotated = astronaut().transpose(Image.Transpose.ROTATE_90)      # stored sideways ...
    exif = Image.Exif()
    exif[0x0112] = 6                                                # ... with "rotate 90 CW to view"
    d = _photo_dir(tmp_path, "exif", rotated, fname="p.jpg", exif=exif, quality=95)
    res = track_subject(d, tmp_path / "out", fast_cfg())
    assert res.frames[0]["cue"] == "landmarks"
    written = Image.open(tmp_path / "out/images/p.png")
    assert written.size == (256, 256)
    up = np.asarray(written, dtype=np.float32)
    assert np.abs(up - np.asarray(astronaut(), dtype=np.float32)).mean() < 6    # upright again


@slow
@pytest.mark.parametrize("kind", ["gray", "rgba", "gray16"])
def test_pixel_formats(tmp_path, kind):
    from synshot.track import track_subject

    img = astronaut()
    if kind == "gray":
        img = img.convert("L")
    elif kind == "rgba":
        img = img.convert("RGBA")
    else:
        img = Image.fromarray((np.asarray(img.convert("L"), dtype=np.uint16) * 257).astype(np.uint16))
        assert img.mode.startswith("I;16")
    d = _photo_dir(tmp_path, kind, img)
    res = track_subject(d, tmp_path / "out", fast_cfg())
    assert res.frames[0]["cue"] == "landmarks"


def test_no_face_names_the_file(tmp_path):
    from synshot.track import PhotoError, track_subject

    d = _photo_dir(tmp_path, "empty", Image.new("RGB", (200, 200), (120, 160, 200)), fname="sky.png")
    with pytest.raises(PhotoError, match=r"sky\.png: no face found"):
        track_subject(d, tmp_path / "out", fast_cfg())
    assert not (tmp_path / "out").exists()


@slow
def test_small_face_is_refused(tmp_path):
    from synshot.track import PhotoError, track_subject

    d = _photo_dir(tmp_path, "small", astronaut(256), fname="far.png")
    with pytest.raises(PhotoError, match=r"far\.png: the face is only \d+ px"):
        track_subject(d, tmp_path / "out", fast_cfg("detect.min_face_px=400"))


@slow
def test_several_faces_warns_and_takes_the_largest(tmp_path):
    from synshot.track import track_subject

    canvas = Image.new("RGB", (480, 256), (255, 255, 255))
    canvas.paste(astronaut(256), (0, 0))
    canvas.paste(astronaut(220), (258, 36))
    d = _photo_dir(tmp_path, "two", canvas, fname="group.png")
    res = track_subject(d, tmp_path / "out", fast_cfg("image_side=480", "detect.work_side=480"))
    assert any("group.png" in w and "2 faces" in w for w in res.warnings)
    box = res.frames[0]["face_box"]
    assert box[2] < 260                                   # the big face on the left


@slow
def test_fit_that_does_not_converge_names_photo_and_rmse(astronaut_dir, tmp_path):
    from synshot.track import TrackingError, track_subject

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "tracking.json").write_text("{}")
    (tmp_path / "out" / "keep.txt").write_text("mine")
    with pytest.raises(TrackingError, match=r"a\.jpg: the landmark fit did not converge \(RMSE [\d.]+ px"):
        track_subject(astronaut_dir, tmp_path / "out", fast_cfg("fit.max_rmse=0.0001"))
    assert (tmp_path / "out" / "keep.txt").read_text() == "mine"     # nothing lost


def test_output_folder_with_foreign_files_is_refused(astronaut_dir, tmp_path):
    from synshot.cli import UsageError
    from synshot.track import track_subject

    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "notes.txt").write_text("mine")
    with pytest.raises(UsageError, match="holds files the tracker did not write"):
        track_subject(astronaut_dir, tmp_path / "out", fast_cfg())
    with pytest.raises(UsageError, match="holds the input photos"):
        track_subject(astronaut_dir, astronaut_dir, fast_cfg())
    assert (tmp_path / "out" / "notes.txt").read_text() == "mine"


def test_cli_reports_errors_without_traceback(tmp_path):
    d = _photo_dir(tmp_path, "empty", Image.new("RGB", (64, 64)), fname="black.png")
    r = subprocess.run([sys.executable, "-m", "synshot", "track", str(d), "--out", str(tmp_path / "o"), *FAST],
                       capture_output=True, text=True, cwd=ROOT, timeout=600)
    assert r.returncode == 2, r.stderr
    assert "error:" in r.stderr and "black.png" in r.stderr and "Traceback" not in r.stderr


@slow
def test_astronaut_photo_tracked_and_inverted_end_to_end(astronaut_dir, tmp_path):
    """A folder holding one real photo and nothing else: invert tracks it first, then inverts."""
    import torch

    from synshot.invert.config import InvertConfig
    from synshot.invert.run import run_inversion
    from synshot.model import ModelConfig, SynShotPrior, save_exported
    from tiny_fixtures import TINY_PRIOR

    mcfg = load_config(ModelConfig, None, TINY_PRIOR)
    torch.manual_seed(0)
    prior = save_exported(SynShotPrior(mcfg), mcfg, tmp_path / "prior.safetensors")
    cfg = load_config(InvertConfig, None, [
        f"ckpt={prior}", "image_size=32", "head_mesh=tiny", "progress=false", "tensorboard=false",
        "stage1.steps=2", "stage2.steps=2", "output.video=false", "output.ply=false",
        *[f"track.{o}" for o in FAST]])
    messages: list[str] = []
    metrics = run_inversion(cfg, astronaut_dir, tmp_path / "inv", log=messages.append)
    assert any("tracking them first" in m for m in messages)
    tracked = tmp_path / "inv" / "tracked_subject"
    assert (tracked / "cameras.json").is_file() and (tracked / "tracking.png").is_file()
    saved = json.loads((tmp_path / "inv" / "metrics.json").read_text())
    assert saved["num_inputs"] == 1 and "inputs_id_distance" in saved
    assert metrics["inputs_id_distance_frames"] in (0, 1)


@slow
def test_failed_inversion_leaves_no_hidden_tracked_subject(astronaut_dir, tmp_path):
    """The photos are tracked, then the inversion fails (its prior file is missing): the staged tracked
    subject beside the outputs is removed, and nothing else appears."""
    from synshot.cli import SynshotError
    from synshot.invert.config import InvertConfig
    from synshot.invert.run import run_inversion

    cfg = load_config(InvertConfig, None, [
        f"ckpt={tmp_path / 'missing.safetensors'}", "image_size=32", "head_mesh=tiny", "progress=false",
        "tensorboard=false", *[f"track.{o}" for o in FAST]])
    messages: list[str] = []
    with pytest.raises(SynshotError, match="missing.safetensors"):
        run_inversion(cfg, astronaut_dir, tmp_path / "inv", log=messages.append)
    assert any("tracking them first" in m for m in messages)       # it did track before failing
    assert sorted(p.name for p in tmp_path.iterdir()) == [], sorted(p.name for p in tmp_path.iterdir())


def test_identity_warning_compares_only_near_frontal_pairs():
    """Descriptor distances above the threshold warn for two near-frontal photos, not when one photo is
    turned (by its fitted pose, or by where its nose sits in its mask outline)."""
    from synshot.track.api import CUE_LANDMARKS, _Item, _pairwise_identity, nose_offset_in_mask
    from synshot.track.photos import Photo

    lm = np.zeros((68, 2))
    lm[36:48, 1], lm[48:68, 1], lm[30] = 40, 60, (50, 50)
    centred = np.zeros((100, 100))
    centred[:, 20:81] = 1
    turned = np.zeros((100, 100))
    turned[:, 40:101] = 1                                    # the outline extends behind the face
    assert nose_offset_in_mask(lm, centred) < 0.05 and nose_offset_in_mask(lm, turned) > 0.3

    def item(name, yaw_deg, mask, descriptor):
        c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
        it = _Item(Photo(Path(name), np.zeros((4, 4, 3)), None, None, None), np.zeros((4, 4, 3)), 1.0,
                   {"file": name, "cue": CUE_LANDMARKS}, landmarks=lm, descriptor=np.asarray(descriptor, float),
                   mask=mask)
        it.R = np.array([[c, 0, s], [0, -1, 0], [s, 0, -c]])   # head facing the camera, turned by yaw
        return it

    cfg = TrackConfig()
    frontal = [item("a.png", 0, centred, [0, 0]), item("b.png", 10, None, [0.8, 0])]
    warnings: list[str] = []
    pairs = _pairwise_identity(frontal, cfg, warnings)
    assert pairs[0]["compared"] and len(warnings) == 1 and "a.png" in warnings[0] and "b.png" in warnings[0]
    for other in (item("c.png", 60, None, [0.8, 0]), item("d.png", 5, turned, [0.8, 0])):
        warnings = []
        pairs = _pairwise_identity([frontal[0], other], cfg, warnings)
        assert not pairs[0]["compared"] and pairs[0]["distance"] == 0.8 and warnings == []


def test_shipped_track_configs():
    """configs/track/default.yaml is the built-in default; predictor.yaml changes only what it documents."""
    default = load_config(TrackConfig, "configs/track/default.yaml")
    assert default == TrackConfig()
    predictor = load_config(TrackConfig, "configs/track/predictor.yaml").model_dump()
    changed = {(section, key) for section, values in predictor.items() if isinstance(values, dict)
               for key, value in values.items() if default.model_dump()[section][key] != value}
    assert changed == {("detect", "correction"), ("detect", "tta_shift"), ("profile_check", "max_nose_offset"),
                       ("fit", "jaw_weight"), ("fit", "robust_sigma"), ("fit", "shape_prior"),
                       ("turned_faces", "enabled")}
    assert predictor["detect"]["correction"] == "shape_predictor"
    with pytest.raises(ValueError, match="turned_faces.enabled=true needs detect.correction=shape_predictor"):
        load_config(TrackConfig, None, ["turned_faces.enabled=true"])


def test_profile_check_reads_the_nose_of_the_points_the_fit_uses():
    """A masked photo goes to the silhouette cue when the nose of the points its fit uses (the landmark
    predictor's, once they replace dlib's) sits beyond profile_check.max_nose_offset off the outline's
    centre while its pose faces the camera within profile_check.max_angle_deg."""
    from synshot.track.api import CUE_LANDMARKS, CUE_SILHOUETTE, _Item, _reject_profiles
    from synshot.track.photos import Photo

    def points(nose_x):
        lm = np.zeros((68, 2))
        lm[36:48, 1], lm[48:68, 1], lm[30] = 40, 60, (nose_x, 50)
        return lm

    mask = np.zeros((100, 100))
    mask[:, 20:81] = 1                                        # outline centre x = 50.5

    def items(nose_x, corrected_nose_x=None, yaw_deg=10.0):
        out = []
        for name, nose in (("a.png", 50.0), ("b.png", nose_x)):
            it = _Item(Photo(Path(name), np.zeros((4, 4, 3)), None, None, None), np.zeros((4, 4, 3)), 1.0,
                       {"file": name, "cue": CUE_LANDMARKS}, landmarks=points(nose), mask=mask)
            if corrected_nose_x is not None:
                it.corrected_landmarks, it.correction_kept = points(nose if name == "a.png" else corrected_nose_x), True
            c, s = np.cos(np.radians(yaw_deg)), np.sin(np.radians(yaw_deg))
            it.R = np.array([[c, 0, s], [0, -1, 0], [s, 0, -c]])
            out.append(it)
        return out

    def cues(its, *overrides):
        warnings: list[str] = []
        _reject_profiles(its, load_config(TrackConfig, None, list(overrides)), warnings)
        return [it.record["cue"] for it in its], warnings

    moved, warnings = cues(items(66.0))                                               # nose 0.25 off: turned
    assert moved == [CUE_LANDMARKS, CUE_SILHOUETTE] and len(warnings) == 1 and "b.png" in warnings[0]
    assert cues(items(60.0))[0] == [CUE_LANDMARKS] * 2                                # 0.16: near-frontal
    assert cues(items(66.0), "profile_check.max_nose_offset=0.3")[0] == [CUE_LANDMARKS] * 2
    assert cues(items(66.0, yaw_deg=40.0))[0] == [CUE_LANDMARKS] * 2                  # the fit says turned
    assert cues(items(66.0, yaw_deg=40.0), "profile_check.max_angle_deg=90")[0][1] == CUE_SILHOUETTE
    assert cues(items(50.0, corrected_nose_x=66.0))[0][1] == CUE_SILHOUETTE           # the fit's points decide
    assert cues(items(66.0, corrected_nose_x=50.0))[0] == [CUE_LANDMARKS] * 2


def test_silhouette_fit_is_kept_off_poses_that_show_the_back_of_the_head():
    import math

    import torch

    from synshot.track.geometry import axis_angle_to_matrix
    from synshot.track.silhouette import facing_penalty

    facing = axis_angle_to_matrix(torch.tensor([math.pi, 0.0, 0.0]))
    pen = [float(facing_penalty(facing @ axis_angle_to_matrix(torch.tensor([0.0, math.radians(y), 0.0])), 95.0))
           for y in (0, 65, -90, 120, 180)]
    assert pen[:3] == [0.0, 0.0, 0.0] and 0 < pen[3] < pen[4]


@slow
def test_track_bench_counts_a_subject_the_tracker_refuses(tmp_path):
    """A bench subject without a face in any photo is counted in track_failed_subjects, not a crash."""
    from data_tools.subject import make_subject
    from synshot.bench import track as bench

    folder = make_subject(2001, tmp_path / "s2001", size=64, spp=1, eval_views=0, tiny_head=True)
    for img in (folder / "images").iterdir():
        Image.new("RGB", (64, 64), (128, 128, 128)).save(img)
    figures = bench.run(seeds=[2001], size=64, rendered=tmp_path)
    for prefix in ("track_", "track_predictor_"):                       # both trackers, on the same renders
        assert figures[f"{prefix}failed_subjects"] == 1 and figures[f"{prefix}subjects"] == 1
        assert figures[f"{prefix}detected_fraction"] == 0
