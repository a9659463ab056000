"""Training-length study: how the prior's validation numbers grow with its training steps.

    synshot data length RUN_DIR [RUN_DIR ...] --baseline EVAL_DIR --plot docs/img/training_length.png

Each RUN_DIR is a training run (``config.json`` from ``python -m train``) whose checkpoints were
exported and evaluated on validation subjects into ``RUN_DIR/eval_steps/<step>/`` (the layout of
``synshot eval ... split=validation out=RUN_DIR/eval_steps/<step>``). The no-prior baseline, which
does not depend on the checkpoint, comes from ``--baseline``. Prints a markdown table per run and
step (mean ``psnr_full`` per method, paired difference to the no-prior fit with a 95 % t interval
over subjects); the plot draws prior only (and any other evaluated method) against steps, one
line style per run, with the no-prior mean as a horizontal line.
"""

from __future__ import annotations

import json
from pathlib import Path

from data_tools.study import (METHODS, StudyConfig, delta_cell, footnote, mean_of, new_axes, number, paired, per_subject,
                              run_study, save_plot, study_command)
from synshot.cli import UsageError


def run_label(config: dict) -> str:
    """What tells runs apart in this study: E_id's texture input (train/encoder_input.py)."""
    tex = config.get("encoder_input", {}).get("tex", "albedo")
    return f"{config.get('name', '?')} (E_id input: {tex})"


def collect(runs: list[Path], baseline: Path | None, metric: str = "psnr_full") -> list[dict]:
    """One row per (run, evaluated step)."""
    if baseline is None:
        raise UsageError("--baseline EVAL_DIR is needed: the no-prior results of the same subjects")
    no_prior = per_subject(baseline, "no_prior", metric)
    if not no_prior:
        raise UsageError(f"{baseline}: no no_prior results (run synshot eval methods=[no_prior] out={baseline})")
    rows = []
    for run in runs:
        config_path = run / "config.json"
        if not config_path.is_file():
            raise UsageError(f"{config_path}: not a training run folder (python -m train writes config.json)")
        config = json.loads(config_path.read_text())
        steps = sorted((p for p in (run / "eval_steps").glob("*") if p.name.isdigit()), key=lambda p: int(p.name))
        if not steps:
            raise UsageError(f"{run / 'eval_steps'}: no evaluated steps (synshot eval ... out={run}/eval_steps/<step>)")
        for step_dir in steps:
            psnr = {m: per_subject(step_dir, m, metric) for m in METHODS if m != "no_prior"}
            psnr["no_prior"] = no_prior
            row = {"run": run.name, "label": run_label(config), "step": int(step_dir.name), "psnr": psnr}
            for m in ("prior_only", "stage1_only", "full"):
                row[f"delta_{m}"] = paired(psnr[m], no_prior)
            rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    lines = ["| run | steps | prior only | stage 1 only | full | no prior | prior only − no prior | full − no prior |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["psnr"]
        lines.append(f"| {r['label']} | {r['step']} | " + " | ".join(
            number(mean_of(p[m])) for m in ("prior_only", "stage1_only", "full", "no_prior"))
            + f" | {delta_cell(r['delta_prior_only'])} | {delta_cell(r['delta_full'])} |")
    n = max((len(r["psnr"]["no_prior"]) for r in rows), default=0)
    lines.append(footnote(n, "; – = not evaluated at that step"))
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = new_axes(9.0, 3.8, 110)
    labels = list(dict.fromkeys(r["label"] for r in rows))
    for i, label in enumerate(labels):
        mine = [r for r in rows if r["label"] == label]
        for m, marker in (("prior_only", "o-"), ("stage1_only", "s:"), ("full", "^--")):
            pts = [(r["step"], mean_of(r["psnr"][m])) for r in mine if r["psnr"][m]]
            if pts:
                ax.plot(*zip(*pts), f"C{i}{marker}", label=f"{m.replace('_', ' ')}, {label}")
    ax.axhline(mean_of(rows[0]["psnr"]["no_prior"]), color="k", ls="--", lw=1, label="no prior")
    ax.set_xlabel("training steps (4 images each)")
    save_plot(fig, ax, path, fontsize=7, loc="center left", bbox_to_anchor=(1.01, 0.5))


CLI = study_command("data length", "Training-length study: a table (and plot) from a run's checkpoints and their evaluations.",
                    example="synshot data length runs/small --baseline runs/small/eval_noprior --plot docs/img/training_length.png",
                    baseline_help="eval folder holding the no-prior results", plot_help="PNG plot of PSNR vs training steps")


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, cfg: StudyConfig) -> int:
    return run_study(args, cfg, collect, table, plot, "synshot data length RUN_DIR [RUN_DIR ...] --baseline EVAL_DIR")


if __name__ == "__main__":
    raise SystemExit(main())
