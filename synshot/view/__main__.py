"""synshot view [AVATAR] [--subject DIR] [--expr SEQ.json|SUBJECT ...] [port=8080 ...]: the browser viewer.

Serves on 127.0.0.1 (the next free port when the asked one is taken; the URL is printed), until
Ctrl-C or until the last browser tab has been closed for ``exit_after_close_s`` seconds.
"""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

# Before torch loads OpenMP: idle worker threads sleep instead of spinning, so the decoder does not
# starve the browser (which draws on the same CPU when WebGL is software). Measured 10x on a busy CPU.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pydantic import Field

from synshot.cli import EXIT_CHECKPOINT, CheckpointFileError, Command, UsageError, get_logger
from synshot.config import ConfigBase
from synshot.runs import DEFAULT_RUN, avatar_path

LOG = get_logger("synshot.view")


class ViewConfig(ConfigBase):
    """Which avatar to show, with what, and how to serve it (every key can be set as key=value)."""

    run: str = DEFAULT_RUN  # with ``subject``: show <run>/invert/<subject>/avatar.safetensors
    avatar: str | None = None  # an avatar file (overrides run + subject); with prior=true an exported prior
    subject: str | None = None  # the avatar's subject (its folder: its input photos are shown to compare)
    prior: bool = False  # ``avatar`` is an exported prior: show its average identity (no inversion)
    expr: list[str] = []  # driving sequences: sequence JSONs or other subject folders
    host: str = "127.0.0.1"  # local only; another address exposes the avatar to the network
    port: int = Field(8080, ge=0, le=65535)  # taken -> the next free one (printed)
    device: str = "cpu"  # where the prior decodes ("cuda" on a GPU machine)
    exit_after_close_s: float | None = Field(10.0, ge=0)  # stop when no tab is open for this long; null: never
    mesh: str = "default"  # head mesh of prior=true avatars (an avatar file carries its own)


CLI = Command("view", "Look at an avatar in the browser: orbit, expression and pose sliders, driving "
                      "sequences, input photos, screenshots.", config_cls=ViewConfig,
              out_help="folder for screenshots (default: beside the avatar, view_screenshots/)",
              example="synshot view --subject subjects/s3001 --expr subjects/s3002 port=8090")
CLI.option("avatar", key="avatar", help="avatar.safetensors from synshot invert (or an exported prior with --prior)")
CLI.option("--subject", key="subject", help="the run's avatar of this subject; a folder also gives the photos")
CLI.option("--prior", key="prior", action="store_true", help="AVATAR is an exported prior: its average identity")
CLI.option("--expr", key="expr", action="append", help="driving sequence: JSON or another subject folder (repeatable)")
CLI.option("--port", key="port", type=int, help="port on 127.0.0.1 (taken: the next free one)")
CLI.option("--device", key="device", help="cpu or cuda")


def load_for_view(path: Path, prior: bool, cfg: ViewConfig):
    from synshot.invert.avatar import AvatarError, load_avatar
    from synshot.model.io import ExportError

    try:
        if prior:
            from synshot.view.prior_avatar import load_prior_avatar

            return load_prior_avatar(path, mesh=cfg.mesh, device=cfg.device)
        return load_avatar(path, device=cfg.device)
    except (AvatarError, ExportError) as exc:
        raise CheckpointFileError(str(exc)) from None


def load_sequences(paths: list[str], avatar) -> dict:
    from synshot.invert.drive import DriveError, sequence_from_json, sequence_from_subject
    from synshot.invert.subject import SubjectError

    out = {}
    size = int(avatar.invert_config.get("image_size", avatar.reference["width"]))
    for p in map(Path, paths):
        try:
            out[p.stem if p.is_file() else p.name] = (sequence_from_subject(p, avatar, size) if p.is_dir()
                                                     else sequence_from_json(p, avatar))
        except (DriveError, SubjectError, FileNotFoundError) as exc:
            raise UsageError(str(exc)) from None
    return out


def load_photos(subject: str | None, avatar) -> list:
    if not subject or not Path(subject).is_dir():
        return []
    import numpy as np

    from synshot.invert.subject import SubjectError, load_subject
    from synshot.view.server import Photo

    try:
        subj = load_subject(subject, size=int(avatar.invert_config.get("image_size", avatar.reference["width"])),
                            head_model_version=avatar.head_model_version, expression_names=avatar.expression_names)
    except (SubjectError, FileNotFoundError) as exc:
        raise UsageError(str(exc)) from None
    photos = []
    for f in subj.frames:
        img = (f.rgb.clamp(0, 1).permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        photos.append(Photo(f.name, img, f.K.float(), f.w2c.float(),
                            f.expression.float(), f.head_pose.float()))
    return photos


def run(args, cfg: ViewConfig) -> int:
    from synshot.view.server import AvatarViewer

    if cfg.avatar is None and cfg.subject is None:
        raise UsageError("which avatar? pass AVATAR (a file) or --subject NAME (its avatar under the run)")
    avatar_file = Path(cfg.avatar) if cfg.avatar else avatar_path(cfg.run, cfg.subject)
    avatar, error = None, None
    try:
        avatar = load_for_view(avatar_file, cfg.prior, cfg)
    except CheckpointFileError as exc:
        error = str(exc)
        print(f"error: {error}", file=sys.stderr, flush=True)
    sequences = load_sequences(cfg.expr, avatar) if avatar is not None else {}
    photos = load_photos(cfg.subject, avatar) if avatar is not None else []
    shots = Path(args.out) if args.out else avatar_file.resolve().parent / "view_screenshots"
    viewer = AvatarViewer(avatar, host=cfg.host, port=cfg.port, sequences=sequences, photos=photos,
                          screenshot_dir=shots, error=error)
    if viewer.port != cfg.port and cfg.port != 0:
        LOG.warning("port %d is in use: serving on %d", cfg.port, viewer.port)
    print(f"viewer: {viewer.url}  (Ctrl-C to stop)", flush=True)
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        viewer.serve(cfg.exit_after_close_s)
    except KeyboardInterrupt:
        viewer.close()
    return EXIT_CHECKPOINT if error else 0


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


if __name__ == "__main__":
    raise SystemExit(main())
