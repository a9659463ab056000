"""Face detection, 68-point landmarks and the 128-d face descriptor (dlib, offline model files).

Everything runs from the model files that the ``face-recognition-models`` package installs; nothing
is downloaded. See docs/tracking.md.
"""

from synshot.faces.dlib_models import (
    SAME_PERSON_DISTANCE,
    Face,
    FaceModelError,
    descriptor_distance,
    detect_faces,
    face_descriptor,
    id_distance,
    landmarks68,
    model_dir,
)
from synshot.faces.metrics import id_distance_summary, id_distances, pair_id_distance

__all__ = ["SAME_PERSON_DISTANCE", "Face", "FaceModelError", "descriptor_distance", "detect_faces",
           "face_descriptor", "id_distance", "landmarks68", "model_dir",
           "id_distance_summary", "id_distances", "pair_id_distance"]
