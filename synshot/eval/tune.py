"""Equal-budget hyper-parameter search on the validation subjects: ``synshot eval tune``.

Every tuned method (the full method, the no-prior baseline, each ablation prior) gets the same
search: ``trials`` configurations, trial 0 = the current defaults, trials 1.. drawn at random
(log-uniform for learning rates, uniform choices otherwise) from the method's space with the same
seed, each scored on the same validation subjects by the mean of ``metric`` over subjects x frames.
The step budget is not searched: every trial of every method spends the same optimisation steps.
Test subjects are refused (synshot.eval.splits), so nothing reported was used for a choice.

Writes ``tuning.json`` (every trial: overrides, per-subject scores, mean) and ``tuning.md`` (a
table per method); the winners are what configs/invert and configs/eval carry as defaults.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from synshot import fsio
from synshot.cli import Command, UsageError, get_logger
from synshot.config import ConfigBase, ConfigError, dump_config, load_config
from synshot.eval.config import EvalConfig

log = get_logger(__name__)


class Dimension(ConfigBase):
    """One searched key: ``log: [lo, hi]`` (log-uniform) or ``choice: [a, b, ...]``."""

    log: tuple[float, float] | None = None
    choice: list[Any] | None = None


class TuneConfig(ConfigBase):
    eval_config: str = "configs/eval/tiny.yaml"
    eval_overrides: list[str] = []
    subjects: list[str] = ["runs/demo/validation/*"]
    methods: list[Literal["full", "no_prior"]] = ["full", "no_prior"]
    ablations: dict[str, str] = {}  # name -> ablation prior, tuned with the full method's space
    trials: int = Field(8, ge=1)
    seed: int = 0  # the random draws (the same for every method)
    metric: Literal["psnr_full", "psnr_head"] = "psnr_full"
    # the step budget shared by every trial of every method (stage1.steps + stage2.steps; no_prior.steps)
    step_budget: int = Field(90, ge=1)
    space: dict[str, dict[str, Dimension]] = {}
    out: str = "runs/tune"


def draw(space: dict[str, Dimension], rng: np.random.Generator) -> dict[str, Any]:
    """One random configuration of ``space`` (keys in sorted order, so draws do not depend on YAML order)."""
    out: dict[str, Any] = {}
    for key in sorted(space):
        dim = space[key]
        if dim.log is not None:
            lo, hi = dim.log
            out[key] = float(f"{math.exp(rng.uniform(math.log(lo), math.log(hi))):.3g}")
        elif dim.choice:
            out[key] = dim.choice[int(rng.integers(len(dim.choice)))]
        else:
            raise ConfigError(f"space key {key}: give log: [lo, hi] or choice: [...]")
    return out


def trial_overrides(values: dict[str, Any], budget: int) -> list[str]:
    """key=value words; a searched ``stage1.steps`` takes its steps out of the shared budget."""
    words = [f"{k}={json.dumps(v)}" for k, v in values.items()]
    if "stage1.steps" in values:
        words.append(f"stage2.steps={budget - int(values['stage1.steps'])}")
    return words


def eval_config_for(cfg: TuneConfig, method: str, values: dict[str, Any], out: Path) -> EvalConfig:
    """The evaluation of one trial: validation split, seed 0, the trial's values for this method."""
    base = load_config(EvalConfig, cfg.eval_config, cfg.eval_overrides)
    words = trial_overrides(values, cfg.step_budget)
    # the geometry is the evaluation config's (tracked by default, as in the report); no oracle row
    update: dict[str, Any] = {"split": "validation", "subjects": cfg.subjects, "out": str(out), "seeds": [0],
                              "ablations": {}, "grid_frames": 1, "oracle_row": False}
    if method == "no_prior":
        bad = [k for k in values if not k.startswith("no_prior.")]
        if bad:
            raise ConfigError(f"space.no_prior: keys {bad} must start with 'no_prior.'")
        update["no_prior"] = base.no_prior.model_validate(
            {**base.no_prior.model_dump(), **{k.split(".", 1)[1]: v for k, v in values.items()}})
        update["methods"] = ["no_prior"]
    elif method == "full":
        update["invert_overrides"] = list(base.invert_overrides) + words
        update["methods"] = ["full"]
    else:  # an ablation prior, with the full method
        update["methods"] = []
        update["ablations"] = {method: cfg.ablations[method]}
        update["ablation_overrides"] = {method: words}
    return base.model_copy(update=update)


