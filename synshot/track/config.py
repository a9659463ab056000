"""Typed config of the face tracker (``configs/track/default.yaml``; every key overridable)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from synshot.config import ConfigBase


class DetectConfig(ConfigBase):
    work_side: int = Field(384, ge=64)        # detection runs on a copy whose long side is this (speed)
    upsample: int = Field(1, ge=0, le=3)      # extra upsampling tried when nothing is found at 0
    min_face_px: float = Field(24.0, gt=0)    # smaller faces (in the original photo) are refused
    correct_landmarks: bool = True            # move dlib's points onto the head model's landmarks (``correction``)
    # kernel_ridge: dlib's inner points moved by a regression on their layout (landmark_correction);
    # shape_predictor: all 68 points re-read from the pixels by a predictor trained on head-model renders
    # (landmark_predictor; jaw on the model's contour)
    correction: Literal["kernel_ridge", "shape_predictor"] = "kernel_ridge"
    correction_file: str | None = None        # kernel_ridge: its .npz; default: the one shipped with synshot
    predictor_file: str | None = None         # shape_predictor: its .dat; default: the one shipped with synshot
    # shape_predictor: test-time augmentation, its points are the mean of 14 reads (the box moved by this fraction
    # of its size along x, y and in scale, each read also mirrored); 0: one read. Not for dlib's points: averaged,
    # they made the default tracker worse (docs/tracking.md, "Averaged reads")
    tta_shift: float = Field(0.0, ge=0, le=0.1)
    # kernel_ridge only (the shape predictor's points replace dlib's outright, docs/tracking.md):
    max_correction: float = Field(0.08, gt=0)  # a photo's correction is not used beyond this RMS offset (face sizes)
    max_correction_rmse_ratio: float = Field(1.25, gt=0)  # dropped when the fit explains it this much worse than dlib's

    @property
    def predictor_replaces_dlib(self) -> bool:
        """The shape predictor reads all 68 points from the pixels and they replace dlib's outright; the
        kernel ridge correction moves dlib's points and is gated (``max_correction``, the RMSE ratio)."""
        return self.correction == "shape_predictor"


class FitConfig(ConfigBase):
    pose_steps: int = Field(80, ge=0)
    shape_steps: int = Field(150, ge=0)
    expression_steps: int = Field(150, ge=0)
    lr: float = Field(0.02, gt=0)
    tolerance: float = Field(1e-3, ge=0)      # a stage stops when its loss fell less than this (relative) ...
    patience: int = Field(15, ge=1)           # ... over this many steps
    robust_sigma: float = Field(0.04, gt=0)   # Geman-McClure scale, in units of the face size
    jaw_weight: float = Field(0.5, ge=0)      # jaw (contour) points are noisier than inner points
    shape_prior: float = Field(2e-2, ge=0)      # x mean squared shape/feature coefficient (~N(0,1) prior)
    expression_prior: float = Field(2e-3, ge=0)
    focal_prior: float = Field(1e-2, ge=0)    # x squared log-ratio to the focal guess
    focal: Literal["shared", "per_photo", "auto"] = "auto"   # auto: shared when EXIF says one camera
    focal_guess: float = Field(2.0, gt=0)     # focal in units of the long image side when EXIF has none
    fit_focal: bool = False                   # landmarks barely constrain focal: keep the guess by default
    max_rmse: float = Field(0.08, gt=0)       # landmark RMSE / face size above which the fit failed


class SilhouetteConfig(ConfigBase):
    steps: int = Field(120, ge=0)
    lr: float = Field(0.02, gt=0)
    resolution: int = Field(64, ge=16)        # long side of the soft-silhouette raster
    points: int = Field(2500, ge=100)         # mesh vertices splatted
    yaw_inits_deg: list[float] = [-90.0, -65.0, -40.0, 40.0, 65.0, 90.0]
    max_facing_deg: float = Field(95.0, gt=0, le=180)   # a photo shows the face: poses turned further are penalised
    min_iou: float = Field(0.5, ge=0, le=1)   # below: the silhouette fit failed (error naming the photo)
    check_landmark_poses: bool = False        # masked photos: drop a landmark pose the mask contradicts (experimental)
    reject_ratio: float = Field(0.6, gt=0, le=1)       # ... when a free silhouette fit is this much better
    max_disagreement_deg: float = Field(25.0, gt=0)    # ... and its rotation differs by more than this


