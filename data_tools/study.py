"""What the prior studies share (identity scaling, training length): per-subject results of an
evaluation folder, paired differences with a t interval, and one command-line shape.

A study reads ``synshot eval`` folders (``<subject>/<method>/seed0/result.json``), compares each method
with the no-prior fit over the same subjects, prints a markdown table and can draw a plot.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Callable

from synshot.cli import Command, UsageError
from synshot.config import ConfigBase
from synshot.fsio import write_text

METHODS = ("no_prior", "prior_only", "stage1_only", "full")
T95 = {1: 12.71, 2: 4.30, 3: 3.18, 4: 2.78, 5: 2.57, 6: 2.45, 7: 2.36, 8: 2.31, 9: 2.26, 10: 2.23}


def per_subject(eval_dir: Path, method: str, metric: str = "psnr_full", seed: int = 0) -> dict[str, float]:
    """``{subject: metric averaged over its eval frames}`` from an evaluation folder."""
    from synshot.eval.metrics import mean_over_frames

    out = {}
    for result in sorted(eval_dir.glob(f"*/{method}/seed{seed}/result.json")):
        out[result.parents[2].name] = mean_over_frames(json.loads(result.read_text())["frames"])[metric]
    return out


def paired(a: dict[str, float], b: dict[str, float]) -> tuple[float, float, int]:
    """(mean of a-b over common subjects, 95 % t half-width, n)."""
    d = [a[s] - b[s] for s in sorted(set(a) & set(b))]
    n = len(d)
    if n == 0:
        return math.nan, math.nan, 0
    mean = sum(d) / n
    if n < 2:
        return mean, math.nan, n
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / (n - 1))
    return mean, T95.get(n - 1, 1.96) * sd / math.sqrt(n), n


def mean_of(values: dict[str, float]) -> float:
    return sum(values.values()) / len(values) if values else math.nan


def number(value: float, fmt: str = "{:.2f}") -> str:
    return "–" if math.isnan(value) else fmt.format(value)


def delta_cell(value: tuple[float, float, int]) -> str:
    """A paired difference as a table cell: "+1.23 ± 0.45" (no interval with one subject)."""
    return number(value[0], "{:+.2f}") + ("" if math.isnan(value[1]) else f" ± {value[1]:.2f}")


def footnote(n_subjects: int, extra: str = "") -> str:
    return (f"\nPSNR in dB (whole frame on white), mean over {n_subjects} validation subjects x their eval frames; "
            f"differences are paired over the same subjects, ± the 95 % t interval{extra}.")


def new_axes(width: float, height: float, dpi: int):
    """(figure, axes) of a headless matplotlib figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(width, height), dpi=dpi)


def save_plot(fig, ax, path: Path, **legend) -> None:
    """The studies' common finish: PSNR axis label, grid, legend, tight layout, written to ``path``."""
    ax.set_ylabel("PSNR on validation subjects (dB)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=legend.pop("fontsize", 8), **legend)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path)


class StudyConfig(ConfigBase):
    """Which runs make the study, and where its table and plot go."""

    runs: list[str] = []  # training run folders holding their evaluations
    baseline: str | None = None  # eval folder holding the no-prior results (or methods a run lacks)
    metric: str = "psnr_full"  # per-frame metric of synshot.eval (psnr_full, psnr_head, ...)
    plot: str | None = None  # write the study's plot here (PNG)


def study_command(name: str, description: str, example: str, baseline_help: str, plot_help: str) -> Command:
    cli = Command(name, description, config_cls=StudyConfig, out_help="also write the collected rows here (JSON)",
                  example=example)
    cli.option("runs", key="runs", nargs="*", help="training run folders")
    cli.option("--baseline", key="baseline", help=baseline_help)
    cli.option("--metric", key="metric", help="per-frame metric of synshot.eval (default psnr_full)")
    cli.option("--plot", key="plot", help=plot_help)
    return cli


def run_study(args, cfg: StudyConfig, collect: Callable[[list[Path], Path | None, str], list[dict]],
              table: Callable[[list[dict]], str], plot: Callable[[list[dict], Path], None], usage: str) -> int:
    """Collect the rows, print the table, write the plot and the rows when asked."""
    if not cfg.runs:
        raise UsageError(f"no runs: {usage}")
    rows = collect([Path(r) for r in cfg.runs], Path(cfg.baseline) if cfg.baseline else None, cfg.metric)
    print(table(rows))
    if cfg.plot:
        plot(rows, Path(cfg.plot))
    if args.out:
        write_text(args.out, json.dumps(rows, indent=2))
    return 0
