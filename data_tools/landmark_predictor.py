"""Train the tracker's landmark predictor: ``synshot track predictor --out FILE.dat``.

Renders calibration identities exactly as held-out subjects are rendered (``data_tools.subject``),
from the same seeds and photos as the landmark correction (``data_tools.landmark_correction``:
neither validation nor test seeds), detects each face with the tracker's own detection path, and
trains a dlib shape predictor (``synshot.track.landmark_predictor``) whose targets are the points the
tracker's fit matches at the generator's true pose. Every photo of a calibration subject is used: the
three input photos (frontal, ~14 degree smile, ~64 degree profile) and the four eval views (16-53
degrees of yaw), so the predictor reads turned faces and profiles too. First a predictor trained without the last
``holdout`` fraction of identities measures the point error on them; then the shipped one is trained
on every identity. Each is also checked against dlib on the real faces that ship with installed
packages (``data_tools.real_faces``). The figures land in a JSON record beside the file.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from pydantic import Field

from synshot.cli import Command, UsageError, get_logger
from synshot.fsio import atomic_open
from data_tools.landmark_correction import CorrectionToolConfig, calibration_pairs
from data_tools.real_faces import dlib_agreement

log = get_logger("synshot.track.predictor")
PHOTOS = ("000.png", "001.png", "002.png", "eval/e0_v0.png", "eval/e0_v1.png", "eval/e0_v2.png", "eval/e0_v3.png")


class PredictorToolConfig(CorrectionToolConfig):
    """What the predictor is trained on and how (dlib ``shape_predictor_training_options``)."""

    rendered: str | None = None               # reuse subjects already rendered there (s<seed>/), else render
    holdout: float = Field(0.2, ge=0, lt=1)   # last identities held out to measure the error (0: skip)
    mirror: bool = True                       # add each photo's mirror image
    trees: int = Field(200, ge=1)             # per cascade level
    cascade_depth: int = Field(10, ge=1)
    tree_depth: int = Field(4, ge=1)
    oversampling: int = Field(20, ge=1)       # random initial shapes per sample
    nu: float = Field(0.1, gt=0, le=1)        # shrinkage
    feature_pool_size: int = Field(400, ge=2)
    seed: int = 0
    frames: tuple[str, ...] = PHOTOS              # the subject photos trained on (each in which a face is found)

    def options(self) -> dict:
        return {"num_trees_per_cascade_level": self.trees, "cascade_depth": self.cascade_depth,
                "tree_depth": self.tree_depth, "oversampling_amount": self.oversampling, "nu": self.nu,
                "feature_pool_size": self.feature_pool_size, "num_threads": self.workers,
                "random_seed": str(self.seed)}


def collect_samples(cfg: PredictorToolConfig) -> list[dict]:
    """Every calibration photo in which dlib finds a face: image, box, dlib's and the target points, seed."""
    return [{**p, "seed": seed}
            for seed, pairs in calibration_pairs(cfg, cfg.rendered, images=True, frames=cfg.frames) for p in pairs]


def held_out_errors(predictor, samples: list[dict]) -> dict:
    """Mean per-photo RMS (face sizes) of the inner and jaw points against the targets, and dlib's: over
    every photo, and per subject photo (``by_frame``: a profile's points are harder than a frontal's)."""
    from synshot.head.landmarks import INNER, JAW
    from synshot.track.landmark_predictor import point_rms

    rows = []
    for s in samples:
        pred = predictor.apply(s["image"], s["box"])
        rows.append({"frame": s["frame"], **{key + part: point_rms(points, s["model"], s["box"], index)
                                             for key, points in (("", pred), ("dlib_", s["dlib"]))
                                             for part, index in (("inner", INNER), ("jaw", JAW))}})
    keys = ("inner", "jaw", "dlib_inner", "dlib_jaw")
    mean = lambda group: {k: float(np.mean([r[k] for r in group])) for k in keys}  # noqa: E731
    frames = sorted({r["frame"] for r in rows})
    return {**mean(rows), "by_frame": {f: {"photos": sum(r["frame"] == f for r in rows),
                                           **mean([r for r in rows if r["frame"] == f])} for f in frames}}


CLI = Command("track predictor", "Train the tracker's 68-point landmark predictor on renders of the head model.",
              config_cls=PredictorToolConfig, out_help="the predictor file to write (.dat; a .json record beside it)",
              example="synshot track predictor --out synshot/track/landmark_predictor.dat identities=400")


def run(args, cfg: PredictorToolConfig) -> int:
    from synshot.track.landmark_predictor import fit_box_map, train

    if not args.out:
        raise UsageError("--out FILE.dat is required (the shipped one: synshot/track/landmark_predictor.dat)")
    samples = collect_samples(cfg)
    seeds = sorted({s["seed"] for s in samples})
    if len(seeds) < cfg.min_identities:
        raise UsageError(f"dlib found a face in only {len(seeds)} of {cfg.identities} identities (needed: "
                         f"min_identities={cfg.min_identities}); render more identities")
    record = {"seeds": [cfg.first_seed, cfg.first_seed + cfg.identities - 1], "identities": len(seeds),
              "photos": len(samples), "frames": list(cfg.frames), "size": cfg.size, "spp": cfg.spp,
              "mirror": cfg.mirror, "options": cfg.options()}
    held = seeds[len(seeds) - int(round(cfg.holdout * len(seeds))):] if cfg.holdout > 0 else []
    if held:
        start = time.perf_counter()
        fit = [s for s in samples if s["seed"] not in held]
        partial = train(fit, cfg.options(), cfg.mirror)
        errors = held_out_errors(partial, [s for s in samples if s["seed"] in held])
        record["held_out"] = {"seeds": [held[0], held[-1]], "identities": len(held),
                              "photos": sum(s["seed"] in held for s in samples), **errors,
                              "real_faces": dlib_agreement(partial)}
        log.info("held-out identities %d-%d: inner points %.4f (dlib %.4f), jaw %.4f (dlib %.4f) face sizes; real "
                 "faces: %.4f from dlib's inner points (%.0f s)", held[0], held[-1], errors["inner"],
                 errors["dlib_inner"], errors["jaw"], errors["dlib_jaw"], record["held_out"]["real_faces"]["inner"],
                 time.perf_counter() - start)
    start = time.perf_counter()
    predictor = train(samples, cfg.options(), cfg.mirror)
    record["train_seconds"] = round(time.perf_counter() - start, 1)
    record["real_faces"] = dlib_agreement(predictor)
    record["box_from_points"] = np.round(fit_box_map(samples), 6).tolist()   # turned faces' boxes
    out = Path(args.out)
    predictor.save(out)
    with atomic_open(out.with_suffix(".json"), "w") as f:
        f.write(json.dumps(record, indent=2) + "\n")
    log.info("wrote %s (%.1f MB) and its record %s: %d photos of %d identities", out, out.stat().st_size / 1e6,
             out.with_suffix(".json"), len(samples), len(seeds))
    return 0


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
