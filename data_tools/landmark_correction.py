"""Learn the tracker's landmark correction: ``synshot track correction --out FILE.npz``.

Renders calibration identities exactly as held-out subjects are rendered (``data_tools.subject``:
tiny head, skin detail, out-of-distribution identities and lighting) from seeds that are neither
validation (2001-2010) nor test (3001+) seeds, detects each face with the tracker's own detection
path, and pairs dlib's 68 points with where the head model's landmark table truly projects (the
generator's identity, expression, pose and camera). The pairs train
``synshot.track.landmark_correction`` (hyper-parameters by cross-validation over identities). Four
photos per identity: the frontal and the ~12 degree smile (as the held-out inputs) and two views at
28 and -15 degrees of yaw (so the correction is not only learned on near-frontal layouts).
"""

from __future__ import annotations

import json
import tempfile
from functools import lru_cache
from multiprocessing import get_context
from pathlib import Path

import numpy as np
from pydantic import Field, model_validator

from synshot.cli import Command, UsageError, get_logger
from synshot.config import ConfigBase
from synshot.eval.splits import TEST_SEEDS, TRACKER_TUNING_SEEDS, VALIDATION_SEEDS
from synshot.track.config import DetectConfig

log = get_logger("synshot.track.correction")

FRAMES = ("000.png", "001.png", "eval/e0_v1.png", "eval/e0_v3.png")


class CorrectionToolConfig(ConfigBase):
    """What the correction is learned from."""

    identities: int = Field(400, ge=2)        # calibration identities rendered (seeds first_seed...)
    first_seed: int = Field(101, ge=0)
    size: int = Field(128, ge=64)             # render side (pixels), as the tracking bench's subjects
    spp: int = Field(16, ge=1)
    workers: int = Field(2, ge=1)             # processes rendering and detecting
    folds: int = Field(5, ge=2)               # cross-validation folds (whole identities left out)
    min_identities: int = Field(50, ge=2)     # fewer identities with a detected face: an error, not a correction
    detect: DetectConfig = DetectConfig()

    @model_validator(mode="after")
    def _no_held_out_seeds(self) -> "CorrectionToolConfig":
        seeds = range(self.first_seed, self.first_seed + self.identities)
        if any(s in seeds for s in VALIDATION_SEEDS) or seeds.stop > TEST_SEEDS[0]:  # test seeds and all above
            raise ValueError(f"calibration seeds {seeds.start}-{seeds.stop - 1} overlap the validation (2001-2010) "
                             f"or test (3001+) seeds; use seeds 101-500 or 561-2000")
        if any(s in seeds for s in TRACKER_TUNING_SEEDS):
            raise ValueError(f"calibration seeds {seeds.start}-{seeds.stop - 1} overlap the tracker's tuning identities "
                             f"({TRACKER_TUNING_SEEDS[0]}-{TRACKER_TUNING_SEEDS[-1]}); use seeds 101-500 or 561-2000")
        return self


def pairs_from_subject(folder: Path, detect: DetectConfig, lhead, images: bool = False,
                       frames: tuple[str, ...] = FRAMES) -> list[dict]:
    """(frame, dlib points, box, true table points) of each of ``frames`` in which dlib finds a face; with
    ``images`` also the photo (uint8) and ``model``: the 68 points the tracker's fit matches at the true pose (inner
    points as ``true``, jaw points on the model's contour, snapped where dlib's jaw points are)."""
    import torch
    from PIL import Image

    from synshot.faces import landmarks68
    from synshot.faces.dlib_models import as_uint8_rgb
    from synshot.head import IdentityParams
    from synshot.track.api import detect_face
    from synshot.track.geometry import head_to_camera

    pairs = []
    for name in frames:
        sub = folder / Path(name).parent
        cams = {f["file"]: f for f in json.loads((sub / "cameras.json").read_text())["frames"]}
        params = json.loads((sub / "params.json").read_text())
        frame = next(f for f in params["frames"] if f["file"] == Path(name).name)
        rgb = np.asarray(Image.open(sub / "images" / frame["file"]).convert("RGB"), dtype=np.float32) / 255
        _, face = detect_face(rgb, detect)
        if face is None:
            continue
        cam = cams[frame["file"]]
        T = head_to_camera(cam, frame)
        K = np.asarray(cam["K"])
        with torch.no_grad():
            verts = lhead.vertices(IdentityParams.from_dict(params["identity"]),
                                   torch.tensor(frame["expression"], dtype=torch.float32))
            pts = lhead.fixed_points(verts).double().numpy()
        c = pts @ T[:3, :3].T + T[:3, 3]
        true = c[:, :2] / c[:, 2:3] * np.diag(K)[:2] + K[:2, 2]
        pair = {"frame": name, "dlib": landmarks68(rgb, face), "box": face.box, "true": true}
        if images:
            f32 = lambda a: torch.as_tensor(np.asarray(a), dtype=torch.float32)  # noqa: E731
            with torch.no_grad():
                model = lhead.project_landmarks(verts, f32(T[:3, :3]), f32(T[:3, 3]), f32(K[0, 0]), f32(K[:2, 2]),
                                                f32(pair["dlib"])).double().numpy()
            pair.update(image=as_uint8_rgb(rgb), model=model)
        pairs.append(pair)
    return pairs


