"""Run the benchmarks and write ``results/bench.json`` (named figures) and a printed table."""

from __future__ import annotations

import importlib
import json
import platform
import time
import traceback
from pathlib import Path
from typing import Literal

from synshot.bench import AREAS
from synshot.cli import Command, get_logger
from synshot.config import ConfigBase


def _environment() -> dict:
    import torch

    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cpu_count": __import__("os").cpu_count(),
        "cuda": torch.cuda.is_available(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
    }
    if torch.cuda.is_available():
        env["gpu"] = torch.cuda.get_device_name(0)
    return env


class BenchConfig(ConfigBase):
    """Which benchmarks to run and at what size."""

    only: list[Literal[AREAS]] | None = None  # areas to run (default: all of synshot.bench.AREAS)
    quick: bool = False  # smaller sizes, for smoke runs


log = get_logger("bench")

CLI = Command("bench", "Run the benchmarks: named figures -> a JSON file and a printed table.",
              config_cls=BenchConfig, out_help="JSON file (default results/bench.json)",
              example="synshot bench --only render --out results/bench_render.json")
CLI.option("--only", key="only", nargs="*", choices=AREAS, help="run only these areas")
CLI.option("--quick", key="quick", action="store_true", help="smaller sizes, for smoke runs")


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, cfg: BenchConfig) -> int:
    results: dict = {"environment": _environment(), "figures": {}, "errors": {}}
    for area in cfg.only or AREAS:
        try:
            module = importlib.import_module(f"synshot.bench.{area}")
        except ModuleNotFoundError as exc:
            if exc.name == f"synshot.bench.{area}":
                results["errors"][area] = "no benchmark module"
                continue
            raise
        start = time.perf_counter()
        try:
            figures = module.run(quick=cfg.quick)
        except Exception as exc:  # one failing area must not hide the others' numbers
            results["errors"][area] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            continue
        results["figures"].update(figures)
        log.info("%s: %d figures in %.1f s", area, len(figures), time.perf_counter() - start)

    out = Path(args.out or "results/bench.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True))
    width = max((len(k) for k in results["figures"]), default=10)
    print(f"\n{'figure'.ljust(width)}  value")
    for key, value in sorted(results["figures"].items()):
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{key.ljust(width)}  {shown}")
    for area, err in results["errors"].items():
        log.error("%s: %s", area, err)
    log.info("wrote %s", out)
    return 1 if results["errors"] and not results["figures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
