"""A 68-point shape predictor trained on renders of the head model: its points are the head model's landmarks.

Why: dlib's iBUG predictor puts its points where annotators of real faces would; the head model's
landmark table (``synshot.head.landmarks``) says where that is *on average*, and on each face dlib
deviates from it by 1-2 px, several degrees of head rotation (docs/tracking.md, "landmark floor").
The kernel ridge correction (``synshot.track.landmark_correction``) predicts that deviation from the
layout of dlib's points alone. This predictor reads the points from the pixels instead: an ensemble of
regression trees (Kazemi and Sullivan, CVPR 2014; dlib's trainer) learned on renders made exactly as
held-out subjects are, whose targets are the points the tracker's fit matches at the generator's true
pose: the table's 51 inner points, and the 17 jaw points on the head model's projected contour
(``LandmarkHead.project_landmarks``). So at the true pose the fit's residual is zero by construction,
for the jaw too, where dlib's contour sits off the model's outline.

Each face is cropped around the detector box and resampled so the box is ``BOX_PX`` pixels across
(dlib's shape parts are integer pixels: at 128 px photos the face is ~55 px wide, and rounding there
alone would cost ~0.4 px per point). ``synshot track predictor`` trains the shipped file
(``landmark_predictor.dat`` beside this module; model card ``landmark_predictor.md``, training record
``landmark_predictor.json``).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from synshot.faces.dlib_models import as_uint8_rgb, shape_points
from synshot.fsio import atomic_path
from synshot.track.averaged_reads import averaged_read, mirror_box, unmirror
from synshot.track.landmark_correction import LandmarkModelError

SHIPPED = Path(__file__).with_name("landmark_predictor.dat")
REBUILD = "synshot track predictor --out synshot/track/landmark_predictor.dat"
BOX_PX = 128.0      # the detector box's face size in the predictor's crop (pixels)
MARGIN = 0.5        # crop = the box grown by this fraction of its size on each side


@dataclass(frozen=True)
class FaceCrop:
    """A grayscale crop around a detector box, resampled so the box's face size is ``BOX_PX``."""

    image: np.ndarray                          # (h, w) uint8
    origin: tuple[float, float]                # photo pixel coordinates of the crop's corner
    scale: tuple[float, float]                 # crop pixels per photo pixel (x, y)
    box: tuple[float, float, float, float]     # the detector box in crop pixels

    def to_crop(self, points: np.ndarray) -> np.ndarray:
        return (np.asarray(points, dtype=np.float64) - self.origin) * self.scale

    def to_photo(self, points: np.ndarray) -> np.ndarray:
        return np.asarray(points, dtype=np.float64) / self.scale + self.origin


def face_crop(image: np.ndarray, box) -> FaceCrop:
    """The crop the predictor sees (continuous pixel coordinates, pixel centres at +0.5); beyond the
    photo's border the edge pixels repeat."""
    left, top, right, bottom = (float(v) for v in box)
    w, h = right - left, bottom - top
    s = BOX_PX / math.sqrt(max(w * h, 1.0))
    x0, y0, x1, y1 = left - MARGIN * w, top - MARGIN * h, right + MARGIN * w, bottom + MARGIN * h
    gray = np.asarray(Image.fromarray(as_uint8_rgb(image)).convert("L"))
    pad = int(math.ceil(max(0.0, -x0, -y0, x1 - gray.shape[1], y1 - gray.shape[0]))) + 1
    gray = np.pad(gray, pad, mode="edge")
    size = (max(int(round((x1 - x0) * s)), 8), max(int(round((y1 - y0) * s)), 8))
    crop = Image.fromarray(gray).resize(size, Image.BILINEAR, box=(x0 + pad, y0 + pad, x1 + pad, y1 + pad))
    sx, sy = size[0] / (x1 - x0), size[1] / (y1 - y0)
    return FaceCrop(np.asarray(crop), (x0, y0), (sx, sy),
                    ((left - x0) * sx, (top - y0) * sy, (right - x0) * sx, (bottom - y0) * sy))


def mirrored(image: np.ndarray, box, points: np.ndarray) -> tuple[np.ndarray, tuple, np.ndarray]:
    """The left-right mirror image of a photo, its box and its 68 points (iBUG order kept): a second
    training sample per photo, and the predictor stays symmetric."""
    width = image.shape[1]
    return np.ascontiguousarray(image[:, ::-1]), mirror_box(box, width), unmirror(points, width)


class LandmarkPredictor:
    """A dlib shape predictor applied through :func:`face_crop`."""

    def __init__(self, predictor, path: Path | None = None):
        self.predictor, self.path = predictor, path

    def apply(self, image: np.ndarray, box, tta_shift: float = 0.0) -> np.ndarray:
        """(68, 2) head-model landmarks of the face in ``box``, photo pixels; with ``tta_shift`` > 0 the mean
        of 14 reads (``synshot.track.averaged_reads``)."""
        return averaged_read(self.read_once, image, box, tta_shift)

    def read_once(self, image: np.ndarray, box) -> np.ndarray:
        """(68, 2) points of one read in ``box``."""
        crop = face_crop(image, box)
        return crop.to_photo(shape_points(self.predictor, crop.image, crop.box))

    @classmethod
    def load(cls, path: str | Path) -> "LandmarkPredictor":
        import dlib

        path = Path(path)
        if not path.is_file():
            raise LandmarkModelError(f"{path}: no landmark predictor there; train it with `{REBUILD}`, or track "
                                     f"with detect.correction=kernel_ridge")
        try:
            predictor = dlib.shape_predictor(str(path))
        except RuntimeError as e:
            reason = " ".join(str(e).split())
            raise LandmarkModelError(f"{path}: not a readable landmark predictor ({reason}); rebuild it with "
                                     f"`{REBUILD}`, or track with detect.correction=kernel_ridge") from e
        parts = predictor(np.zeros((16, 16), np.uint8), dlib.rectangle(2, 2, 13, 13)).num_parts
        if parts != 68:
            raise LandmarkModelError(f"{path}: a shape predictor with {parts} points, not 68; rebuild it with "
                                     f"`{REBUILD}`")
        return cls(predictor, path)

    def save(self, path: str | Path) -> None:
        """Written beside ``path`` and renamed: a killed run leaves the old file intact."""
        with atomic_path(path) as tmp:
            self.predictor.save(str(tmp))


