"""A learned correction of dlib's 68 points towards the head model's landmarks.

Why: the head model's landmark table (``synshot.head.landmarks``) says where dlib puts each point *on
average*, but dlib's predictor, trained on real faces, places its points on each rendered face with a
bias of its own (its shape prior pulls an unusual layout towards the faces it was trained on; brows
and lips follow each face's texture). On the tracking bench that bias alone costs ~7 degrees of head
rotation: fitting only the pose, with the generator's true face, to the detected points leaves the
near-frontal photos 7.3 degrees off (docs/tracking.md, "landmark floor").

What: a kernel ridge regression from the detected layout (all 68 points relative to the inner points'
centroid, in units of the detector box's face size) to where the table's 51 inner points really
project, as an offset from each detected point: a ridge-linear part plus an RBF-kernel part on its
residual. The jaw (0-16) is not corrected: it slides on the contour at fit time. Learned on renders
made exactly as held-out subjects are (``data_tools.subject``) but from identity seeds that are neither
validation (2001-2010) nor test (3001+) seeds, with the tracker's own detection path; every
hyper-parameter is chosen by cross-validation over those identities. ``synshot track correction``
rebuilds the shipped file (``landmark_correction.npz`` beside this module; model card
``landmark_correction.md``). Its domain is dlib on the head model's renders: the tracker keeps it only
where the head model explains the corrected points about as well as dlib's own (``synshot.track.api``).
"""

from __future__ import annotations

import json
import zipfile
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable

import numpy as np

from synshot.cli import CheckpointFileError
from synshot.fsio import atomic_open
from synshot.head.landmarks import INNER, N_LANDMARKS
from synshot.track.fit import box_face_size

SHIPPED = Path(__file__).with_name("landmark_correction.npz")
REBUILD = "synshot track correction --out synshot/track/landmark_correction.npz"
INNER_IDX = np.asarray(INNER)


class LandmarkModelError(CheckpointFileError, ValueError):
    """A landmark correction or predictor file that cannot be used (the message names the file and the
    command that rebuilds it; the CLI prints it without a traceback)."""


def layout_features(landmarks: np.ndarray, box) -> tuple[np.ndarray, np.ndarray, float]:
    """(136,) the 68 points relative to the inner points' centroid in face sizes; the centroid; the face size."""
    pts = np.asarray(landmarks, dtype=np.float64)
    size = box_face_size(box)
    centre = pts[INNER_IDX].mean(0)
    return ((pts - centre) / size).reshape(-1), centre, size


def offset_rms(landmarks: np.ndarray, corrected: np.ndarray, box) -> float:
    """How far a correction moved the inner points: RMS distance in face sizes."""
    d = (np.asarray(corrected) - np.asarray(landmarks))[INNER_IDX]
    return float(np.sqrt((d ** 2).sum(1).mean()) / box_face_size(box))


def _standardise(x: np.ndarray, mean: np.ndarray, scale: np.ndarray) -> np.ndarray:
    return (x - mean) / scale


def _ridge(z: np.ndarray, y: np.ndarray, lam: float) -> np.ndarray:
    return np.linalg.solve(z.T @ z + lam * np.eye(z.shape[1]), z.T @ y)


def _rbf(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None] - 2 * a @ b.T
    return np.exp(-gamma * np.maximum(d, 0) / a.shape[1])


