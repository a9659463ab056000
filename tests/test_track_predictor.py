"""The tracker's landmark predictor (synshot.track.landmark_predictor, data_tools.landmark_predictor):
the crop it reads faces through, training on a toy task, its file, and the shipped predictor's record."""

from __future__ import annotations

import json

import numpy as np
import pytest

from synshot.head.landmarks import MIRROR
from synshot.track.averaged_reads import augmented_boxes, averaged_read, unmirror
from synshot.track.landmark_predictor import (BOX_PX, REBUILD, SHIPPED, LandmarkPredictor, face_crop, load_predictor,
                                              mirrored, point_rms, train, training_record)


def test_face_crop_maps_points_both_ways_and_pads_beyond_the_border():
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (90, 120, 3), dtype=np.uint8)
    for box in ((40.0, 20.0, 80.0, 60.0), (-10.0, 50.0, 30.0, 95.0)):      # the second leaves the photo
        crop = face_crop(image, box)
        left, top, right, bottom = crop.box
        assert np.sqrt((right - left) * (bottom - top)) == pytest.approx(BOX_PX, rel=0.02)
        pts = rng.uniform(0, 100, (68, 2))
        np.testing.assert_allclose(crop.to_photo(crop.to_crop(pts)), pts, atol=1e-9)
        corner = crop.to_crop(np.array([[box[0], box[1]]]))[0]
        np.testing.assert_allclose(corner, (left, top), atol=1e-9)
    # a pixel of the photo lands where the crop says: the box centre's intensity is the photo's there
    flat = np.zeros((90, 120, 3), np.uint8)
    flat[50:56, 60:66] = 255
    crop = face_crop(flat, (40.0, 30.0, 90.0, 80.0))
    x, y = crop.to_crop(np.array([[63.0, 53.0]]))[0]
    assert crop.image[int(y), int(x)] > 200


def test_mirror_twice_is_the_identity():
    rng = np.random.default_rng(1)
    image = rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)
    pts = rng.uniform(0, 40, (68, 2))
    box = (5.0, 6.0, 30.0, 33.0)
    im1, box1, pts1 = mirrored(image, box, pts)
    assert box1 == (20.0, 6.0, 45.0, 33.0)
    np.testing.assert_allclose(pts1[MIRROR][:, 0], 50 - pts[:, 0])
    im2, box2, pts2 = mirrored(im1, box1, pts1)
    assert np.array_equal(im2, image) and box2 == box
    np.testing.assert_allclose(pts2, pts)


def test_augmented_boxes_move_the_box_by_the_shift_along_each_axis_and_in_scale():
    boxes = np.array(augmented_boxes((10.0, 20.0, 50.0, 80.0), 0.05))
    assert boxes.shape == (7, 4) and tuple(boxes[0]) == (10.0, 20.0, 50.0, 80.0)
    centres, sizes = (boxes[:, :2] + boxes[:, 2:]) / 2, boxes[:, 2:] - boxes[:, :2]
    np.testing.assert_allclose(centres[1:5] - centres[0], [[-2, 0], [2, 0], [0, -3], [0, 3]], atol=1e-12)
    np.testing.assert_allclose(sizes[1:5], np.tile([40.0, 60.0], (4, 1)), atol=1e-12)
    np.testing.assert_allclose(sizes[5:] / sizes[0], [[np.exp(0.05)] * 2, [np.exp(-0.05)] * 2])
    np.testing.assert_allclose(centres[5:], np.tile(centres[0], (2, 1)), atol=1e-12)


@pytest.mark.parametrize("reader", ["head_model_predictor", "dlib_ibug"])
def test_averaged_reads_are_exactly_mirror_symmetric(reader):
    """Test-time augmentation reads every box as is and mirrored, over a set of boxes that mirrors into
    itself, so the mirror image's points are the photo's points mirrored; one read is not."""
    from synshot.faces import landmarks68
    from synshot.faces.dlib_models import Face

    read = load_predictor().read_once if reader == "head_model_predictor" else (
        lambda image, box: landmarks68(image, Face(box, 1.0)))
    rng = np.random.default_rng(3)
    image = rng.integers(0, 255, (96, 96, 3), dtype=np.uint8)
    box = (20.0, 24.0, 70.0, 74.0)
    flipped, flipped_box, _ = mirrored(image, box, np.zeros((68, 2)))
    averaged = averaged_read(read, image, box, 0.02)
    np.testing.assert_allclose(unmirror(averaged_read(read, flipped, flipped_box, 0.02), 96), averaged, atol=1e-6)
    one = averaged_read(read, image, box, 0.0)
    np.testing.assert_array_equal(one, read(image, box))
    assert np.abs(unmirror(read(flipped, flipped_box), 96) - one).max() > 0.1
    assert 0.01 < np.abs(averaged - one).mean() < 10        # an average near the single read


def _blob_samples(n: int, seed: int):
    """A bright disc at a random place inside a fixed box; the 68 target points ride on the disc, so
    only the pixels (not the box) say where they are."""
    rng = np.random.default_rng(seed)
    template = np.stack([np.cos(np.linspace(0, 2 * np.pi, 68, endpoint=False)),
                         np.sin(np.linspace(0, 2 * np.pi, 68, endpoint=False))], 1) * 8
    yy, xx = np.mgrid[0:64, 0:64] + 0.5
    out = []
    for _ in range(n):
        centre = np.array([32.0, 32.0]) + rng.uniform(-7, 7, 2)
        image = np.clip(255 * np.exp(-((xx - centre[0]) ** 2 + (yy - centre[1]) ** 2) / 60.0), 0, 255)
        out.append({"image": np.repeat(image[..., None], 3, 2).astype(np.uint8), "box": (12.0, 12.0, 52.0, 52.0),
                    "model": template + centre})
    return out, template


