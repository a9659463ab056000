"""``synshot invert SUBJECT [--prior FILE] [--out DIR] [--config YAML] [key=value ...]``."""

from __future__ import annotations

import argparse

from synshot.cli import CheckpointFileError, Command, SynshotError, UsageError
from synshot.runs import invert_dir

CLI = Command("invert", "Invert the SynShot prior on 1-3 images of one subject (pivotal tuning).",
              config_cls="synshot.invert.config:InvertConfig", default_config="configs/invert/tiny.yaml",
              out_help="output folder (default <run>/invert/<subject name>)",
              example="synshot invert subjects/s3001 run=runs/tiny stage1.steps=50")
CLI.parser.add_argument("subject", nargs="?", metavar="SUBJECT", help="subject folder (images/, cameras.json, params.json)")
CLI.parser.add_argument("--subject", dest="subject_opt", help=argparse.SUPPRESS)  # older spelling
CLI.option("--prior", key="ckpt", metavar="FILE", help="exported prior (.safetensors); default <run>/prior.safetensors")
CLI.option("--ckpt", key="ckpt", help=argparse.SUPPRESS)  # older spelling of --prior
CLI.option("--run", key="run", help="run folder: its prior is inverted and the outputs go under it")


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, cfg) -> int:
    from synshot.invert.run import run_inversion
    from synshot.model.io import ExportError

    subject = args.subject or args.subject_opt
    if not subject:
        raise UsageError("no subject folder: synshot invert SUBJECT_DIR (see synshot invert --help)")
    out = args.out or invert_dir(cfg.run, subject)
    try:
        run_inversion(cfg, subject, out)
    except SynshotError:  # its own family: input 2, prior/avatar file 3, non-finite 4
        raise
    except ExportError as exc:
        raise CheckpointFileError(str(exc)) from None
    except (FileNotFoundError, ValueError) as exc:  # SubjectError included: the message names the file
        raise UsageError(str(exc)) from None
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
