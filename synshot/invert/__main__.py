"""python -m synshot.invert --subject DIR [--ckpt FILE] [--out DIR] [--config YAML] [key=value ...]"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from synshot.config import ConfigError, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m synshot.invert",
                                     description="Invert the SynShot prior on a few images of a subject.")
    parser.add_argument("--subject", required=True, help="subject folder (images/, cameras.json, params.json)")
    parser.add_argument("--ckpt", help="exported prior (.safetensors); overrides ckpt= in the config")
    parser.add_argument("--out", help="output folder (default runs/invert/<subject name>)")
    parser.add_argument("--config", default="configs/invert/default.yaml", help="YAML config")
    parser.add_argument("overrides", nargs="*", help="key=value overrides, e.g. stage1.steps=50")
    args = parser.parse_args(argv)

    from synshot.invert.config import InvertConfig
    from synshot.invert.run import run_inversion
    from synshot.invert.subject import SubjectError

    overrides = list(args.overrides) + ([f"ckpt={args.ckpt}"] if args.ckpt else [])
    try:
        cfg = load_config(InvertConfig, args.config, overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = Path(args.out) if args.out else Path("runs/invert") / Path(args.subject).resolve().name
    try:
        run_inversion(cfg, args.subject, out)
    except (SubjectError, FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
