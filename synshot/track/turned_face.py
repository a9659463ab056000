"""Landmarks of a turned face the detector misses, read by the landmark predictor from boxes that the
silhouette pose places.

Why: dlib's detector finds faces to ~45 degrees of yaw. A photo it misses (a profile) is fitted by its
silhouette, which pins the yaw only loosely: a model head whose size differs from the person's matches
the outline by turning (19-47 degrees off on the profiles of docs/tracking.md). The landmark predictor
trained on renders reads profiles to ~0.016 face sizes, but only inside a box in the detector's
convention, and it follows a box that is off by a tenth of the face. So the box is placed from points
(``synshot.track.landmark_predictor.box_from_points``): the head model's landmarks projected at the
silhouette pose turned by each of ``yaw_offsets_deg``, then boxed again from the predictor's own points
(``box_iterations``), which walks a box that is near onto the face. Each start's points are fitted for
the head pose alone, with the tracked identity and a neutral expression (one profile pins neither
well). Starts that lose the face end on poses of their own; starts that find it agree. The pose the most
starts agree with (within ``agreement_deg``), turned at least ``min_facing_deg`` (the detector would
have found a face turned less) and fitted best, stands if its RMSE is at most ``max_rmse``. The facing
bound holds only where the mask shows a turned head (its skin-coloured pixels off the outline's centre,
``face_side``): a near-frontal face the detector missed (a noisy render) has its skin centred, and its
starts agree on a near-frontal pose.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from synshot.head import HeadModel, IdentityParams
from synshot.track.config import FitConfig, TurnedFaceConfig
from synshot.track.fit import LandmarkHead, PhotoObservation, box_face_size, fit_landmarks
from synshot.track.geometry import facing_angle_deg, project, rotation_error_deg
from synshot.track.landmark_predictor import LandmarkPredictor, box_from_points


@dataclass
class TurnedFace:
    """The landmark pose of a photo the detector missed."""

    landmarks: np.ndarray            # (68, 2) the predictor's points, photo pixels
    box: tuple[float, float, float, float]
    rotation: np.ndarray             # (3, 3) head -> camera
    translation: np.ndarray          # (3,) metres
    model_landmarks: np.ndarray      # (68, 2) the fitted head model's landmarks
    rmse_px: float

    @property
    def rmse_rel(self) -> float:
        return self.rmse_px / box_face_size(self.box)


def _yaw(deg: float) -> np.ndarray:
    """Rotation about the head's own vertical (y) axis."""
    a = math.radians(deg)
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def neutral_landmarks(head: HeadModel, identity: IdentityParams) -> np.ndarray:
    """(68, 3) head-frame landmarks of ``identity`` with a neutral expression (jaw at its nominal place)."""
    lhead = LandmarkHead(head)
    with torch.no_grad():
        return lhead.fixed_points(lhead.vertices(identity, torch.zeros(lhead.n_expr))).double().numpy()


def project_points(points: np.ndarray, R: np.ndarray, t: np.ndarray, focal: float, width: int, height: int
                   ) -> np.ndarray:
    """(N, 2) pixels of head-frame ``points`` at pose (R, t): the fit's own projection (``geometry.project``)
    with the principal point at the image centre."""
    as_t = lambda x: torch.as_tensor(np.asarray(x, dtype=np.float64))  # noqa: E731
    return project(as_t(points), as_t(R), as_t(t), as_t(focal), as_t([width / 2, height / 2])).numpy()


def read_turned_face(head: HeadModel, identity: IdentityParams, image: np.ndarray, focal: float,
                     rotation: np.ndarray, translation: np.ndarray, predictor: LandmarkPredictor,
                     box_map: np.ndarray, cfg: TurnedFaceConfig, fit_cfg: FitConfig, turned_head: bool = True,
                     tta_shift: float = 0.0) -> tuple[TurnedFace | None, dict[str, Any]]:
    """The landmark pose of the face in ``image`` starting from the silhouette pose (``rotation``,
    ``translation``), or None when the starts do not agree on a turned face that the head model fits
    (see the module docstring); and a record of what each start found. ``turned_head``: the mask shows a
    turned head, so only poses turned at least ``cfg.min_facing_deg`` count. ``tta_shift``: the last read's
    test-time augmentation (``synshot.track.averaged_reads``)."""
    height, width = image.shape[:2]
    neutral = np.zeros((1, len(head.expression_names)))
    landmarks3d = neutral_landmarks(head, identity)
    starts = []
    for offset in cfg.yaw_offsets_deg:
        points = project_points(landmarks3d, rotation @ _yaw(offset), translation, focal, width, height)
        box = box_from_points(points, box_map)
        for _ in range(cfg.box_iterations):
            box = box_from_points(predictor.apply(image, box), box_map)
        points = predictor.apply(image, box, tta_shift)
        obs = PhotoObservation("turned", width, height, points, box_face_size(box), focal)
        fit = fit_landmarks(head, [obs], fit_cfg, False, known=(identity, neutral))
        starts.append(TurnedFace(points, box, fit.rotations[0], fit.translations[0], fit.model_landmarks[0],
                                 float(fit.rmse_px[0])))
    min_facing = cfg.min_facing_deg if turned_head else 0.0
    candidates = [s for s in starts if facing_angle_deg(s.rotation) >= min_facing]
    support = [sum(rotation_error_deg(a.rotation, b.rotation) < cfg.agreement_deg for b in candidates)
               for a in candidates]
    record: dict[str, Any] = {
        "starts": [{"yaw_offset_deg": o, "facing_deg": round(facing_angle_deg(s.rotation), 1),
                    "rmse_rel": round(s.rmse_rel, 4)} for o, s in zip(cfg.yaw_offsets_deg, starts)],
        "agreeing": max(support, default=0)}
    if not candidates or max(support) < cfg.min_agreeing:
        record["kept"] = False
        return None, record
    best = min((s for s, n in zip(candidates, support) if n == max(support)), key=lambda s: s.rmse_px)
    record.update({"kept": best.rmse_rel <= cfg.max_rmse, "rmse_rel": round(best.rmse_rel, 4),
                   "facing_deg": round(facing_angle_deg(best.rotation), 1)})
    return (best if record["kept"] else None), record