class PhotometricConfig(ConfigBase):
    """Photometric pose refinement of landmark-fitted photos (``synshot.track.photometric``)."""

    enabled: bool = False
    steps: int = Field(250, ge=0)             # pose + lighting steps ...
    light_steps: int = Field(30, ge=0)        # ... after this many lighting-only steps
    lr: float = Field(4e-3, gt=0)             # rotation (axis-angle); translation gets 0.1 x this
    light_lr: float = Field(2e-2, gt=0)
    face_px: float = Field(64.0, gt=8)        # the photo is worked on where the face is this wide (or smaller)
    texture_size: int = Field(128, ge=32)     # UV texels per side: one Gaussian per face texel
    opacity: float = Field(0.95, gt=0, le=1)
    blur_px: int = Field(3, ge=1)             # box blur of render and photo (odd): a wider basin
    robust: float = Field(0.15, gt=0)         # Geman-McClure-like scale of the per-pixel L1 (sum over RGB)
    fit_colours: bool = False                 # fit the albedo's skin/lip/brow colours with the lighting
    max_change_deg: float = Field(15.0, gt=0)  # a refinement rotating the head further is not kept ...
    max_landmark_drift: float = Field(0.02, ge=0)  # ... or moves the inner landmarks' RMSE up by more (face sizes)

    @field_validator("blur_px")
    @classmethod
    def _odd(cls, v: int) -> int:
        if v % 2 == 0:
            raise ValueError(f"photometric.blur_px must be odd (a centred box), got {v}")
        return v


class MaskConfig(ConfigBase):
    grabcut_iters: int = Field(4, ge=1)
    work_side: int = Field(320, ge=64)


class IdentityCheckConfig(ConfigBase):
    """Which photo pairs the different-people warning compares (both near-frontal)."""

    max_angle_deg: float = Field(30.0, gt=0)      # fitted head-to-camera angle
    max_nose_offset: float = Field(0.2, gt=0)     # nose tip off the centre of the mask's outline (0..0.5)


class ProfileCheckConfig(ConfigBase):
    """Which masked, landmark-fitted photos are turned too far for landmarks (they go to the silhouette cue):
    nose tip beyond ``max_nose_offset`` off the centre of the mask's outline (0..0.5) while the fitted
    head-to-camera angle is at most ``max_angle_deg`` (a frontal-looking fit of a turned head)."""

    max_nose_offset: float = Field(0.2, gt=0, le=0.5)
    max_angle_deg: float = Field(30.0, gt=0, le=180)


class TurnedFaceConfig(ConfigBase):
    """Photos the detector misses (or a profile check sends to the silhouette cue), read by the landmark predictor
    from boxes placed by their silhouette pose (``synshot.track.turned_face``; needs
    ``detect.correction=shape_predictor``). A start whose points the pose fit explains is kept only when enough
    starts agree on a turned head."""

    enabled: bool = False
    yaw_offsets_deg: list[float] = [-45.0, -30.0, -15.0, 0.0, 15.0, 30.0, 45.0]   # starts around the silhouette's yaw
    box_iterations: int = Field(4, ge=0)          # predictor -> box from its points -> predictor ...
    min_facing_deg: float = Field(45.0, ge=0, le=180)   # the detector finds faces turned less than this (where the
    #                                                    mask shows a turned head: skin off-centre, face_side +-1)
    agreement_deg: float = Field(5.0, gt=0)      # two starts agree when their poses differ by less
    min_agreeing: int = Field(2, ge=1)           # starts (the chosen one included) that must agree
    max_rmse: float = Field(0.05, gt=0)           # landmark RMSE / face size above which the start is not kept
    refit_identity: bool = True                  # their landmarks join a second identity fit (a profile shows depth)


class TrackConfig(ConfigBase):
    """Face tracker: dlib detection + landmarks, joint fit of the head model, silhouette cue, masks."""

    head_mesh: Literal["tiny", "default"] = "tiny"   # mesh used for the fit (its params serve every mesh)
    image_side: int = Field(1024, ge=64)      # photos are written (and fitted) at most this long side
    seed: int = 0
    torch_threads: int = Field(1, ge=1)       # the fit's tensors are small: more threads only add overhead
    same_person_distance: float = Field(0.6, gt=0)
    identity_check: IdentityCheckConfig = IdentityCheckConfig()
    profile_check: ProfileCheckConfig = ProfileCheckConfig()
    detect: DetectConfig = DetectConfig()
    fit: FitConfig = FitConfig()
    silhouette: SilhouetteConfig = SilhouetteConfig()
    turned_faces: TurnedFaceConfig = TurnedFaceConfig()
    photometric: PhotometricConfig = PhotometricConfig()
    masks: MaskConfig = MaskConfig()

    @model_validator(mode="after")
    def _turned_faces_need_the_predictor(self) -> "TrackConfig":
        if self.turned_faces.enabled and not self.detect.predictor_replaces_dlib:
            raise ValueError("turned_faces.enabled=true needs detect.correction=shape_predictor (the predictor "
                             "reads the turned face; configs/track/predictor.yaml sets both)")
        return self
