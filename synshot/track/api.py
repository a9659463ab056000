"""``track_subject``: photos of one person -> a subject folder (docs/inversion.md format) + tracking report.

Pipeline: read photos (EXIF rotation, any pixel format) -> dlib detection, 68 landmarks and identity
descriptor per photo -> one joint landmark fit (shared identity, per-photo expression/pose/camera;
synshot.track.fit) -> photos without a detectable face: pose from their mask (synshot.track.silhouette)
-> masks (user masks/ win, else alpha, else GrabCut seeded by the fit) -> publish the folder at once.

Camera convention of the written subject: the head frame is the world frame (``head_pose`` is the
identity) and each photo's ``w2c`` is its fitted head-to-camera transform, so the cameras orbit the
head as in the synthetic subjects.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from PIL import Image

from synshot.cli import UsageError, get_logger
from synshot.config import dump_config
from synshot.faces import descriptor_distance, detect_faces, face_descriptor, landmarks68
from synshot.faces.dlib_models import Face
from synshot.fsio import publish_dir
from synshot.head import HEAD_MODEL_VERSION, HeadConfig, HeadModel, IdentityParams
from synshot.track.config import DetectConfig, TrackConfig
from synshot.track.fit import FitResult, PhotoObservation, box_face_size, fit_landmarks
from synshot.track.geometry import facing_angle_deg
from synshot.track.landmark_correction import corrected_landmarks, offset_rms
from synshot.track.landmark_predictor import load_box_map, load_predictor
from synshot.track.masks import grabcut_mask, head_faces, mesh_raster
from synshot.track.overlay import photo_panel, tracking_sheet
from synshot.track.photos import Photo, PhotoError, list_photos, read_photo, user_mask
from synshot.track.photometric import appearance_from_photo, face_splats, refine_pose
from synshot.track.silhouette import HairLinearMesh, fit_silhouette
from synshot.track.turned_face import read_turned_face

log = get_logger(__name__)
CUE_LANDMARKS, CUE_SILHOUETTE = "landmarks", "silhouette"
BOX_FROM_SILHOUETTE = "silhouette pose"     # box_source of a turned face the detector missed (turned_face)


class TrackingError(UsageError):
    """The fit failed on a photo (the message names it and the measured error)."""


@dataclass
class TrackResult:
    out_dir: Path
    frames: list[dict[str, Any]]
    identity: dict[str, Any]
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0


@dataclass
class _Item:
    photo: Photo
    rgb: np.ndarray                 # working image (H, W, 3) float
    scale: float                    # working / original pixels
    record: dict[str, Any]
    landmarks: np.ndarray | None = None            # as dlib's predictor placed them
    corrected_landmarks: np.ndarray | None = None  # moved by the learned correction (detect.correct_landmarks)
    correction_kept: bool = False                  # ... and the final fit used them
    box: tuple[float, float, float, float] | None = None
    descriptor: np.ndarray | None = None
    mask: np.ndarray | None = None
    mask_source: str | None = None
    R: np.ndarray | None = None
    t: np.ndarray | None = None
    focal: float = 0.0
    expression: np.ndarray | None = None


def _resize(rgb: np.ndarray, side: int) -> tuple[np.ndarray, float]:
    import cv2

    h, w = rgb.shape[:2]
    s = side / max(h, w)
    if abs(s - 1) < 1e-9:
        return rgb, 1.0
    size = (max(1, round(w * s)), max(1, round(h * s)))
    interp = cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR
    return cv2.resize(rgb, size, interpolation=interp), s


def detect_face(rgb: np.ndarray, cfg: DetectConfig) -> tuple[int, Face | None]:
    """How many faces dlib finds in ``rgb`` and the largest one (box in ``rgb``'s pixels): found on a copy
    whose long side is ``cfg.work_side``, upsampled ``cfg.upsample`` more times when none is found."""
    det_img, s = _resize(rgb, cfg.work_side)
    faces = detect_faces(det_img, upsample=0)
    if not faces and cfg.upsample > 0:
        faces = detect_faces(det_img, upsample=cfg.upsample)
    if not faces:
        return 0, None
    return len(faces), Face(tuple(v / s for v in faces[0].box), faces[0].score)


def _detect(item: _Item, cfg: TrackConfig, warnings: list[str]) -> None:
    found, face = detect_face(item.rgb, cfg.detect)
    item.record["faces_found"] = found
    if face is None:
        return
    if found > 1:
        msg = (f"{item.photo.path}: {found} faces found; tracking the largest "
               f"(crop the photo to one person to silence this)")
        warnings.append(msg)
        log.warning(msg)
    box = face.box
    face_px = box_face_size(box) / item.scale
    if face_px < cfg.detect.min_face_px:
        raise PhotoError(f"{item.photo.path}: the face is only {face_px:.0f} px wide, smaller than the tracker "
                         f"can use (detect.min_face_px={cfg.detect.min_face_px:g}); use a closer or larger photo")
    item.box = box
    item.landmarks = landmarks68(item.rgb, face)
    if cfg.detect.correct_landmarks:
        corrected = corrected_landmarks(item.rgb, item.landmarks, box, cfg.detect)
        offset = offset_rms(item.landmarks, corrected, box)
        replaces = cfg.detect.predictor_replaces_dlib
        item.record["landmark_correction"] = {"method": cfg.detect.correction, "kept": replaces,
                                              "offset_rms": round(offset, 4)}
        if replaces:   # it reads the pixels: its points replace dlib's in every fit (docs/tracking.md)
            item.corrected_landmarks, item.correction_kept = corrected, True
        elif offset <= cfg.detect.max_correction:    # larger: a layout unlike most it was learned on
            item.corrected_landmarks = corrected
    item.descriptor = face_descriptor(item.rgb, face)
    item.record.update({"detector_score": round(face.score, 4), "face_box": [round(v, 1) for v in box]})


def _focal_guesses(items: list[_Item], cfg: TrackConfig) -> tuple[list[float], bool, list[str]]:
    exif = [it.photo.focal_px() for it in items]
    cameras = {it.photo.camera for it in items}
    same_camera = all(f is not None for f in exif) and len(cameras) == 1 and None not in cameras \
        and len({it.photo.focal_35mm for it in items}) == 1
    shared = cfg.fit.focal == "shared" or (cfg.fit.focal == "auto" and same_camera)
    guesses, sources = [], []
    for it, f in zip(items, exif):
        w, h = it.rgb.shape[1], it.rgb.shape[0]
        if f is not None:
            guesses.append(f * it.scale)
            sources.append("exif")
        else:
            guesses.append(cfg.fit.focal_guess * max(w, h))
            sources.append("guess")
    return guesses, shared, sources


def nose_offset_in_mask(landmarks: np.ndarray, mask: np.ndarray) -> float | None:
    """How far off the centre of the head's outline the nose tip sits, 0 (centred) to 0.5 (at its edge).

    Measured on the mask rows from the eyes to the mouth. On a turned head the back of the head
    widens the outline on one side: a 65 degree profile gives ~0.3, frontal photos < 0.15. Unlike
    the fitted pose it does not trust dlib, whose 68 points on a profile look like a frontal face.
    """
    h = mask.shape[0]
    y0, y1 = (int(np.clip(round(v), 0, h - 1)) for v in (landmarks[36:48, 1].mean(), landmarks[48:68, 1].mean()))
    x = landmarks[30, 0]
    pos = []
    for row in mask[y0:y1 + 1] > 0.5:
        xs = np.nonzero(row)[0]
        if len(xs) > 1:
            pos.append((x - xs[0]) / (xs[-1] - xs[0] + 1))
    return None if not pos else float(abs(np.median(pos) - 0.5))


def skin_colour(detected: list[_Item]) -> np.ndarray | None:
    """Median RGB of the cheeks-and-nose box (between the eyes and the mouth) of the detected photos."""
    px = []
    for it in detected:
        lm = it.landmarks
        x0, x1 = sorted((int(lm[39, 0]), int(lm[42, 0])))
        y0, y1 = int(lm[29, 1]), int(lm[33, 1])
        patch = it.rgb[max(y0, 0):max(y1, 0) + 1, max(x0, 0):max(x1, 0) + 1].reshape(-1, 3)
        px.append(patch)
    px = np.concatenate(px) if px else np.zeros((0, 3))
    return np.median(px, 0) if len(px) >= 4 else None


def face_side(rgb: np.ndarray, mask: np.ndarray, skin: np.ndarray | None, max_dist: float = 0.12,
              min_shift: float = 0.05) -> int:
    """+1 when the face is on the image's right of the head outline, -1 on its left, 0 when unclear.

    Why: the outline of a head in left and right profile is nearly the same mirrored blob (with
    voluminous hair even more so), and the silhouette fit picked the wrong side (~130 degrees off)
    on two of five validation profiles. The visible skin is on the face's side: the horizontal
    centroid of the mask's skin-coloured pixels (colour of the detected photos' cheeks) relative to
    the mask's centroid, in units of the mask's width, decides when it is at least ``min_shift``.
    """
    if skin is None:
        return 0
    inside = mask > 0.5
    ys, xs = np.nonzero(inside)
    if len(xs) < 10:
        return 0
    near = np.linalg.norm(rgb[ys, xs] - skin, axis=1) < max_dist
    if near.sum() < 10:
        return 0
    shift = (xs[near].mean() - xs.mean()) / max(xs.max() - xs.min(), 1)
    return 0 if abs(shift) < min_shift else int(np.sign(shift))


def _near_frontal(it: _Item, cfg: TrackConfig) -> bool:
    """Whether this photo's descriptor can be compared with another's (both near-frontal)."""
    angle = facing_angle_deg(it.R)
    offset = nose_offset_in_mask(it.landmarks, it.mask) if it.mask is not None else None
    it.record.update({"facing_angle_deg": round(angle, 2),
                      "nose_offset_in_mask": None if offset is None else round(offset, 4)})
    return angle <= cfg.identity_check.max_angle_deg and (offset is None or offset <= cfg.identity_check.max_nose_offset)


def _pairwise_identity(items: list[_Item], cfg: TrackConfig, warnings: list[str]) -> list[dict[str, Any]]:
    """dlib descriptor distance of every pair of photos with a landmark fit; only pairs of near-frontal
    photos can raise the different-people warning.

    Why: the descriptor is trained on near-frontal faces; between a frontal photo and a 65 degree
    profile of one synthetic person it measures 0.5-0.7, above dlib's 0.6, while two near-frontal
    photos of one person measure ~0.3."""
    threshold = cfg.same_person_distance
    out = []
    det = [it for it in items if it.descriptor is not None and it.R is not None and it.record.get("cue") == CUE_LANDMARKS]
    frontal = {id(it): _near_frontal(it, cfg) for it in det}
    for a in range(len(det)):
        for b in range(a + 1, len(det)):
            d = descriptor_distance(det[a].descriptor, det[b].descriptor)
            compared = frontal[id(det[a])] and frontal[id(det[b])]
            out.append({"a": det[a].photo.name, "b": det[b].photo.name, "distance": round(d, 4), "compared": compared})
            if compared and d > threshold:
                msg = (f"{det[a].photo.path} and {det[b].photo.path} look like different people (dlib descriptor "
                       f"distance {d:.2f} > {threshold:g}); track photos of one person only")
                warnings.append(msg)
                log.warning(msg)
    return out


def _identity(fit: FitResult) -> IdentityParams:
    identity = IdentityParams.mean()
    identity.shape, identity.features = fit.shape.tolist(), fit.features.tolist()
    identity.hair_volume, identity.hair_length = 0.5, 0.3
    return identity


def _fit_points(it: _Item) -> np.ndarray | None:
    """The landmarks the photo's fit uses: the corrected ones once the correction is kept, else dlib's."""
    return it.corrected_landmarks if it.correction_kept else it.landmarks


def _corrected_points(it: _Item) -> np.ndarray | None:
    """The landmarks a fit with the correction uses: corrected where it was within its bound, else dlib's."""
    return it.landmarks if it.corrected_landmarks is None else it.corrected_landmarks


