"""Run the benchmarks and write ``results/bench.json`` (named figures) and a printed table."""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import time
import traceback
from pathlib import Path

from synshot.bench import AREAS


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--only", nargs="*", choices=AREAS, help="run only these areas")
    parser.add_argument("--out", default="results/bench.json")
    parser.add_argument("--quick", action="store_true", help="smaller sizes, for smoke runs")
    args = parser.parse_args(argv)

    results: dict = {"environment": _environment(), "figures": {}, "errors": {}}
    for area in args.only or AREAS:
        try:
            module = importlib.import_module(f"synshot.bench.{area}")
        except ModuleNotFoundError as exc:
            if exc.name == f"synshot.bench.{area}":
                results["errors"][area] = "no benchmark module"
                continue
            raise
        start = time.perf_counter()
        try:
            figures = module.run(quick=args.quick)
        except Exception as exc:  # one failing area must not hide the others' numbers
            results["errors"][area] = f"{type(exc).__name__}: {exc}"
            traceback.print_exc()
            continue
        results["figures"].update(figures)
        print(f"[bench] {area}: {len(figures)} figures in {time.perf_counter() - start:.1f} s", flush=True)

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, sort_keys=True))
    width = max((len(k) for k in results["figures"]), default=10)
    print(f"\n{'figure'.ljust(width)}  value")
    for key, value in sorted(results["figures"].items()):
        shown = f"{value:.4g}" if isinstance(value, float) else str(value)
        print(f"{key.ljust(width)}  {shown}")
    for area, err in results["errors"].items():
        print(f"[bench] {area}: ERROR {err}")
    print(f"\nwrote {out}")
    return 1 if results["errors"] and not results["figures"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
