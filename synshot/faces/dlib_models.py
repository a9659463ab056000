"""dlib wrappers: CNN (MMOD) face detector, iBUG 68-point shape predictor, ResNet face descriptor.

Why the CNN detector: on our synthetic renders it finds a face in far more views than the HOG
detector (which misses most turned heads); on real photos both work. The model files come from the
``face-recognition-models`` package; its ``__init__`` imports ``pkg_resources`` (absent on new
setuptools), so the folder is located through the import system without importing the package.
Images are (H, W, 3) uint8 RGB.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np

from synshot.cli import SynshotError

SAME_PERSON_DISTANCE = 0.6  # dlib's threshold: descriptors closer than this are the same person
MODEL_FILES = {
    "detector": "mmod_human_face_detector.dat",
    "landmarks68": "shape_predictor_68_face_landmarks.dat",
    "landmarks5": "shape_predictor_5_face_landmarks.dat",
    "descriptor": "dlib_face_recognition_resnet_model_v1.dat",
}


class FaceModelError(SynshotError):
    """dlib or its model files are missing."""


@dataclass
class Face:
    """One detected face: box (left, top, right, bottom) in pixels and the detector's confidence."""

    box: tuple[float, float, float, float]
    score: float

    @property
    def size(self) -> float:
        l, t, r, b = self.box
        return float(np.sqrt(max(r - l, 1.0) * max(b - t, 1.0)))


def model_dir() -> Path:
    """Folder holding the dlib model files of the ``face-recognition-models`` package."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or not spec.submodule_search_locations:
        raise FaceModelError("the face-recognition-models package is not installed; "
                             "pip install -c constraints.txt face-recognition-models==0.3.0")
    folder = Path(list(spec.submodule_search_locations)[0]) / "models"
    missing = [f for f in MODEL_FILES.values() if not (folder / f).is_file()]
    if missing:
        raise FaceModelError(f"{folder}: missing model files {missing}; reinstall face-recognition-models==0.3.0")
    return folder


def _dlib():
    try:
        import dlib
    except ImportError as exc:
        raise FaceModelError("dlib is not installed; pip install -c constraints.txt dlib-bin==20.0.1.post1") from exc
    return dlib


@lru_cache(maxsize=None)
def _model(kind: str):
    dlib = _dlib()
    path = str(model_dir() / MODEL_FILES[kind])
    if kind == "detector":
        return dlib.cnn_face_detection_model_v1(path)
    if kind == "descriptor":
        return dlib.face_recognition_model_v1(path)
    return dlib.shape_predictor(path)


def as_uint8_rgb(image: np.ndarray) -> np.ndarray:
    """float [0,1] or uint8, gray or RGB(A) -> contiguous (H, W, 3) uint8 RGB."""
    img = np.asarray(image)
    if img.dtype != np.uint8:
        img = (np.clip(img.astype(np.float32), 0, 1) * 255 + 0.5).astype(np.uint8)
    if img.ndim == 2:
        img = np.repeat(img[..., None], 3, axis=2)
    return np.ascontiguousarray(img[..., :3])


def _rect(box):
    dlib = _dlib()
    l, t, r, b = (int(round(v)) for v in box)
    return dlib.rectangle(l, t, r, b)


def detect_faces(image: np.ndarray, upsample: int = 1) -> list[Face]:
    """All faces, largest first. ``upsample`` doubles the resolution that many times (finds smaller faces)."""
    img = as_uint8_rgb(image)
    dets = _model("detector")(img, int(upsample))
    faces = [Face((float(d.rect.left()), float(d.rect.top()), float(d.rect.right()), float(d.rect.bottom())),
                  float(d.confidence)) for d in dets]
    return sorted(faces, key=lambda f: -f.size)


def shape_points(predictor, image: np.ndarray, box) -> np.ndarray:
    """(P, 2) points of a dlib shape predictor in the detector box ``box`` (left, top, right, bottom), in
    continuous pixel coordinates (pixel centres at +0.5)."""
    shape = predictor(as_uint8_rgb(image), _rect(box))
    return np.array([[p.x + 0.5, p.y + 0.5] for p in shape.parts()], dtype=np.float64)


def landmarks68(image: np.ndarray, face: Face) -> np.ndarray:
    """(68, 2) iBUG 300-W landmarks in continuous pixel coordinates (pixel centres at +0.5)."""
    return shape_points(_model("landmarks68"), image, face.box)


def face_descriptor(image: np.ndarray, face: Face | None = None, upsample: int = 1) -> np.ndarray | None:
    """The 128-d dlib ResNet descriptor of ``face`` (default: the largest detected face); None if no face.

    Two photos show the same person when their descriptors are closer than SAME_PERSON_DISTANCE.
    """
    img = as_uint8_rgb(image)
    if face is None:
        faces = detect_faces(img, upsample)
        if not faces:
            return None
        face = faces[0]
    shape = _model("landmarks5")(img, _rect(face.box))
    return np.asarray(_model("descriptor").compute_face_descriptor(img, shape), dtype=np.float64)


def descriptor_distance(a: np.ndarray | None, b: np.ndarray | None) -> float:
    """Euclidean distance of two descriptors (nan when either image had no face)."""
    if a is None or b is None:
        return float("nan")
    return float(np.linalg.norm(np.asarray(a) - np.asarray(b)))


def id_distance(image_a: np.ndarray, image_b: np.ndarray, upsample: int = 1) -> float:
    """dlib identity distance between the largest faces of two images (nan if either has none)."""
    return descriptor_distance(face_descriptor(image_a, upsample=upsample), face_descriptor(image_b, upsample=upsample))
