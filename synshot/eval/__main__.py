"""python -m synshot.eval [--config configs/eval/tiny.yaml] [key=value ...] -> report.md, metrics.json, grids."""

from __future__ import annotations

import argparse
import sys

from synshot.config import ConfigError, dump_config, load_config


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate the SynShot inversion against baselines and ablations.")
    parser.add_argument("--config", default="configs/eval/tiny.yaml")
    parser.add_argument("overrides", nargs="*", help="key=value, e.g. out=runs/eval2 methods=[full,no_prior]")
    args = parser.parse_args(argv)
    from synshot.eval.config import EvalConfig
    from synshot.eval.protocol import Evaluator
    from synshot.eval.report import write_report

    try:
        cfg = load_config(EvalConfig, args.config, args.overrides)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    from synshot.cli import SynshotError

    try:
        results, subjects = Evaluator(cfg).run()
    except (FileNotFoundError, SynshotError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    path = write_report(results, subjects, cfg.out, dump_config(cfg), cfg.grid_frames, cfg.split,
                        cfg.bootstrap_replicates, cfg.tile_size)
    print(f"[eval] report: {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
