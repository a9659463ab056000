"""Turned faces the detector misses: boxes placed from points, and a profile read from its silhouette pose."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from synshot.track.landmark_correction import LandmarkModelError
from synshot.track.landmark_predictor import SHIPPED, box_features, box_from_points, fit_box_map, load_box_map


def test_box_map_learns_where_the_detector_puts_its_box():
    """A box that is a linear function of the points' centre and extent is recovered exactly, and the
    map applies to new points."""
    rng = np.random.default_rng(0)
    truth = rng.normal(size=(10, 4))
    samples = []
    for _ in range(40):
        points = rng.uniform(20, 100, size=(68, 2))
        samples.append({"model": points, "box": box_features(points) @ truth})
    box_map = fit_box_map(samples)
    np.testing.assert_allclose(box_map, truth, atol=1e-8)
    new = rng.uniform(20, 100, size=(68, 2))
    np.testing.assert_allclose(box_from_points(new, box_map), box_features(new) @ truth, atol=1e-8)


def test_shipped_box_map_boxes_a_face_like_the_detector():
    """The shipped record's map puts a square box on the head model's frontal landmarks, about as wide as
    the jaw and centred on the face, as dlib's detector does."""
    from synshot.head import HeadConfig, HeadModel, IdentityParams
    from synshot.track.turned_face import neutral_landmarks, project_points

    facing = np.diag([1.0, -1.0, -1.0])                               # head y up, z forward -> camera
    points = project_points(neutral_landmarks(HeadModel(HeadConfig.tiny()), IdentityParams.mean()), facing,
                            np.array([0.0, 0.0, 0.8]), 256.0, 128, 128)
    left, top, right, bottom = box_from_points(points, load_box_map())
    width, jaw = right - left, np.ptp(points[:17, 0])
    assert abs((bottom - top) / width - 1) < 0.05 and 0.9 < width / jaw < 1.3
    centre = points[17:].mean(0)
    assert np.abs(np.array([(left + right) / 2, (top + bottom) / 2]) - centre).max() < 0.1 * width


def test_a_predictor_without_a_box_map_names_its_record_and_the_fix(tmp_path):
    path = tmp_path / "p.dat"
    shutil.copy(SHIPPED, path)
    with pytest.raises(LandmarkModelError, match=r"p\.json.*box_from_points.*turned_faces.enabled=false"):
        load_box_map(str(path))                                       # no record at all
    record = json.loads(SHIPPED.with_suffix(".json").read_text())
    path.with_suffix(".json").write_text(json.dumps({k: v for k, v in record.items() if k != "box_from_points"}))
    with pytest.raises(LandmarkModelError, match=r"p\.json.*box_from_points.*synshot track predictor"):
        load_box_map(str(path))
    path.with_suffix(".json").write_text(json.dumps({**record, "box_from_points": [[1.0] * 4] * 3}))
    with pytest.raises(LandmarkModelError, match=r"p\.json.*shape \(3, 4\)"):
        load_box_map(str(path))


def _undetected_photo(tmp_path, seed: int, spp: int, photo: str):
    """A rendered subject (truth) and a photos folder of its images and masks, where dlib finds no face in
    ``photo`` (asserted: the case the tests below cover)."""
    from PIL import Image

    from data_tools.subject import make_subject
    from synshot.track import TrackConfig
    from synshot.track.api import detect_face

    truth = make_subject(seed, tmp_path / "truth", size=128, spp=spp, eval_views=0, tiny_head=True)
    photos = tmp_path / "photos"
    shutil.copytree(truth / "images", photos / "images")
    shutil.copytree(truth / "masks", photos / "masks")
    rgb = np.asarray(Image.open(truth / "images" / photo).convert("RGB"), dtype=np.float32) / 255
    assert detect_face(rgb, TrackConfig().detect)[1] is None
    return truth, photos


def _track_photo(truth, photos, out, photo: str, *overrides: str) -> tuple[dict, float]:
    """Track ``photos`` with configs/track/predictor.yaml: ``photo``'s tracking.json record and rotation error."""
    from synshot.bench.track import compare
    from synshot.config import load_config
    from synshot.head import HeadConfig, HeadModel
    from synshot.track import TrackConfig, track_subject

    out = track_subject(photos, out, load_config(TrackConfig, "configs/track/predictor.yaml", list(overrides))).out_dir
    frame = {f["file"]: f for f in json.loads((out / "tracking.json").read_text())["frames"]}[photo]
    return frame, {r["file"]: r for r in compare(truth, out, HeadModel(HeadConfig.tiny()))}[photo]["rot_err_deg"]


@pytest.mark.slow
def test_a_profile_the_detector_misses_is_read_from_its_silhouette_pose(tmp_path):
    """A rendered ~65 degree profile that dlib does not detect: with predictor.yaml the predictor reads its
    landmarks from boxes placed by the silhouette pose, and the landmark pose is within a few degrees of
    the truth; without it the photo keeps its (looser) silhouette pose."""
    truth, photos = _undetected_photo(tmp_path, 549, 16, "002.png")
    errors = {}
    for enabled in (True, False):
        frame, errors[enabled] = _track_photo(truth, photos, tmp_path / f"tracked_{enabled}", "002.png",
                                              f"turned_faces.enabled={str(enabled).lower()}")
        if enabled:
            assert frame["cue"] == "landmarks" and frame["box_source"] == "silhouette pose"
            assert frame["turned_face"]["kept"] and frame["turned_face"]["agreeing"] >= 2
            assert frame["turned_face"]["facing_deg"] > 45 and len(frame["detected_landmarks"]) == 68
        else:
            assert frame["cue"] == "silhouette" and "turned_face" not in frame
    assert errors[True] < 6.0 and errors[True] < errors[False], errors


@pytest.mark.slow
def test_a_near_frontal_face_the_detector_misses_is_read_without_the_facing_bound(tmp_path):
    """A noisy (4 samples per pixel) frontal render that dlib does not detect, its skin centred in the
    mask: the facing bound does not apply, and the predictor's points give a near-frontal pose."""
    truth, photos = _undetected_photo(tmp_path, 546, 4, "000.png")
    frame, error = _track_photo(truth, photos, tmp_path / "tracked", "000.png")
    assert frame["face_side"] == 0 and frame["cue"] == "landmarks" and frame["box_source"] == "silhouette pose"
    assert frame["turned_face"]["facing_deg"] < 30
    assert error < 6.0, error