def _observations(detected: list[_Item], items: list[_Item], guesses: list[float],
                  points=_fit_points) -> list[PhotoObservation]:
    return [PhotoObservation(it.record["file"], it.rgb.shape[1], it.rgb.shape[0], points(it),
                             box_face_size(it.box), guesses[items.index(it)]) for it in detected]


def _apply_correction(head: HeadModel, detected: list[_Item], items: list[_Item], guesses: list[float],
                      shared: bool, cfg: TrackConfig, fit: FitResult) -> FitResult | None:
    """Refit the landmark photos with their corrected points (where the correction was within
    ``detect.max_correction``) and keep that fit only if the head model explains them about as well as
    dlib's own: every photo's RMSE at most ``detect.max_correction_rmse_ratio`` x its RMSE in ``fit`` (the
    fit on dlib's points). Returns the kept fit, else None (``fit`` stands).

    Why: the correction was learned on renders of the head model. On a face unlike them (a real photo,
    a wide-open smile) it can move points where no head-model face puts them; then either the offsets
    are larger than nearly all it learned, or the fit explains the moved points worse than dlib's, and
    they are dropped (for all photos, in the second case: the joint fit shares the identity). It runs
    after the profile checks, which were set on dlib's points."""
    candidates = [it for it in detected if it.corrected_landmarks is not None]
    if not candidates:
        return None
    corrected = fit_landmarks(head, _observations(detected, items, guesses, _corrected_points), cfg.fit, shared,
                              log=log.debug)
    ratio = [float(c / max(r, 1e-6)) for c, r in zip(corrected.rmse_px, fit.rmse_px)]
    kept = max(ratio) <= cfg.detect.max_correction_rmse_ratio
    for k, it in enumerate(detected):
        it.correction_kept = kept and it in candidates
        it.record["landmark_correction"].update({"kept": it.correction_kept, "rmse_ratio": round(ratio[k], 3)})
    if not kept:
        log.info("landmark correction not kept: the head model fits the corrected points %.2fx worse than "
                 "dlib's (detect.max_correction_rmse_ratio=%g)", max(ratio), cfg.detect.max_correction_rmse_ratio)
        return None
    return _store_fit(detected, corrected)