def train(samples: list[dict], options: dict, mirror: bool = True) -> LandmarkPredictor:
    """Train on ``samples`` (dicts with ``image`` (H, W, 3) uint8, ``box``, ``model`` (68, 2) target
    points); ``options``: dlib ``shape_predictor_training_options`` fields."""
    import dlib

    images, objects = [], []
    for s in samples:
        views = [(s["image"], s["box"], s["model"])]
        if mirror:
            views.append(mirrored(s["image"], s["box"], s["model"]))
        for image, box, points in views:
            crop = face_crop(image, box)
            parts = [dlib.point(int(round(x - 0.5)), int(round(y - 0.5))) for x, y in crop.to_crop(points)]
            rect = dlib.rectangle(*(int(round(v)) for v in crop.box))
            images.append(crop.image)
            objects.append([dlib.full_object_detection(rect, parts)])
    opts = dlib.shape_predictor_training_options()
    for key, value in options.items():
        setattr(opts, key, value)
    return LandmarkPredictor(dlib.train_shape_predictor(images, objects, opts))


def box_features(points: np.ndarray) -> np.ndarray:
    """What :func:`fit_box_map` reads off 68 points: the inner points' centre and extent, and the extent of
    all 68 (a constant first)."""
    p = np.asarray(points, dtype=np.float64)
    inner = p[17:]
    return np.concatenate([[1.0], inner.mean(0), inner.min(0), inner.max(0), [p[:, 0].min(), p[:, 0].max(),
                                                                              p[:, 1].max()]])


def fit_box_map(samples: list[dict]) -> np.ndarray:
    """(10, 4) least-squares map from :func:`box_features` of each sample's target points to its detector box.

    Why: the predictor reads points relative to a box in dlib's detector convention. Where the detector
    finds no face (profiles beyond its range), the tracker places that box from points instead: the head
    model's landmarks at a guessed pose, then the predictor's own points (``synshot.track.turned_face``).
    Fitted on the photos as the detector saw them, not mirrored: dlib's boxes are not left-right
    symmetric about the face (on the shipped predictor's photos, mirrored copies in the fit put its boxes'
    worst corner 0.089 face sizes from dlib's on average instead of 0.075)."""
    feats = np.stack([box_features(s["model"]) for s in samples])
    boxes = np.asarray([s["box"] for s in samples], dtype=np.float64)
    return np.linalg.lstsq(feats, boxes, rcond=None)[0]


def box_from_points(points: np.ndarray, box_map: np.ndarray) -> tuple[float, float, float, float]:
    """The detector box (left, top, right, bottom) that ``box_map`` (:func:`fit_box_map`) gives for 68 points."""
    return tuple(float(v) for v in box_features(points) @ box_map)


def point_rms(points: np.ndarray, target: np.ndarray, box, index) -> float:
    """RMS distance of ``points[index]`` from ``target[index]``, in face sizes of ``box``."""
    from synshot.track.fit import box_face_size

    d = (np.asarray(points) - np.asarray(target))[list(index)]
    return float(np.sqrt((d ** 2).sum(1).mean()) / box_face_size(box))


@lru_cache(maxsize=4)
def _load_cached(path: str) -> LandmarkPredictor:
    return LandmarkPredictor.load(path)


def predictor_path(path: str | None = None) -> Path:
    """The file ``detect.predictor_file`` names: ``path``, or the shipped one when it is null."""
    return Path(path) if path else SHIPPED


def load_predictor(path: str | None = None) -> LandmarkPredictor:
    """The predictor at ``predictor_path(path)``, loaded once per process."""
    return _load_cached(str(predictor_path(path)))


def load_box_map(path: str | None = None) -> np.ndarray:
    """The (10, 4) :func:`fit_box_map` recorded beside the predictor file at ``predictor_path(path)``."""
    record = predictor_path(path).with_suffix(".json")
    try:
        box_map = np.asarray(json.loads(record.read_text())["box_from_points"], dtype=np.float64)
    except (OSError, ValueError, KeyError) as e:
        raise LandmarkModelError(f"{record}: no box map (box_from_points) in the predictor's training record "
                                 f"({type(e).__name__}); retrain it with `{REBUILD}`, or track with "
                                 f"turned_faces.enabled=false") from e
    if box_map.shape != (10, 4):
        raise LandmarkModelError(f"{record}: box_from_points has shape {box_map.shape}, not (10, 4); retrain it "
                                 f"with `{REBUILD}`")
    return box_map


def training_record(path: str | Path | None = None) -> dict:
    """The JSON record written beside a predictor file by ``synshot track predictor``."""
    return json.loads(predictor_path(str(path) if path else None).with_suffix(".json").read_text())