def run_search(cfg: TuneConfig, log=log.info) -> dict:
    from synshot.eval.protocol import Evaluator, compute_uncached

    out = Path(cfg.out)
    record: dict[str, Any] = {"config": json.loads(dump_config(cfg)), "methods": {}}
    planned = []  # (method, trial, values, override words, evaluation config)
    for method in [*cfg.methods, *cfg.ablations]:
        space = cfg.space.get("full" if method in cfg.ablations else method, {})
        rng = np.random.default_rng(cfg.seed)
        for k in range(cfg.trials):
            values = {} if k == 0 else draw(space, rng)
            words = trial_overrides(values, cfg.step_budget)
            ecfg = eval_config_for(cfg, method, values, out / method.replace(":", "_") / f"trial{k}")
            if method != "no_prior":
                extra = words if method in cfg.ablations else []  # the full method has them in invert_overrides
                inv = Evaluator(ecfg).invert_config("full", ecfg.prior, 0, extra)
                steps = inv.stage1.steps + inv.stage2.steps
                if steps != cfg.step_budget:
                    raise ConfigError(f"trial {k} of {method}: stage1.steps + stage2.steps = {steps}, not the shared "
                                      f"step_budget {cfg.step_budget}; fix the invert config or step_budget")
            planned.append((method, k, values, words, ecfg))
    # every trial's runs in one pool (trials are independent); each trial then reads its results back
    compute_uncached([Evaluator(p[-1], log=log) for p in planned], log=log)
    trials: dict[str, list[dict]] = {}
    for method, k, values, words, ecfg in planned:
        results, _ = Evaluator(ecfg, log=log).run()
        record.setdefault("geometry", ecfg.geometry)
        per_subject = {r.subject: float(np.mean(r.frames[cfg.metric])) for r in results}
        frames = [v for r in results for v in r.frames[cfg.metric]]
        trials.setdefault(method, []).append({"trial": k, "values": values, "overrides": words,
                                              "per_subject": per_subject, "mean": float(np.mean(frames))})
        log(f"[tune] {method} trial {k}: {values or 'defaults'} -> {cfg.metric} {trials[method][-1]['mean']:.3f}")
    for method, method_trials in trials.items():
        best = max(method_trials, key=lambda t: t["mean"])
        record["methods"][method] = {"trials": method_trials, "best": best["trial"],
                                     "best_overrides": best["overrides"]}
    out.mkdir(parents=True, exist_ok=True)
    fsio.write_json(out / "tuning.json", record, indent=1, default=float)
    fsio.write_text(out / "tuning.md", tuning_markdown(record, cfg.metric))
    return record


def tuning_markdown(record: dict, metric: str) -> str:
    lines = []
    for method, data in record["methods"].items():
        lines += [f"**{method}** (best: trial {data['best']})", "", f"| trial | values | mean {metric} | per subject |",
                  "|---|---|---|---|"]
        for t in data["trials"]:
            vals = ", ".join(f"`{k}={v}`" for k, v in t["values"].items()) or "defaults"
            subj = ", ".join(f"{s} {v:.2f}" for s, v in sorted(t["per_subject"].items()))
            lines.append(f"| {t['trial']} | {vals} | {t['mean']:.3f} | {subj} |")
        lines.append("")
    return "\n".join(lines)


CLI = Command("eval tune", "Equal-budget hyper-parameter search on the validation subjects.",
              config_cls=TuneConfig, default_config="configs/eval/tune_tiny.yaml",
              out_help="output folder: tuning.json, tuning.md, one evaluation folder per trial", out_key="out",
              example="synshot eval tune trials=4 methods=[no_prior] out=runs/tune2")


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, cfg: TuneConfig) -> int:
    try:
        record = run_search(cfg, log=log.info)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    for method, data in record["methods"].items():
        log.info("%s: best trial %d: %s", method, data["best"], " ".join(data["best_overrides"]) or "defaults")
    log.info("results: %s", Path(cfg.out) / "tuning.md")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