@dataclass
class LandmarkCorrection:
    """Layout features (136) -> offsets of the 51 inner points (102, face sizes)."""

    mean: np.ndarray            # (136,) feature standardisation
    scale: np.ndarray           # (136,)
    linear: np.ndarray          # (136, 102) ridge weights on standardised features
    offset: np.ndarray          # (102,) mean target
    anchors: np.ndarray         # (N, 136) standardised training features (the kernel's centres)
    weights: np.ndarray         # (N, 102) kernel coefficients
    gamma: float                # RBF width: exp(-gamma * squared distance / 136)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, linear_lam: float, kernel_lam: float, gamma: float,
            meta: dict[str, Any] | None = None) -> "LandmarkCorrection":
        mean, scale = x.mean(0), x.std(0) + 1e-6
        z = _standardise(x, mean, scale)
        offset = y.mean(0)
        linear = _ridge(z, y - offset, linear_lam)
        residual = y - offset - z @ linear
        k = _rbf(z, z, gamma)
        weights = np.linalg.solve(k + kernel_lam * np.eye(len(k)), residual)
        return cls(mean, scale, linear, offset, z, weights, float(gamma), dict(meta or {}))

    def predict(self, x: np.ndarray) -> np.ndarray:
        z = _standardise(np.atleast_2d(x), self.mean, self.scale)
        return self.offset + z @ self.linear + _rbf(z, self.anchors, self.gamma) @ self.weights

    def apply(self, landmarks: np.ndarray, box) -> np.ndarray:
        """(68, 2) pixels: the inner points moved by the predicted offsets; the jaw as detected."""
        x, _, size = layout_features(landmarks, box)
        out = np.array(landmarks, dtype=np.float64, copy=True)
        out[INNER_IDX] += self.predict(x)[0].reshape(-1, 2) * size
        return out

    def save(self, path: str | Path) -> None:
        """Written to a temporary file beside ``path`` and renamed: a killed run leaves the old file intact."""
        arrays = {k: getattr(self, k).astype(np.float32) for k in ("mean", "scale", "linear", "offset", "anchors",
                                                                     "weights")}
        with atomic_open(path, "wb") as f:
            np.savez_compressed(f, gamma=np.float64(self.gamma), meta=np.array(json.dumps(self.meta)), **arrays)

    @classmethod
    def load(cls, path: str | Path) -> "LandmarkCorrection":
        path = Path(path)
        try:
            with np.load(path, allow_pickle=False) as f:
                arrays = {k: f[k].astype(np.float64) for k in ("mean", "scale", "linear", "offset", "anchors",
                                                               "weights")}
                gamma, meta = float(f["gamma"]), json.loads(str(f["meta"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as e:
            raise LandmarkModelError(f"{path}: not a readable landmark correction ({type(e).__name__}: {e}); "
                                     f"rebuild it with `{REBUILD}`, or track without it "
                                     f"(detect.correct_landmarks=false)") from e
        correction = cls(**arrays, gamma=gamma, meta=meta)
        n = len(correction.anchors)
        shapes = {"mean": (2 * N_LANDMARKS,), "scale": (2 * N_LANDMARKS,), "linear": (2 * N_LANDMARKS, 2 * len(INNER)),
                  "offset": (2 * len(INNER),), "anchors": (n, 2 * N_LANDMARKS), "weights": (n, 2 * len(INNER))}
        bad = [k for k, s in shapes.items() if getattr(correction, k).shape != s]
        if bad:
            raise LandmarkModelError(f"{path}: landmark correction arrays {bad} have the wrong shape; rebuild it "
                                     f"with `{REBUILD}`")
        return correction


@lru_cache(maxsize=4)
def _load_cached(path: str) -> LandmarkCorrection:
    return LandmarkCorrection.load(path)


def correction_path(path: str | None = None) -> Path:
    """The file ``detect.correction_file`` names: ``path``, or the shipped one when it is null."""
    return Path(path) if path else SHIPPED


def load_correction(path: str | None = None) -> LandmarkCorrection:
    """The correction at ``correction_path(path)``, loaded once per process."""
    return _load_cached(str(correction_path(path)))


def corrected_landmarks(image: np.ndarray, landmarks: np.ndarray, box, detect) -> np.ndarray:
    """dlib's 68 points moved onto the head model's landmarks by the method ``detect.correction`` names."""
    if detect.predictor_replaces_dlib:
        from synshot.track.landmark_predictor import load_predictor

        return load_predictor(detect.predictor_file).apply(image, box, detect.tta_shift)
    return load_correction(detect.correction_file).apply(landmarks, box)


def correction_source(detect) -> Path:
    """The file the configured correction reads (a rebuilt file must re-track a cached subject)."""
    if detect.predictor_replaces_dlib:
        from synshot.track.landmark_predictor import predictor_path

        return predictor_path(detect.predictor_file)
    return correction_path(detect.correction_file)


def grouped_cv_error(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int, **hyper) -> float:
    """RMS point error (face sizes) of held-out identities: each fold leaves whole identities out."""
    ids = np.unique(groups)
    np.random.default_rng(0).shuffle(ids)
    sq = []
    for held in np.array_split(ids, folds):
        test = np.isin(groups, held)
        model = LandmarkCorrection.fit(x[~test], y[~test], **hyper)
        sq.append(((model.predict(x[test]) - y[test]) ** 2).sum(1))
    return float(np.sqrt(np.concatenate(sq).mean() / len(INNER)))


def select_and_fit(x: np.ndarray, y: np.ndarray, groups: np.ndarray, folds: int = 5,
                   linear_lams: Iterable[float] = (10.0, 30.0, 100.0),
                   kernel_lams: Iterable[float] = (0.01, 0.03, 0.1, 0.3),
                   gammas: Iterable[float] = (0.1, 0.3, 1.0), log=print) -> LandmarkCorrection:
    """Grid search by grouped cross-validation, then a fit on all pairs; the table lands in ``meta``."""
    table = []
    for linear_lam in linear_lams:
        for kernel_lam in kernel_lams:
            for gamma in gammas:
                hyper = {"linear_lam": linear_lam, "kernel_lam": kernel_lam, "gamma": gamma}
                table.append({**hyper, "cv_rms": grouped_cv_error(x, y, groups, folds, **hyper)})
                log(f"cv {hyper}: {table[-1]['cv_rms']:.5f}")
    best = min(table, key=lambda r: r["cv_rms"])
    hyper = {k: best[k] for k in ("linear_lam", "kernel_lam", "gamma")}
    meta = {"pairs": int(len(x)), "identities": int(len(np.unique(groups))), "folds": folds, **hyper,
            "cv_rms": best["cv_rms"], "uncorrected_rms": float(np.sqrt((y ** 2).sum(1).mean() / len(INNER)))}
    return LandmarkCorrection.fit(x, y, meta=meta, **hyper)
