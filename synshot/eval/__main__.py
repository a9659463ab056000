"""``synshot eval [--config configs/eval/tiny.yaml] [--out DIR] [key=value ...]`` -> report.md, metrics.json, grids."""

from __future__ import annotations

from synshot.cli import Command, UsageError, get_logger
from synshot.config import dump_config

log = get_logger(__name__)

CLI = Command("eval", "Evaluate the SynShot inversion against baselines and ablations on held-out subjects.",
              config_cls="synshot.eval.config:EvalConfig", default_config="configs/eval/tiny.yaml",
              out_help="output folder: report.md, metrics.json, grids", out_key="out",
              example="synshot eval --out runs/eval2 methods=[full,no_prior]")


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, cfg) -> int:
    from synshot.eval.protocol import Evaluator
    from synshot.eval.report import write_report

    evaluator = Evaluator(cfg)
    try:
        results, subjects = evaluator.run()
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    path = write_report(results, subjects, cfg.out, dump_config(cfg), cfg.grid_frames, cfg.split,
                        cfg.bootstrap_replicates, cfg.tile_size, geometry=cfg.geometry, tracking=evaluator.tracking)
    log.info("report: %s", path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