def _fit_landmark_photos(head: HeadModel, detected: list[_Item], items: list[_Item], guesses: list[float],
                         shared: bool, cfg: TrackConfig) -> FitResult:
    """The joint landmark fit of ``detected``; poses, focal and expressions are stored on the items."""
    return _store_fit(detected, fit_landmarks(head, _observations(detected, items, guesses), cfg.fit, shared,
                                              log=log.debug))


def _store_fit(detected: list[_Item], fit: FitResult) -> FitResult:
    for k, it in enumerate(detected):
        it.R, it.t, it.focal, it.expression = fit.rotations[k], fit.translations[k], float(fit.focals[k]), \
            fit.expressions[k]
        it.record.update({"cue": CUE_LANDMARKS, "landmark_rmse_px": round(float(fit.rmse_px[k]), 3),
                          "landmark_rmse_rel": round(float(fit.rmse_px[k] / box_face_size(it.box)), 4),
                          "detected_landmarks": np.round(_fit_points(it), 2).tolist(),
                          "dlib_landmarks": None if it.landmarks is None else np.round(it.landmarks, 2).tolist(),
                          "model_landmarks": np.round(fit.model_landmarks[k], 2).tolist()})
    return fit


def _raise_if_not_converged(detected: list[_Item], cfg: TrackConfig) -> None:
    for it in detected:
        rel, px = it.record["landmark_rmse_rel"], it.record["landmark_rmse_px"]
        if rel > cfg.fit.max_rmse:
            raise TrackingError(f"{it.photo.path}: the landmark fit did not converge (RMSE {px:.1f} px = "
                                f"{100 * rel:.1f}% of the face size, limit fit.max_rmse={cfg.fit.max_rmse:g}); "
                                f"check the photo (one unoccluded face) or raise fit.max_rmse / fit steps")


