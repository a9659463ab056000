"""Track photos of one person into a subject folder: ``synshot track PHOTOS --out SUBJECT``.

PHOTOS is a folder of 1-3 photos (or its ``images/`` subfolder, with optional ``masks/``) or photo
files. Writes images/, masks/, cameras.json, params.json (the format ``synshot invert`` reads) plus
tracking.json (per photo: cue, landmark RMSE, detector score, face box, focal) and tracking.png.
"""

from __future__ import annotations

from pathlib import Path

from synshot.cli import Command, get_logger
from synshot.track.config import TrackConfig

log = get_logger("synshot.track")

CLI = Command("track", "Fit the head model to 1-3 photos of one person and write a subject folder.",
              config_cls=TrackConfig, default_config="configs/track/default.yaml",
              out_help="subject folder to write (default subjects/<photos folder name>)",
              example="synshot track photos/ --out subjects/me fit.shape_steps=300")
CLI.parser.add_argument("photos", nargs="+", help="a folder of photos (or photo files)")


def run(args, cfg: TrackConfig) -> int:
    from synshot.track import track_subject

    source = args.photos[0] if len(args.photos) == 1 else args.photos
    first = Path(args.photos[0])
    out = Path(args.out) if args.out else Path("subjects") / (first.name if first.is_dir() else first.parent.name)
    result = track_subject(source, out, cfg)
    for fr in result.frames:
        detail = (f"landmark RMSE {fr['landmark_rmse_px']:.2f} px" if fr["cue"] == "landmarks"
                  else f"silhouette IoU {fr['silhouette_iou']:.2f}")
        log.info("%s: %s, %s, focal %.0f px, mask %s", fr["file"], fr["cue"], detail, fr["focal_px"], fr["mask"])
    log.info("wrote %s (%.1f s; see tracking.png)", result.out_dir, result.seconds)
    return 0


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
