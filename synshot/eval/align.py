"""Alignment of a tracked head frame to the recorded one, from the input photos only.

A monocular fit recovers a head up to a similarity: a head 5 % larger seen from 5 % farther casts
the same image, and a small rotation of the whole head can trade against the cameras. The eval
frames are recorded relative to the generator's head frame (``w2c @ head_pose``), so before the
tracked avatar is rendered at them its head frame must be mapped onto that one. The rule uses the
3 input photos and never an eval image (the capture rig's calibration: the recorded cameras of the
input photos are known, as they would be in a multi-view capture):

- per input photo ``i``, the recorded head-to-camera transform ``T_i`` and the tracked one ``F_i``
  give a rotation ``R_i = R(T_i)^T R(F_i)`` (tracked head axes -> recorded head axes);
- the rotation is initialised at the medoid of the ``R_i`` (the one closest, in summed geodesic
  angle, to the others: one badly tracked photo cannot drag it), and the photos within
  ``inlier_deg`` of it are the inliers;
- then ``s, R, t`` minimise, over the inliers, the pixel distance between where the recorded camera
  (recorded intrinsics) sees the aligned tracked head ``s R x + t`` and where the tracked camera
  (tracked intrinsics) saw ``x`` (head-model vertices of the tracked fit): a tracker that guessed
  the focal length wrong is compensated by the scale, not by a shift in depth. Starting scale: the
  ratio of apparent sizes, ``(f_tracked / f_recorded) (d_recorded / d_tracked)``.

An eval frame recorded as ``T_e`` then sees the tracked head through ``T_e (s R x + t)``; with the
eval frame's own intrinsics this projects exactly like the rigid transform
``[R(T_e) R | (R(T_e) t + t(T_e)) / s]`` applied to ``x`` (dividing a camera-frame point by ``s``
leaves its projection unchanged), which is what the aligned ``eval/cameras.json`` holds (with an
identity head pose). Whatever the tracker gets wrong beyond a similarity (shape, per-photo pose and
expression errors, a wrong photo) still shows in the eval metrics.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from synshot.track.geometry import head_to_camera, rotation_error_deg


@dataclass
class HeadFrameAlignment:
    scale: float  # s: tracked head units -> recorded head units
    rotation: np.ndarray  # R (3, 3): tracked head axes -> recorded head axes
    translation: np.ndarray  # t (3,): metres in the recorded head frame
    inliers: list[str]  # input photos whose rotation agreed with the medoid
    per_photo_deg: dict[str, float]  # each photo's rotation disagreement with R

    def to_dict(self) -> dict:
        angle = rotation_error_deg(self.rotation, np.eye(3))
        return {"scale": self.scale, "rotation": self.rotation.tolist(), "rotation_deg": angle,
                "translation_m": self.translation.tolist(), "inliers": self.inliers,
                "per_photo_disagreement_deg": self.per_photo_deg}


def _centre(T: np.ndarray) -> np.ndarray:
    return -T[:3, :3].T @ T[:3, 3]


def fit_alignment(recorded: dict[str, np.ndarray], tracked: dict[str, np.ndarray], inlier_deg: float = 15.0,
                  intrinsics: dict[str, tuple[np.ndarray, np.ndarray]] | None = None,
                  points: dict[str, np.ndarray] | None = None) -> HeadFrameAlignment:
    """Similarity from tracked to recorded head frame, from the head-to-camera transforms of the same photos.

    With ``intrinsics`` (photo -> (recorded K, tracked K)) and ``points`` (photo -> tracked head-frame
    points), the similarity is refined by reprojection (module docstring); without, camera centres only.
    """
    names = sorted(set(recorded) & set(tracked))
    if not names:
        raise ValueError("head-frame alignment: no input photo is both recorded and tracked")
    rots = {n: recorded[n][:3, :3].T @ tracked[n][:3, :3] for n in names}
    medoid = min(names, key=lambda n: sum(rotation_error_deg(rots[n], rots[m]) for m in names))
    R = rots[medoid]
    per_photo = {n: rotation_error_deg(R, rots[n]) for n in names}
    inliers = [n for n in names if per_photo[n] <= inlier_deg]
    c_rec = np.stack([_centre(recorded[n]) for n in inliers])
    c_trk = np.stack([_centre(tracked[n]) for n in inliers]) @ R.T
    if len(inliers) == 1:
        s = float(np.linalg.norm(c_rec[0]) / max(np.linalg.norm(c_trk[0]), 1e-9))
    else:
        d_rec, d_trk = c_rec - c_rec.mean(0), c_trk - c_trk.mean(0)
        s = float((d_rec * d_trk).sum() / max((d_trk ** 2).sum(), 1e-12))
        if not np.isfinite(s) or s <= 0.5 or s >= 2.0:  # centres too close together to fix a scale: distances
            s = float(np.linalg.norm(c_rec, axis=1).mean() / max(np.linalg.norm(c_trk, axis=1).mean(), 1e-9))
    t = c_rec.mean(0) - s * c_trk.mean(0)
    if intrinsics is not None and points is not None:
        s, R, t = _refine_by_reprojection(s, R, {n: (recorded[n], tracked[n], *intrinsics[n], points[n])
                                                 for n in inliers})
        per_photo = {n: rotation_error_deg(R, rots[n]) for n in names}
    return HeadFrameAlignment(s, R, t, inliers, per_photo)


def _project(K: np.ndarray, T: np.ndarray, x: np.ndarray) -> np.ndarray:
    cam = x @ T[:3, :3].T + T[:3, 3]
    uv = cam @ K.T
    return uv[:, :2] / np.maximum(uv[:, 2:], 1e-6)


def _refine_by_reprojection(s0: float, R0: np.ndarray, photos: dict) -> tuple[float, np.ndarray, np.ndarray]:
    """Least squares over (log s, rotation vector, t) of recorded-vs-tracked reprojections, in pixels."""
    from scipy.optimize import least_squares
    from scipy.spatial.transform import Rotation

    # starting scale: ratio of apparent sizes (focal / distance of the recorded vs the tracked camera)
    ratios = [(Kt[0, 0] / Kr[0, 0]) * (np.linalg.norm(T[:3, 3]) / np.linalg.norm(F[:3, 3]))
              for T, F, Kr, Kt, _ in photos.values()]
    s_init = float(np.mean(ratios)) if ratios else s0
    targets = {n: _project(Kt, F, x) for n, (T, F, Kr, Kt, x) in photos.items()}

    def residual(p: np.ndarray) -> np.ndarray:
        s, R = float(np.exp(p[0])), Rotation.from_rotvec(p[1:4]).as_matrix() @ R0
        return np.concatenate([(_project(Kr, T, s * x @ R.T + p[4:7]) - targets[n]).ravel()
                               for n, (T, F, Kr, Kt, x) in photos.items()])

    fit = least_squares(residual, np.array([np.log(s_init), 0, 0, 0, 0, 0, 0], dtype=np.float64), method="lm")
    p = fit.x
    return float(np.exp(p[0])), Rotation.from_rotvec(p[1:4]).as_matrix() @ R0, p[4:7].copy()


def alignment_from_subjects(recorded_cameras: dict, recorded_params: dict, tracked_cameras: dict,
                            tracked_params: dict, inlier_deg: float = 15.0,
                            points: dict[str, np.ndarray] | None = None) -> HeadFrameAlignment:
    """The alignment from two subjects' cameras.json / params.json contents (input frames, by file name);
    ``points``: photo -> tracked head-frame points, for the reprojection refinement."""
    def transforms(cams: dict, pars: dict) -> dict[str, np.ndarray]:
        by_file = {f["file"]: f for f in pars["frames"]}
        return {f["file"]: head_to_camera(f, by_file[f["file"]]) for f in cams["frames"] if f["file"] in by_file}

    K_rec = {f["file"]: np.asarray(f["K"], dtype=np.float64) for f in recorded_cameras["frames"] if "K" in f}
    K_trk = {f["file"]: np.asarray(f["K"], dtype=np.float64) for f in tracked_cameras["frames"] if "K" in f}
    intrinsics = {n: (K_rec[n], K_trk[n]) for n in K_rec if n in K_trk} if points is not None else None
    return fit_alignment(transforms(recorded_cameras, recorded_params),
                         transforms(tracked_cameras, tracked_params), inlier_deg, intrinsics, points)


def align_eval_frames(cameras: dict, params: dict, alignment: HeadFrameAlignment) -> tuple[dict, dict]:
    """Eval ``cameras.json`` / ``params.json`` contents re-expressed for the tracked head frame.

    Each frame's head-to-camera transform becomes ``[R_e R | (R_e t + t_e) / s]`` with an identity head
    pose; intrinsics, image size and expressions are unchanged.
    """
    by_file = {f["file"]: f for f in params["frames"]}
    out_cams, out_pars = [], []
    for cam in cameras["frames"]:
        par = by_file[cam["file"]]
        T = head_to_camera(cam, par)
        A = np.eye(4)
        A[:3, :3] = T[:3, :3] @ alignment.rotation
        A[:3, 3] = (T[:3, :3] @ alignment.translation + T[:3, 3]) / alignment.scale
        out_cams.append({**cam, "w2c": A.tolist()})
        out_pars.append({**par, "head_pose": np.eye(4).tolist()})
    new_params = {k: v for k, v in params.items() if k not in ("frames", "identity")}
    new_params["identity"] = None  # the avatar's identity is the tracked one (top-level params.json)
    return {**cameras, "frames": out_cams}, {**new_params, "frames": out_pars}