def _refine_photometric(head: HeadModel, identity: IdentityParams, detected: list[_Item], cfg: TrackConfig) -> None:
    """Each landmark-fitted photo's pose refined against its own pixels (``synshot.track.photometric``)."""
    for it in detected:
        appearance = appearance_from_photo(identity, it.rgb, it.landmarks, skin_colour([it]))
        splats = face_splats(head, appearance, it.expression, cfg.photometric.texture_size,
                             colour_basis=cfg.photometric.fit_colours)
        res = refine_pose(splats, it.rgb, it.R, it.t, it.focal, box_face_size(it.box), cfg.photometric,
                          landmarks=_fit_points(it))
        it.R, it.t = res.rotation, res.translation
        it.record["photometric"] = res.record()
        log.debug("%s: photometric refinement %s (loss %.4f -> %.4f, %.1f deg, %.1f s)", it.photo.name,
                  "kept" if res.accepted else "not kept", res.loss_before, res.loss_after, res.change_deg, res.seconds)


def _reject_profiles(detected: list[_Item], cfg: TrackConfig, warnings: list[str]) -> None:
    """A masked photo whose nose tip sits far off the centre of its mask's outline while its landmark
    pose faces the camera is a turned head: it goes to the silhouette cue (its landmarks then leave the
    identity fit).

    Why: on a ~65 degree profile dlib still returns 68 points laid out like a frontal face, and the
    fit explains them with a near-frontal pose at ~1 px RMSE (43-60 degrees wrong on the validation
    profiles). Where the nose tip sits in the head's outline (:func:`nose_offset_in_mask`, on the
    points the fit uses) tells a profile from a near-frontal photo without trusting the pose those
    points give. ``profile_check`` sets both bounds (docs/tracking.md)."""
    check = cfg.profile_check
    for it in detected:
        if it.mask is None or len(detected) < 2:
            continue
        offset = nose_offset_in_mask(_fit_points(it), it.mask)
        angle = facing_angle_deg(it.R)
        if offset is not None and offset > check.max_nose_offset and angle <= check.max_angle_deg:
            msg = (f"{it.photo.path}: the mask shows a turned head (nose {offset:.2f} off the outline's centre; the "
                   f"landmark fit turned it only {angle:.0f} degrees); fitting this photo by its silhouette "
                   f"(landmarks are unreliable on strong profiles)")
            warnings.append(msg)
            log.warning(msg)
            it.record["cue"] = CUE_SILHOUETTE
            detected = [d for d in detected if d is not it]


