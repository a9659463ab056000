"""Photos of real people that ship inside installed packages: a check of the landmark predictor
beyond the head model's renders.

Nothing can be downloaded, and the predictor is trained on renders only; these ten faces (scikit-image's
``astronaut`` and ``camera``, matplotlib's ``grace_hopper``, insightface's ``t1`` group photo and
``Tom_Hanks_54745``) are the real faces at hand. There is no ground truth for the head model's
landmarks on them, so the check is agreement with dlib's iBUG predictor, which was trained on real
faces: on near-frontal renders the two differ by ~0.04 face sizes (dlib's own bias there), so a
predictor that had learned faces, not renders, would stay near that on real photos too; one that reads
the renders' look drifts far beyond it (the shipped predictor: 0.14, see its model card).
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image


def _package_file(module: str, *parts: str) -> Path:
    import importlib

    return Path(importlib.import_module(module).__file__).parent.joinpath(*parts)


DETECT_SIDE = 640     # photos are searched for faces at most this large (the points are read at full size)
SOURCES = {
    "astronaut": ("skimage.data", "astronaut.png"),
    "camera": ("skimage.data", "camera.png"),
    "grace_hopper": ("matplotlib", "mpl-data", "sample_data", "grace_hopper.jpg"),
    "tom_hanks": ("insightface", "data", "images", "Tom_Hanks_54745.png"),
    "t1": ("insightface", "data", "images", "t1.jpg"),
}


@lru_cache(maxsize=1)
def real_faces() -> tuple[dict, ...]:
    """Every face dlib's detector finds in the bundled photos: ``name``, ``image`` (uint8 RGB), ``box``,
    ``dlib`` (its 68 points). Photos whose package is missing are skipped."""
    from synshot.faces.dlib_models import Face, detect_faces, landmarks68

    faces = []
    for name, (module, *parts) in SOURCES.items():
        try:
            path = _package_file(module, *parts)
        except ImportError:
            continue
        if not path.is_file():
            continue
        photo = Image.open(path).convert("RGB")
        image, rgb = np.asarray(photo), np.asarray(photo, dtype=np.float32) / 255
        scale = min(1.0, DETECT_SIDE / max(photo.size))      # the CNN detector's time grows with the area
        small = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BILINEAR)
        found = detect_faces(np.asarray(small, dtype=np.float32) / 255, upsample=1)
        for i, face in enumerate(sorted(found, key=lambda f: f.box)):
            full = Face(tuple(v / scale for v in face.box), face.score)
            faces.append({"name": f"{name}_{i}", "image": image, "box": full.box, "dlib": landmarks68(rgb, full)})
    return tuple(faces)


def dlib_agreement(predictor, faces=None) -> dict:
    """Mean RMS distance (face sizes) between ``predictor``'s points and dlib's on the real faces:
    inner points, jaw, and per face."""
    from synshot.head.landmarks import INNER, JAW
    from synshot.track.landmark_predictor import point_rms

    faces = real_faces() if faces is None else faces
    inner, jaw = [], []
    for f in faces:
        points = predictor.apply(f["image"], f["box"])
        inner.append(point_rms(points, f["dlib"], f["box"], INNER))
        jaw.append(point_rms(points, f["dlib"], f["box"], JAW))
    return {"faces": len(faces), "inner": float(np.mean(inner)), "jaw": float(np.mean(jaw)),
            "per_face": {f["name"]: round(v, 4) for f, v in zip(faces, inner)}}