def test_training_learns_points_from_the_pixels_and_the_file_round_trips(tmp_path):
    samples, template = _blob_samples(60, 0)
    held, _ = _blob_samples(20, 1)
    predictor = train(samples, {"num_trees_per_cascade_level": 30, "cascade_depth": 6, "oversampling_amount": 5,
                                "num_threads": 1, "random_seed": "0"}, mirror=False)   # a ring is no face
    every = range(68)
    learned = np.mean([point_rms(predictor.apply(s["image"], s["box"]), s["model"], s["box"], every) for s in held])
    fixed = np.mean([point_rms(template + 32.0, s["model"], s["box"], every) for s in held])   # the box's centre
    assert learned < 0.5 * fixed, (learned, fixed)

    path = tmp_path / "p.dat"
    predictor.save(path)
    assert [p.name for p in tmp_path.iterdir()] == ["p.dat"]                   # no partial file left
    again = LandmarkPredictor.load(path)
    np.testing.assert_array_equal(again.apply(held[0]["image"], held[0]["box"]),
                                  predictor.apply(held[0]["image"], held[0]["box"]))

    truncated = tmp_path / "truncated.dat"
    truncated.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="truncated.dat.*synshot track predictor"):
        LandmarkPredictor.load(truncated)
    with pytest.raises(ValueError, match="missing.dat.*no landmark predictor.*kernel_ridge"):
        LandmarkPredictor.load(tmp_path / "missing.dat")
    assert "synshot track predictor" in REBUILD


def test_shipped_predictor_was_trained_on_calibration_identities_only():
    record = training_record()
    first, last = record["seeds"]
    assert last < 2001                                               # no validation (2001-2010) or test (3001+) seed
    held = record["held_out"]
    assert held["inner"] < 0.5 * held["dlib_inner"] and held["jaw"] < held["dlib_jaw"]
    # every subject photo, the ~64 degree profile input included, where dlib's points are far off
    assert {"000.png", "001.png", "002.png"} <= set(record["frames"]) <= set(held["by_frame"])
    profile = held["by_frame"]["002.png"]
    assert profile["photos"] > 0 and profile["inner"] < 0.2 * profile["dlib_inner"]
    # its distance from dlib's points on real faces is measured and recorded (docs: it is not for photos of people)
    assert record["real_faces"]["faces"] >= 1 and record["real_faces"]["inner"] > 0
    assert SHIPPED.with_suffix(".md").is_file()                      # its model card
    assert LandmarkPredictor.load(SHIPPED).path == SHIPPED


@pytest.mark.slow
def test_predictor_command_trains_measures_and_writes_a_loadable_file(tmp_path):
    from data_tools.landmark_predictor import main

    out = tmp_path / "p.dat"
    assert main(["--out", str(out), "identities=3", "first_seed=1911", "spp=4", "workers=2", "min_identities=2",
                 "trees=5", "cascade_depth=2", "oversampling=2", "holdout=0.34"]) == 0
    LandmarkPredictor.load(out)
    record = json.loads(out.with_suffix(".json").read_text())
    assert record["seeds"] == [1911, 1913] and record["identities"] >= 2
    assert record["held_out"]["identities"] == 1 and record["options"]["num_trees_per_cascade_level"] == 5
    assert set(record["held_out"]["by_frame"]) <= set(record["frames"]) and "002.png" in record["frames"]
    assert record["real_faces"]["faces"] == len(record["real_faces"]["per_face"]) >= 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.dat", "p.json"]


def test_tracker_names_a_bad_predictor_file_and_the_fix(tmp_path, capsys):
    """A truncated predictor file is a clean error (exit 3, the file and the command that rebuilds it),
    not a traceback; nothing is written to the output folder."""
    from PIL import Image
    from skimage import data

    from data_tools.track import main

    photos = tmp_path / "photos"
    photos.mkdir()
    Image.fromarray(data.astronaut()).crop((96, 16, 336, 256)).save(photos / "a.png")   # the face
    bad = tmp_path / "bad.dat"
    bad.write_bytes(SHIPPED.read_bytes()[:1000])
    out = tmp_path / "out"
    assert main([str(photos), "--out", str(out), "detect.correction=shape_predictor",
                 f"detect.predictor_file={bad}"]) == 3
    err = capsys.readouterr().err
    assert "bad.dat: not a readable landmark predictor" in err and "synshot track predictor" in err
    assert "Traceback" not in err and not out.exists()


def test_real_face_check_measures_distance_from_dlibs_points():
    """The bundled real photos hold faces (the astronaut's among them); a predictor that returns dlib's
    own points agrees exactly, one shifted by a tenth of each face size is 0.1 off."""
    from data_tools.real_faces import dlib_agreement, real_faces
    from synshot.track.fit import box_face_size

    faces = real_faces()
    assert len(faces) >= 2 and any(f["name"].startswith("astronaut") for f in faces)
    by_box = {f["box"]: f for f in faces}

    class Echo:
        def __init__(self, shift):
            self.shift = shift

        def apply(self, image, box):
            return by_box[box]["dlib"] + self.shift * box_face_size(box)

    assert dlib_agreement(Echo(0.0), faces)["inner"] == pytest.approx(0.0, abs=1e-12)
    shifted = dlib_agreement(Echo(np.array([0.06, 0.08])), faces)
    assert shifted["inner"] == pytest.approx(0.1) and shifted["jaw"] == pytest.approx(0.1)
    assert shifted["faces"] == len(faces) == len(shifted["per_face"])