def _reject_poses_the_silhouette_contradicts(detected: list[_Item], mesh: HairLinearMesh, cfg: TrackConfig,
                                             warnings: list[str]) -> None:
    """A landmark pose that the photo's mask contradicts is dropped for the silhouette cue.

    Why: on a strong profile dlib still returns 68 points, laid out like a frontal face, and the fit
    explains them with a near-frontal pose at a low RMSE. The mask does not lie about the yaw: if a
    silhouette fit from the standard yaws matches the mask much better than the landmark pose (refined
    locally on the mask), and the two poses differ by more than ``silhouette.max_disagreement_deg``,
    the photo is fitted by its silhouette instead.
    """
    from synshot.track.geometry import rotation_error_deg

    for it in detected:
        if it.mask is None:
            continue
        local = fit_silhouette(mesh, it.mask, it.focal, float(it.t[2]), cfg.silhouette, init=(it.R, it.t),
                               only_init=True)
        free = fit_silhouette(mesh, it.mask, it.focal, float(it.t[2]), cfg.silhouette)
        angle = rotation_error_deg(free.rotation, it.R)
        it.record["silhouette_check"] = {"landmark_pose_loss": round(local.loss, 5), "free_loss": round(free.loss, 5),
                                         "angle_deg": round(angle, 2)}
        if free.loss < cfg.silhouette.reject_ratio * local.loss and angle > cfg.silhouette.max_disagreement_deg:
            msg = (f"{it.photo.path}: the landmark pose disagrees with the mask by {angle:.0f} degrees; fitting this "
                   f"photo by its silhouette (dlib landmarks are unreliable beyond ~45 degrees of yaw)")
            warnings.append(msg)
            log.warning(msg)
            it.record["cue"] = CUE_SILHOUETTE


