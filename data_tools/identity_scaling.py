"""Identity-scaling study: table + plot from trained priors and their evaluations.

    synshot data scaling RUN_DIR [RUN_DIR ...] --plot docs/img/identity_scaling.png [--out rows.json]

Each RUN_DIR is a training run (``config.json`` from ``python -m train``) holding the per-subject
results of ``synshot eval ... split=validation out=RUN_DIR/eval`` (``<subject>/<method>/seed0/
result.json``). The number of training identities and expressions comes from the dataset manifest the
run trained on; methods missing in a run's evaluation (the no-prior baseline depends on the prior
only through its Gaussian count, equal for every run here) are taken from the eval folder
``--baseline``. Prints a markdown table: mean ``psnr_full`` (the evaluation's primary metric) per
method and the paired difference to the no-prior baseline over the same subjects, with a 95 % t
interval over subjects.
"""

from __future__ import annotations

import json
from pathlib import Path

from data_tools.study import (METHODS, StudyConfig, delta_cell, footnote, mean_of, new_axes, number, paired,
                              per_subject, run_study, save_plot, study_command)


def _dataset_counts(run: Path) -> dict:
    from synshot.data.synthesize import DatasetPlan, SynthConfig
    from synshot.data.writer import read_manifest

    cfg = json.loads((run / "config.json").read_text())
    manifest = read_manifest(cfg["data"]["url"], cfg["data"]["split"])
    # the SynthConfig the shards were rendered with (its raytrace section repeats spp; the plan needs neither)
    gen = {k: v for k, v in manifest["generator_config"]["synth"].items() if k != "raytrace"}
    plan = DatasetPlan(SynthConfig(**gen))
    return {"identities": len(plan.identities["train"]), "expressions": gen["expressions_per_identity"],
            "images": plan.num_samples("train") * gen["views"], "steps": cfg["max_steps"],
            "batch": cfg["data"]["batch_size"]}


def collect(runs: list[Path], baseline: Path | None, metric: str = "psnr_full") -> list[dict]:
    rows = []
    for run in runs:
        psnr = {}
        for m in METHODS:
            psnr[m] = per_subject(run / "eval", m, metric)
            if not psnr[m] and baseline is not None:
                psnr[m] = per_subject(baseline, m, metric)
        row = {"run": run.name, **_dataset_counts(run), "psnr": psnr}
        for m in ("prior_only", "stage1_only", "full"):
            row[f"delta_{m}"] = paired(psnr[m], psnr["no_prior"])
        rows.append(row)
    return sorted(rows, key=lambda r: r["identities"])


def table(rows: list[dict]) -> str:
    """Markdown table; "–" where a method was not evaluated for a run."""
    lines = ["| training identities | expr / id | train images | steps | no prior | prior only | stage 1 only | full "
             "| prior only − no prior | full − no prior |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        p = r["psnr"]
        d = [delta_cell(r[k]) for k in ("delta_prior_only", "delta_full")]
        lines.append(f"| {r['identities']} | {r['expressions']} | {r['images']} | {r['steps']} | "
                     + " | ".join(number(mean_of(p[m])) for m in METHODS) + " | " + " | ".join(d) + " |")
    n = max((len(v) for r in rows for v in r["psnr"].values()), default=0)
    lines.append(footnote(n))
    return "\n".join(lines)


def plot(rows: list[dict], path: Path) -> None:
    fig, ax = new_axes(5.5, 3.6, 120)
    x = [r["identities"] for r in rows]
    for m, style in zip(METHODS, ("k--", "C0o-", "C1s-", "C2^-")):
        ax.plot(x, [mean_of(r["psnr"][m]) for r in rows], style, label=m.replace("_", " "))
    ax.set_xscale("log")
    ax.set_xticks(x, [str(v) for v in x])
    ax.minorticks_off()
    ax.set_xlabel(f"training identities (fixed budget: {rows[0]['images']} images, {rows[0]['steps']} steps)")
    save_plot(fig, ax, path)


CLI = study_command("data scaling", "Identity-scaling study: a table (and plot) from trained priors and their evaluations.",
                    example="synshot data scaling runs/scaling_ids038 runs/scaling_ids152 --plot docs/img/identity_scaling.png",
                    baseline_help="eval folder holding methods a run's evaluation lacks",
                    plot_help="PNG plot of PSNR vs training identities")


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, cfg: StudyConfig) -> int:
    return run_study(args, cfg, collect, table, plot, "synshot data scaling RUN_DIR [RUN_DIR ...]")


if __name__ == "__main__":
    raise SystemExit(main())
