"""The tracker's learned landmark correction (synshot.track.landmark_correction, data_tools.landmark_correction):
the regression itself, its file, the shipped correction on an identity it never saw, and the command
that rebuilds it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synshot.head.landmarks import INNER, JAW
from synshot.track.landmark_correction import (SHIPPED, LandmarkCorrection, grouped_cv_error, layout_features,
                                               load_correction, select_and_fit)


def _toy_pairs(n: int = 240, seed: int = 0):
    """Features with a smooth nonlinear map to the targets, in groups of four (an 'identity' each)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 136))
    mix = rng.normal(size=(136, 102)) / 12
    y = np.tanh(x @ mix) * 0.05 + 0.01 * x[:, :1] + rng.normal(scale=0.002, size=(n, 102))
    return x, y, np.repeat(np.arange(n // 4), 4)


def test_regression_beats_no_correction_on_held_out_groups():
    x, y, groups = _toy_pairs()
    none = float(np.sqrt((y ** 2).sum(1).mean() / len(INNER)))
    cv = grouped_cv_error(x, y, groups, folds=4, linear_lam=10.0, kernel_lam=0.1, gamma=0.3)
    assert cv < 0.6 * none


def test_selection_records_its_cross_validation_and_fits_all_pairs():
    x, y, groups = _toy_pairs()
    model = select_and_fit(x, y, groups, folds=3, linear_lams=(10.0,), kernel_lams=(0.1, 1.0), gammas=(0.3,),
                           log=lambda msg: None)
    assert model.meta["pairs"] == len(x) and model.meta["identities"] == 60
    assert model.meta["cv_rms"] < model.meta["uncorrected_rms"]
    assert model.meta["kernel_lam"] in (0.1, 1.0) and len(model.anchors) == len(x)


def test_apply_moves_inner_points_only():
    x, y, groups = _toy_pairs()
    model = LandmarkCorrection.fit(x, y, linear_lam=10.0, kernel_lam=0.1, gamma=0.3)
    rng = np.random.default_rng(1)
    pts = np.stack([rng.uniform(40, 90, 68), rng.uniform(40, 90, 68)], 1)
    box = (30.0, 30.0, 100.0, 100.0)
    out = model.apply(pts, box)
    assert np.array_equal(out[list(JAW)], pts[list(JAW)])
    feat, _, size = layout_features(pts, box)
    assert size == pytest.approx(70.0)
    np.testing.assert_allclose(out[list(INNER)] - pts[list(INNER)], model.predict(feat)[0].reshape(-1, 2) * size)


def test_file_round_trip_and_bad_files(tmp_path):
    x, y, groups = _toy_pairs()
    model = LandmarkCorrection.fit(x, y, linear_lam=10.0, kernel_lam=0.1, gamma=0.3, meta={"note": "toy"})
    path = tmp_path / "c.npz"
    model.save(path)
    again = LandmarkCorrection.load(path)
    assert again.meta == {"note": "toy"} and again.gamma == model.gamma
    np.testing.assert_allclose(again.predict(x[:5]), model.predict(x[:5]), atol=1e-4)   # stored as float32
    assert [p.name for p in tmp_path.iterdir()] == ["c.npz"]                               # no partial file left

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ValueError, match="truncated.npz.*synshot track correction"):
        LandmarkCorrection.load(truncated)
    wrong = LandmarkCorrection(**{**model.__dict__, "linear": model.linear[:, :10]})
    wrong.save(tmp_path / "wrong.npz")
    with pytest.raises(ValueError, match=r"wrong.npz.*\['linear'\].*wrong shape"):
        LandmarkCorrection.load(tmp_path / "wrong.npz")


def test_shipped_correction_was_learned_on_calibration_identities_only():
    model = load_correction()
    assert load_correction(str(SHIPPED)) is model                    # loaded once per process
    first, last = model.meta["seeds"]
    assert last < 2001                                               # no validation (2001-2010) or test (3001+) seed
    assert model.meta["cv_rms"] < 0.75 * model.meta["uncorrected_rms"]
    assert (SHIPPED.with_suffix(".md")).is_file()                     # its model card


@pytest.fixture(scope="module")
def unseen_subjects(tmp_path_factory):
    """Three identities the correction never saw (seeds 1901-1903), rendered as held-out subjects are."""
    from data_tools.subject import make_subject

    root = tmp_path_factory.mktemp("unseen")
    return [make_subject(seed, root / f"s{seed}", size=128, spp=8, eval_views=4, eval_expressions=1, tiny_head=True)
            for seed in (1901, 1902, 1903)]


@pytest.mark.slow
def test_shipped_correction_brings_dlib_closer_to_the_head_models_landmarks(unseen_subjects):
    """The corrected points lie closer to where the head model's landmarks truly project than dlib's do."""
    from data_tools.landmark_correction import pairs_from_subject
    from synshot.head import HeadConfig, HeadModel
    from synshot.track.config import DetectConfig
    from synshot.track.fit import LandmarkHead

    lhead = LandmarkHead(HeadModel(HeadConfig.tiny()))
    model = load_correction()
    before, after = [], []
    for folder in unseen_subjects:
        for p in pairs_from_subject(folder, DetectConfig(), lhead):
            inner = list(INNER)
            before.append(((p["dlib"] - p["true"])[inner] ** 2).sum(1))
            after.append(((model.apply(p["dlib"], p["box"]) - p["true"])[inner] ** 2).sum(1))
    assert len(before) >= 8
    rms_before, rms_after = np.sqrt(np.mean(before)), np.sqrt(np.mean(after))
    assert rms_after < 0.85 * rms_before, (rms_before, rms_after)


@pytest.mark.slow
def test_shipped_predictor_finds_the_head_models_landmarks_closer_than_dlib(unseen_subjects):
    """The predictor's 68 points lie closer to the fit's targets at the true pose than dlib's do, the
    inner points and the jaw contour alike (identities it never saw); on the ~64 degree profile, where
    dlib lays out a frontal face, by far."""
    from data_tools.landmark_correction import FRAMES, pairs_from_subject
    from synshot.head import HeadConfig, HeadModel
    from synshot.track.config import DetectConfig
    from synshot.track.fit import LandmarkHead
    from synshot.track.landmark_predictor import load_predictor, point_rms

    lhead = LandmarkHead(HeadModel(HeadConfig.tiny()))
    predictor = load_predictor()
    rms = {"dlib_inner": [], "inner": [], "dlib_jaw": [], "jaw": []}
    profile = {"dlib_inner": [], "inner": []}
    for folder in unseen_subjects:
        for p in pairs_from_subject(folder, DetectConfig(), lhead, images=True, frames=FRAMES + ("002.png",)):
            np.testing.assert_allclose(p["model"][list(INNER)], p["true"][list(INNER)], atol=1e-3)
            points = predictor.apply(p["image"], p["box"])
            if p["frame"] == "002.png":
                profile["inner"].append(point_rms(points, p["model"], p["box"], INNER))
                profile["dlib_inner"].append(point_rms(p["dlib"], p["model"], p["box"], INNER))
                continue
            for key, idx in (("inner", INNER), ("jaw", JAW)):
                rms[key].append(point_rms(points, p["model"], p["box"], idx))
                rms["dlib_" + key].append(point_rms(p["dlib"], p["model"], p["box"], idx))
    assert len(rms["inner"]) >= 8 and len(profile["inner"]) >= 1
    mean = {k: float(np.mean(v)) for k, v in rms.items()}
    assert mean["inner"] < 0.6 * mean["dlib_inner"] and mean["jaw"] < mean["dlib_jaw"], mean
    assert np.mean(profile["inner"]) < 0.3 * np.mean(profile["dlib_inner"]), profile


def _near_frontal_photos(subject, dest):
    import shutil

    dest.mkdir()
    for name in ("000.png", "001.png"):
        shutil.copy(subject / "images" / name, dest / name)
    return dest


@pytest.mark.slow
def test_tracker_keeps_the_correction_on_a_head_model_face_and_drops_it_when_the_fit_disagrees(unseen_subjects,
                                                                                              tmp_path):
    from synshot.config import load_config
    from synshot.track import track_subject
    from synshot.track.config import TrackConfig

    photos = _near_frontal_photos(unseen_subjects[0], tmp_path / "photos")

    def track(name, *overrides):
        track_subject(photos, tmp_path / name, load_config(TrackConfig, None, list(overrides)))
        return (json.loads((tmp_path / name / "tracking.json").read_text())["frames"],
                json.loads((tmp_path / name / "cameras.json").read_text()))

    frames, _ = track("on")
    for fr in frames:
        det, raw = np.asarray(fr["detected_landmarks"]), np.asarray(fr["dlib_landmarks"])
        corr = fr["landmark_correction"]
        assert corr["kept"] and corr["rmse_ratio"] <= 1.25 and corr["offset_rms"] <= 0.08
        assert np.abs(det[list(INNER)] - raw[list(INNER)]).max() > 0.1      # the fit used the corrected points
        np.testing.assert_array_equal(det[list(JAW)], raw[list(JAW)])
    dropped, cams_dropped = track("dropped", "detect.max_correction_rmse_ratio=0.5")
    off, cams_off = track("off", "detect.correct_landmarks=false")
    assert all(not fr["landmark_correction"]["kept"] for fr in dropped)
    assert all("landmark_correction" not in fr for fr in off)
    small = track("small", "detect.max_correction=0.001")[0]                 # every photo's offset is larger
    assert all(not fr["landmark_correction"]["kept"] and "rmse_ratio" not in fr["landmark_correction"] for fr in small)
    assert cams_dropped == cams_off                                          # dropped = never applied
    for a, b in zip(dropped, off):
        assert a["detected_landmarks"] == a["dlib_landmarks"] == b["detected_landmarks"]


@pytest.mark.slow
def test_tracker_fits_the_predictors_points_when_asked(unseen_subjects, tmp_path):
    from synshot.config import load_config
    from synshot.track import track_subject
    from synshot.track.config import TrackConfig

    photos = _near_frontal_photos(unseen_subjects[1], tmp_path / "photos")
    # the kernel ridge correction's gates do not apply: the predictor's points replace dlib's outright
    track_subject(photos, tmp_path / "out", load_config(TrackConfig, "configs/track/predictor.yaml", [
        "detect.max_correction=0.001", "detect.max_correction_rmse_ratio=0.01"]))
    for fr in json.loads((tmp_path / "out" / "tracking.json").read_text())["frames"]:
        corr = fr["landmark_correction"]
        assert corr["method"] == "shape_predictor" and corr["kept"] and "rmse_ratio" not in corr, corr
        det, raw = np.asarray(fr["detected_landmarks"]), np.asarray(fr["dlib_landmarks"])
        assert np.abs(det[list(JAW)] - raw[list(JAW)]).max() > 0.1        # the jaw was re-read too


def test_calibration_seeds_may_not_touch_held_out_subjects():
    from data_tools.landmark_correction import CorrectionToolConfig

    CorrectionToolConfig(first_seed=101, identities=400)
    CorrectionToolConfig(first_seed=561, identities=1440)
    for bad in ({"first_seed": 1995, "identities": 10}, {"first_seed": 2500, "identities": 600}):
        with pytest.raises(ValueError, match="overlap the validation"):
            CorrectionToolConfig(**bad)
    with pytest.raises(ValueError, match="overlap the tracker's tuning identities"):
        CorrectionToolConfig(first_seed=101, identities=1900)


@pytest.mark.slow
def test_correction_command_learns_and_writes_a_loadable_file(tmp_path):
    from data_tools.landmark_correction import main

    out = tmp_path / "c.npz"
    assert main(["--out", str(out), "identities=4", "first_seed=1911", "folds=2", "spp=4", "workers=2",
                 "min_identities=3"]) == 0
    model = LandmarkCorrection.load(out)
    assert model.meta["seeds"] == [1911, 1914] and model.meta["identities"] >= 3
    assert json.loads(json.dumps(model.meta))["frames"][0] == "000.png"