def _read_turned_face(head: HeadModel, identity: IdentityParams, it: _Item, cfg: TrackConfig) -> None:
    """A photo fitted by its silhouette takes a landmark pose when the predictor finds its face inside boxes
    that the silhouette pose places (``synshot.track.turned_face``); otherwise its silhouette pose stands."""
    face, record = read_turned_face(head, identity, it.rgb, it.focal, it.R, it.t,
                                    load_predictor(cfg.detect.predictor_file), load_box_map(cfg.detect.predictor_file),
                                    cfg.turned_faces, cfg.fit, turned_head=it.record.get("face_side", 0) != 0,
                                    tta_shift=cfg.detect.tta_shift)
    it.record["turned_face"] = record
    if face is None:
        log.info("%s: the landmark predictor did not find a turned face (%d of %d starts agree); keeping its "
                 "silhouette pose", it.photo.name, record["agreeing"], len(record["starts"]))
        return
    it.R, it.t, it.box = face.rotation, face.translation, face.box
    it.corrected_landmarks, it.correction_kept = face.landmarks, True
    it.expression = np.zeros(len(head.expression_names))     # the pose fit's: one profile pins no expression
    it.record.update({"cue": CUE_LANDMARKS, "box_source": BOX_FROM_SILHOUETTE,
                      "face_box": [round(v, 1) for v in face.box],
                      "landmark_rmse_px": round(face.rmse_px, 3), "landmark_rmse_rel": round(face.rmse_rel, 4),
                      "detected_landmarks": np.round(face.landmarks, 2).tolist(),
                      "model_landmarks": np.round(face.model_landmarks, 2).tolist()})
    log.info("%s: landmarks read by the predictor from the silhouette pose (%d of %d starts agree; RMSE %.1f px)",
             it.photo.name, record["agreeing"], len(record["starts"]), face.rmse_px)


def _fit_silhouette_photos(head: HeadModel, identity: IdentityParams, items: list[_Item], detected: list[_Item],
                           guesses: list[float], shared: bool, mesh: HairLinearMesh | None, cfg: TrackConfig,
                           warnings: list[str]) -> IdentityParams:
    """Photos without a landmark pose (no face found, or a profile check moved them): pose and hair from
    the mask (the silhouette cue), then, with ``turned_faces``, landmarks read from that pose. Returns the
    identity: with the fitted hair, and refitted when turned faces joined the landmark photos."""
    shared_focal = float(np.mean([it.focal for it in detected])) if shared else None
    undetected = [it for it in items if it.landmarks is None or it.record.get("cue") == CUE_SILHOUETTE]
    if not undetected:
        return identity
    depth = float(np.median([it.t[2] for it in detected]))
    for it in undetected:
        k = items.index(it)
        it.focal = shared_focal if shared_focal else guesses[k]
        side = face_side(it.rgb, it.mask, skin_colour(detected))
        it.record["face_side"] = side
        sil = fit_silhouette(mesh, it.mask, it.focal, depth, cfg.silhouette, yaw_sign=side)
        if sil.iou < cfg.silhouette.min_iou and it.R is not None:   # it has a landmark pose: keep that one
            msg = (f"{it.photo.path}: the silhouette fit did not converge either (IoU {sil.iou:.2f}); keeping "
                   f"its landmark pose, which may be wrong")
            warnings.append(msg)
            log.warning(msg)
            it.record.update({"cue": CUE_LANDMARKS, "silhouette_iou": round(sil.iou, 4)})
            continue
        if sil.iou < cfg.silhouette.min_iou:
            raise TrackingError(f"{it.photo.path}: the silhouette fit did not converge (IoU {sil.iou:.2f} < "
                                f"silhouette.min_iou={cfg.silhouette.min_iou:g}); check "
                                f"{it.mask_source} mask of this photo or use a photo where the face is visible")
        it.R, it.t = sil.rotation, sil.translation
        if it.expression is None:
            it.expression = np.zeros(len(head.expression_names))
        identity.hair_volume, identity.hair_length = sil.hair_volume, sil.hair_length
        it.record.update({"cue": CUE_SILHOUETTE, "silhouette_iou": round(sil.iou, 4)})
        if cfg.turned_faces.enabled:
            _read_turned_face(head, identity, it, cfg)
    turned = [it for it in items if it.record.get("box_source") == BOX_FROM_SILHOUETTE]
    if turned and cfg.turned_faces.refit_identity:    # the turned faces' landmarks join the identity fit
        hair = identity.hair_volume, identity.hair_length
        fit = _fit_landmark_photos(head, [it for it in items if it.record["cue"] == CUE_LANDMARKS], items, guesses,
                                   shared, cfg)
        identity = _identity(fit)
        identity.hair_volume, identity.hair_length = hair
    return identity