@lru_cache(maxsize=1)
def _landmark_head():
    from synshot.head import HeadConfig, HeadModel
    from synshot.track.fit import LandmarkHead

    return LandmarkHead(HeadModel(HeadConfig.tiny()))


def identity_pairs(job: tuple[int, str | None, int, int, dict, bool, tuple[str, ...]]) -> tuple[int, list[dict]]:
    """One worker's job (seed, rendered, size, spp, detect config, images, frames): identity ``seed``'s pairs, from
    ``rendered/s<seed>`` when that subject is there, else rendered into a temporary folder and deleted."""
    seed, rendered, size, spp, detect, images, frames = job
    import torch

    from data_tools.subject import make_subject

    torch.set_num_threads(1)
    done = Path(rendered) / f"s{seed}" if rendered else None
    if done is not None and (done / "params.json").is_file():
        return seed, pairs_from_subject(done, DetectConfig(**detect), _landmark_head(), images, frames)
    with tempfile.TemporaryDirectory(prefix=f"calibration_s{seed}_") as tmp:
        folder = make_subject(seed, Path(tmp) / f"s{seed}", size=size, spp=spp, eval_views=4, eval_expressions=1,
                              tiny_head=True)
        return seed, pairs_from_subject(folder, DetectConfig(**detect), _landmark_head(), images, frames)


def calibration_pairs(cfg: CorrectionToolConfig, rendered: str | None = None, images: bool = False,
                      frames: tuple[str, ...] = FRAMES):
    """Yield (seed, pairs) of each calibration identity (:func:`identity_pairs` in ``cfg.workers``
    processes, in seed order), logging progress every 20 identities."""
    seeds = range(cfg.first_seed, cfg.first_seed + cfg.identities)
    jobs = [(s, rendered, cfg.size, cfg.spp, cfg.detect.model_dump(), images, tuple(frames)) for s in seeds]
    photos = 0
    with get_context("spawn").Pool(cfg.workers) as pool:
        for done, (seed, pairs) in enumerate(pool.imap(identity_pairs, jobs), 1):
            photos += len(pairs)
            yield seed, pairs
            if done % 20 == 0 or done == len(jobs):
                log.info("%d/%d identities, %d photos with a face", done, len(jobs), photos)


def collect_pairs(cfg: CorrectionToolConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Features (P, 136), targets (P, 102) and identity seeds (P,) from ``cfg.identities`` rendered identities."""
    from synshot.track.landmark_correction import INNER_IDX, layout_features

    x, y, groups = [], [], []
    for seed, pairs in calibration_pairs(cfg):
        for p in pairs:
            feat, _, size = layout_features(p["dlib"], p["box"])
            x.append(feat)
            y.append(((p["true"] - p["dlib"]) / size)[INNER_IDX].reshape(-1))
            groups.append(seed)
    return np.asarray(x), np.asarray(y), np.asarray(groups)


CLI = Command("track correction", "Learn the tracker's correction of dlib's 68 points from rendered identities.",
              config_cls=CorrectionToolConfig, out_help="the correction file to write (.npz)",
              example="synshot track correction --out synshot/track/landmark_correction.npz identities=400")


def run(args, cfg: CorrectionToolConfig) -> int:
    from synshot.track.landmark_correction import select_and_fit

    if not args.out:
        raise UsageError("--out FILE.npz is required (the shipped one: synshot/track/landmark_correction.npz)")
    x, y, groups = collect_pairs(cfg)
    found = len(np.unique(groups))
    if found < max(cfg.min_identities, cfg.folds):
        raise UsageError(f"dlib found a face in only {found} of {cfg.identities} identities (needed: "
                         f"min_identities={cfg.min_identities}, at least folds={cfg.folds}); render more identities")
    correction = select_and_fit(x, y, groups, cfg.folds, log=log.info)
    correction.meta.update({"seeds": [cfg.first_seed, cfg.first_seed + cfg.identities - 1], "size": cfg.size,
                            "spp": cfg.spp, "frames": list(FRAMES)})
    correction.save(args.out)
    m = correction.meta
    log.info("wrote %s: %d photos of %d identities; inner-point RMS %.4f -> %.4f face sizes (cross-validated)",
             args.out, m["pairs"], m["identities"], m["uncorrected_rms"], m["cv_rms"])
    return 0


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