def _check_output(out: Path, photo_paths: Sequence[Path]) -> None:
    out_r = out.resolve()
    for p in photo_paths:
        if out_r == p.resolve().parent or out_r in p.resolve().parents:
            raise UsageError(f"{out}: holds the input photos; write the subject to another folder (--out)")
    if out.is_dir() and any(out.iterdir()) and not (out / "tracking.json").is_file():
        raise UsageError(f"{out}: exists and holds files the tracker did not write; choose an empty or new "
                         f"folder (--out) so that nothing in it is lost")


def track_subject(images: str | Path | Sequence[str | Path], out_dir: str | Path, cfg: TrackConfig | None = None
                  ) -> TrackResult:
    """Track 1-N photos of one person and write a subject folder to ``out_dir`` (see the module docstring)."""
    cfg = cfg or TrackConfig()
    threads = torch.get_num_threads()
    torch.set_num_threads(cfg.torch_threads)   # the fit's tensors are small: extra threads only add overhead
    try:
        return _track(images, out_dir, cfg)
    finally:
        torch.set_num_threads(threads)


def _track(images: str | Path | Sequence[str | Path], out_dir: str | Path, cfg: TrackConfig) -> TrackResult:
    start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    out = Path(out_dir)
    paths = list_photos(list(images) if isinstance(images, (list, tuple)) else images)
    stems = [p.stem for p in paths]
    if len(set(stems)) != len(stems):
        raise PhotoError(f"{paths[0].parent}: two photos share a name stem ({sorted(stems)}); rename one")
    _check_output(out, paths)
    warnings: list[str] = []
    items = []
    for p in paths:
        photo = read_photo(p)
        rgb, s = _resize(photo.rgb, min(cfg.image_side, max(photo.rgb.shape[:2])))
        items.append(_Item(photo, np.ascontiguousarray(rgb, dtype=np.float32), s, {"file": f"{p.stem}.png",
                                                                                    "source": str(p)}))
    for it in items:
        _detect(it, cfg, warnings)
        size = (it.rgb.shape[1], it.rgb.shape[0])
        m = user_mask(it.photo.path, it.photo.size)
        if m is not None:
            it.mask, it.mask_source = _resize(m, max(size))[0], "user"
        elif it.photo.alpha is not None:
            it.mask, it.mask_source = _resize(it.photo.alpha, max(size))[0], "alpha"
    detected = [it for it in items if it.landmarks is not None]
    for it in items:
        if it.landmarks is None and it.mask is None:
            raise PhotoError(
                f"{it.photo.path}: no face found (dlib finds frontal to ~45 degree faces of ~40 px or more); "
                f"use such a photo, or add masks/{it.photo.path.stem}.png so its pose is fitted from the silhouette")
    if not detected:
        raise PhotoError(f"{paths[0].parent}: no face found in any photo; at least one photo must show the face "
                         f"within ~45 degrees of frontal")
    guesses, shared, focal_sources = _focal_guesses(items, cfg)

    head = HeadModel(HeadConfig.tiny() if cfg.head_mesh == "tiny" else HeadConfig())
    fit = _fit_landmark_photos(head, detected, items, guesses, shared, cfg)
    identity = _identity(fit)
    masked = any(it.mask is not None for it in items)
    if masked and len(detected) > 1:
        _reject_profiles(detected, cfg, warnings)
        if cfg.silhouette.check_landmark_poses:
            _reject_poses_the_silhouette_contradicts(
                detected, HairLinearMesh(head, identity, cfg.silhouette.points, cfg.seed), cfg, warnings)
        kept = [it for it in detected if it.record["cue"] == CUE_LANDMARKS]
        if kept and len(kept) < len(detected):   # the identity without the contradicted photos' landmarks
            fit = _fit_landmark_photos(head, kept, items, guesses, shared, cfg)
            identity = _identity(fit)
    detected = [it for it in detected if it.record["cue"] == CUE_LANDMARKS]
    if cfg.detect.correct_landmarks and not cfg.detect.predictor_replaces_dlib and detected:
        corrected = _apply_correction(head, detected, items, guesses, shared, cfg, fit)
        if corrected is not None:
            identity = _identity(corrected)
    _raise_if_not_converged(detected, cfg)
    # the silhouette cue's mesh, built once from the final identity
    mesh = HairLinearMesh(head, identity, cfg.silhouette.points, cfg.seed) if masked else None
    if cfg.photometric.enabled:
        _refine_photometric(head, identity, detected, cfg)
    identity_pairs = _pairwise_identity(items, cfg, warnings)
    identity = _fit_silhouette_photos(head, identity, items, detected, guesses, shared, mesh, cfg, warnings)
    outer, face_tris = head_faces(head)
    sheet_panels = []
    id_full = identity.copy()
    for it in items:
        h, w = it.rgb.shape[:2]
        K = np.array([[it.focal, 0, w / 2], [0, it.focal, h / 2], [0, 0, 1.0]])
        with torch.no_grad():
            v = head.vertices(id_full, torch.as_tensor(it.expression, dtype=torch.float32)).double().numpy()
        cam = v @ it.R.T + it.t
        head_sil = mesh_raster(cam, outer, K, w, h)
        if it.mask is None:
            face_sil = mesh_raster(cam, face_tris, K, w, h)
            it.mask, it.mask_source = grabcut_mask(it.rgb, head_sil, face_sil, cfg.masks.grabcut_iters,
                                                   cfg.masks.work_side), "grabcut"
        it.K = K
        it.record.update({"focal_px": round(it.focal, 3), "focal_source": ("shared " if shared else "") +
                          focal_sources[items.index(it)], "mask": it.mask_source, "width": w, "height": h,
                          "distance_m": round(float(np.linalg.norm(it.t)), 4)})
        title = f"{it.photo.name}: {it.record['cue']}" + (
            " (box from the silhouette pose)" if it.record.get("box_source") == BOX_FROM_SILHOUETTE else "") + (
            f", RMSE {it.record['landmark_rmse_px']:.1f} px" if it.record["cue"] == CUE_LANDMARKS else
            f", IoU {it.record['silhouette_iou']:.2f}")
        model_lm = it.record.get("model_landmarks") if it.record["cue"] == CUE_LANDMARKS else None
        sheet_panels.append(photo_panel(it.rgb, _fit_points(it), model_lm, head_sil,
                                        it.mask, title))
    seconds = time.perf_counter() - start
    frames_cam, frames_par = [], []
    for it in items:
        w2c = np.eye(4)
        w2c[:3, :3], w2c[:3, 3] = it.R, it.t
        h, w = it.rgb.shape[:2]
        frames_cam.append({"file": it.record["file"], "K": it.K.tolist(), "w2c": w2c.tolist(), "width": w, "height": h})
        frames_par.append({"file": it.record["file"], "expression": [float(x) for x in it.expression],
                           "head_pose": np.eye(4).tolist()})
    report = {"head_model_version": HEAD_MODEL_VERSION, "head_mesh": cfg.head_mesh, "shared_focal": shared,
              "seconds": round(seconds, 2), "seconds_per_photo": round(seconds / len(items), 2),
              "identity_distances": identity_pairs, "same_person_distance": cfg.same_person_distance,
              "warnings": warnings, "frames": [it.record for it in items]}
    with publish_dir(out, purpose="track") as stage:
        (stage / "images").mkdir()
        (stage / "masks").mkdir()
        for it in items:
            Image.fromarray((np.clip(it.rgb, 0, 1) * 255 + 0.5).astype(np.uint8)).save(stage / "images" / it.record["file"])
            Image.fromarray((np.clip(it.mask, 0, 1) * 255 + 0.5).astype(np.uint8)).save(stage / "masks" / it.record["file"])
        (stage / "cameras.json").write_text(json.dumps({"frames": frames_cam}, indent=1))
        (stage / "params.json").write_text(json.dumps({
            "head_model_version": HEAD_MODEL_VERSION, "identity": identity.to_dict(),
            "expression_names": list(head.expression_names), "frames": frames_par}, indent=1))
        (stage / "tracking.json").write_text(json.dumps(report, indent=1))
        (stage / "track_config.yaml").write_text(dump_config(cfg))
        Image.fromarray(tracking_sheet(sheet_panels)).save(stage / "tracking.png")
    log.info("tracked %d photos (%s) in %.1f s -> %s", len(items),
             ", ".join(f"{it.photo.name}: {it.record['cue']}" for it in items), seconds, out)
    return TrackResult(out, [it.record for it in items], identity.to_dict(), warnings, seconds)
