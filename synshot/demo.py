"""``synshot demo``: the whole pipeline at toy scale, one stage after the other.

synthesise shards -> train the prior (DeepSpeed, N processes) -> export -> held-out subjects ->
track them from their input images only (``synshot eval track``) -> invert the first tracked test
subject from 3 images -> drive it with another subject's expressions -> evaluate on the tracked
geometry (baseline + full method, and the full method on the true geometry as a labelled upper
bound) -> ``report.md`` and ``metrics.json`` under ``out``.

Each stage runs the same command a user would type (so the demo also proves the CLIs), in a
subprocess, and leaves a stamp ``out/.stages/<stage>.json`` holding the command; re-running the
demo skips a stage whose stamp matches its command and whose outputs exist, unless a stage it consumes
(``Stage.needs``, followed transitively) runs again: an edited tracker config re-tracks and re-evaluates,
but does not retrain the ablation priors.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from pydantic import Field, field_validator

from synshot.cli import Command, UsageError, get_logger
from synshot.config import ConfigBase
from synshot.fsio import write_json

log = get_logger("demo")


class DemoConfig(ConfigBase):
    out: str = "runs/demo"
    data_config: str = "configs/data/tiny.yaml"
    data_overrides: list[str] = []
    train_config: str = "configs/train/tiny.yaml"
    train_overrides: list[str] = []
    nproc: int = Field(2, ge=1)  # training processes (torchrun); 2 = the DeepSpeed multi-process path
    # test subjects (reported; synshot.eval.splits.TEST_SEEDS) and validation subjects (tuning only)
    subject_seeds: list[int] = Field([3001, 3002, 3003], min_length=2)
    validation_seeds: list[int] = []
    subject_args: list[str] = ["--size", "128"]
    invert_config: str = "configs/invert/tiny.yaml"
    invert_overrides: list[str] = []
    track_config: str = "configs/track/default.yaml"  # the face tracker (also what the evaluation tracks with)
    track_overrides: list[str] = []
    eval_config: str = "configs/eval/tiny.yaml"
    eval_methods: list[str] = ["no_prior", "full"]  # on the tracked geometry
    eval_oracle_row: bool = True  # + the full method on the true geometry (a labelled upper bound)
    eval_overrides: list[str] = []
    tune_config: str = "configs/eval/tune_tiny.yaml"  # the validation search each ablation prior gets
    # Paper ablations, each trained with the same budget (configs/train/ablation_<name>.yaml +
    # train_overrides) and evaluated with the full method: no_sampling, no_vq, single_layer, f32.
    ablations: list[str] = []
    # Training seeds beyond the train config's own: the main prior retrained with each (same data and
    # config), evaluated with the full method as rows "full (training seed N)" (the training-seed spread).
    train_seeds: list[int] = []

    @field_validator("subject_args", "data_overrides", "train_overrides", "invert_overrides", "track_overrides",
                     "eval_overrides", mode="before")
    @classmethod
    def _as_strings(cls, value):
        """Command-line words: YAML reads ``[--size, 48]`` as a string and an int; both are words."""
        return [str(v) for v in value] if isinstance(value, (list, tuple)) else value


@dataclass
class Stage:
    name: str
    commands: list[list[str]]
    outputs: list[Path]
    env: dict[str, str] = field(default_factory=dict)
    needs: tuple[str, ...] = ()  # the earlier stages whose outputs its commands read


def build_stages(cfg: DemoConfig, python: str = sys.executable) -> list[Stage]:
    out = Path(cfg.out)
    data, run, prior = out / "data", out / "train", out / "prior.safetensors"
    subjects = [out / "subjects" / f"s{s}" for s in cfg.subject_seeds]
    validation = [out / "validation" / f"s{s}" for s in cfg.validation_seeds]
    tracked_dir = out / "tracked"  # = synshot.eval.tracked.default_tracked_dir of every subject (shared cache)
    tracked = [tracked_dir / p.name for p in subjects + validation]
    avatar_dir = out / "invert" / subjects[0].name

    def train_command(config: str, folder: Path, name: str, extra: list[str] = ()) -> list[str]:
        cmd = ["-m", "train", "--config", config, f"data.url={data}", f"out_dir={folder}", f"name={name}",
               *cfg.train_overrides, *extra]
        if cfg.nproc > 1:
            cmd = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(cfg.nproc)] + cmd
        return cmd

    def train_and_export(config: str, folder: Path, name: str, prior_path: Path, extra: list[str] = ()) -> list:
        return [[python, *train_command(config, folder, name, extra)],
                [python, "-m", "train.export", "--ckpt", str(folder / name), "--out", str(prior_path)]]

    train_cmd = train_command(cfg.train_config, out, "train")
    ablation_priors = {a: out / "ablations" / f"{a}.safetensors" for a in cfg.ablations}

    ablation_cmds = [c for a, path in ablation_priors.items()
                     for c in train_and_export(f"configs/train/ablation_{a}.yaml", out / "ablations", a, path)]
    seed_priors = {s: out / "train_seeds" / f"seed{s}.safetensors" for s in cfg.train_seeds}
    seed_cmds = [c for s, path in seed_priors.items()
                 for c in train_and_export(cfg.train_config, out / "train_seeds", f"seed{s}", path, [f"seed={s}"])]
    stages = [
        Stage("data", [[python, "-m", "data_tools.synth", "--config", cfg.data_config, "--out", str(data),
                        *cfg.data_overrides],
                       [python, "-m", "data_tools.inspect", str(data), "--out", str(out / "data_sheet.png")]],
              [data / "train.json", out / "data_sheet.png"]),
        Stage("train", [[python, *train_cmd]], [run / "checkpoints" / "latest"], {"OMP_NUM_THREADS": "1"},
              needs=("data",)),
        Stage("export", [[python, "-m", "train.export", "--ckpt", str(run), "--out", str(prior)]], [prior],
              needs=("train",)),
        Stage("subjects", [[python, "-m", "data_tools.subject", "--seed", str(s), "--out", str(p), *cfg.subject_args]
                           for s, p in zip(cfg.subject_seeds + cfg.validation_seeds, subjects + validation)],
              [p / "cameras.json" for p in subjects + validation]),
        Stage("track", [[python, "-m", "synshot.eval.tracked", *map(str, subjects + validation), "--config",
                         cfg.track_config, "--out", str(tracked_dir), *cfg.track_overrides]],
              [p / "params.json" for p in tracked], needs=("subjects",)),
        Stage("invert", [[python, "-m", "synshot.invert", str(tracked[0]), "--config", cfg.invert_config,
                          "--prior", str(prior), "--out", str(avatar_dir), "subject.check_eval_cameras=false",
                          *cfg.invert_overrides]],
              [avatar_dir / f for f in ("avatar.safetensors", "avatar.ply", "turntable.mp4", "metrics.json",
                                        "inputs_vs_renders.png")], needs=("export", "track")),
        Stage("drive", [[python, "-m", "synshot.invert.drive", "--avatar", str(avatar_dir / "avatar.safetensors"),
                         "--expr", str(subjects[1]), "--out", str(avatar_dir / "driven.mp4"), "--side-by-side"]],
              [avatar_dir / "driven.mp4"], needs=("invert", "subjects")),
    ]
    tuning = []
    if ablation_cmds:
        stages.append(Stage("ablations", ablation_cmds, list(ablation_priors.values()), {"OMP_NUM_THREADS": "1"},
                            needs=("data",)))
        if not validation:
            raise ValueError("ablations need validation_seeds: each ablation prior is tuned on validation subjects")
        # each ablation prior gets the validation search the main prior got (configs/eval/tune_tiny.yaml)
        tune_out = out / "tune_ablations"
        stages.append(Stage("tune-ablations", [[
            python, "-m", "synshot.eval.tune", "--config", cfg.tune_config, "methods=[]",
            f"subjects=[{out / 'validation'}/*]", f"out={tune_out}",
            "eval_overrides=" + json.dumps([f"prior={prior}", f"invert_config={cfg.invert_config}",
                                            "invert_overrides=" + json.dumps(cfg.invert_overrides),
                                            f"tracked_dir={tracked_dir}", f"track_config={cfg.track_config}",
                                            "track_overrides=" + json.dumps(cfg.track_overrides)]),
            "ablations=" + json.dumps({a: str(p) for a, p in ablation_priors.items()})]],
            [tune_out / "tuning.json"], needs=("export", "subjects", "track", "ablations")))
        tuning = [f"ablation_tuning={tune_out / 'tuning.json'}"]
    if seed_cmds:
        stages.append(Stage("train-seeds", seed_cmds, list(seed_priors.values()), {"OMP_NUM_THREADS": "1"},
                            needs=("data",)))
    stages.append(
        Stage("eval", [[python, "-m", "synshot.eval", "--config", cfg.eval_config,
                        "subjects=" + json.dumps([str(p) for p in subjects]),
                        "split=test", f"prior={prior}", f"out={out / 'eval'}", f"invert_config={cfg.invert_config}",
                        f"tracked_dir={tracked_dir}", f"track_config={cfg.track_config}",
                        "track_overrides=" + json.dumps(cfg.track_overrides), "geometry=tracked",
                        f"methods=[{','.join(cfg.eval_methods)}]", f"oracle_row={str(cfg.eval_oracle_row).lower()}",
                        "invert_overrides=" + json.dumps(cfg.invert_overrides),
                        "ablations=" + json.dumps({a: str(p) for a, p in ablation_priors.items()}),
                        "train_seed_priors=" + json.dumps({s: str(p) for s, p in seed_priors.items()}),
                        *tuning, *cfg.eval_overrides]],
              [out / "eval" / "report.md", out / "eval" / "metrics.json"],
              needs=tuple(s.name for s in stages if s.name not in ("invert", "drive"))))
    return stages


def _stage(stages: list[Stage], name: str) -> Stage:
    return next(s for s in stages if s.name == name)


def _stamp_path(out: Path, stage: Stage) -> Path:
    return out / ".stages" / f"{stage.name}.json"


def config_digest(stage: Stage) -> str:
    """Hash of the YAML files a stage's commands name (an edited config re-runs the stage)."""
    h = hashlib.sha256()
    words = {w.split("=", 1)[-1] for cmd in stage.commands for w in cmd}  # also key=path overrides
    for word in sorted(w for w in words if w.endswith((".yaml", ".yml"))):
        path = Path(word)
        h.update(word.encode())
        h.update(path.read_bytes() if path.is_file() else b"<missing>")
    return h.hexdigest()


def is_done(out: Path, stage: Stage) -> bool:
    stamp = _stamp_path(out, stage)
    if not stamp.is_file() or not all(p.exists() for p in stage.outputs):
        return False
    try:
        data = json.loads(stamp.read_text())
    except json.JSONDecodeError:
        return False
    return data.get("commands") == stage.commands and data.get("configs") == config_digest(stage)


def needs_run(out: Path, stage: Stage, ran: set[str], forced: set[str]) -> bool:
    """Forced, never finished with this command and config, or a stage it consumes ran in this demo."""
    return stage.name in forced or bool(ran.intersection(stage.needs)) or not is_done(out, stage)


def run_stage(out: Path, stage: Stage, index: int, total: int) -> float:
    log.info("=== [%d/%d] %s ===", index, total, stage.name)
    env = {**os.environ, **stage.env}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path.cwd()), env.get("PYTHONPATH", "")]))
    start = time.perf_counter()
    for cmd in stage.commands:
        log.info("$ %s", shlex.join(cmd))
        rc = subprocess.call(cmd, env=env)
        if rc != 0:
            raise SystemExit(f"demo: stage '{stage.name}' failed (exit {rc}) running: {shlex.join(cmd)}\n"
                             f"fix the problem above and re-run `make demo`: finished stages are reused")
    missing = [str(p) for p in stage.outputs if not p.exists()]
    if missing:
        raise SystemExit(f"demo: stage '{stage.name}' finished but did not write {missing}")
    seconds = time.perf_counter() - start
    write_json(_stamp_path(out, stage), {"commands": stage.commands, "configs": config_digest(stage),
                                         "seconds": seconds})
    log.info("=== %s done in %.0f s ===", stage.name, seconds)
    return seconds


def run_stages(out: Path, stages: list[Stage], forced: set[str] = frozenset()) -> dict[str, float]:
    """Run the stages in order, reusing finished ones (``needs_run``); seconds per stage (reused: as recorded)."""
    seconds: dict[str, float] = {}
    ran: set[str] = set()
    for i, stage in enumerate(stages, 1):
        if not needs_run(out, stage, ran, forced):
            prev = json.loads(_stamp_path(out, stage).read_text()).get("seconds", 0.0)
            seconds[stage.name] = prev
            log.info("=== [%d/%d] %s: done earlier (%.0f s), reusing ===", i, len(stages), stage.name, prev)
            continue
        seconds[stage.name] = run_stage(out, stage, i, len(stages))
        ran.add(stage.name)
    return seconds


def write_summary(cfg: DemoConfig, stages: list[Stage], seconds: dict[str, float]) -> Path:
    out = Path(cfg.out)
    avatar_dir = _stage(stages, "invert").outputs[0].parent
    invert = json.loads((avatar_dir / "metrics.json").read_text())
    n_test = len(cfg.subject_seeds)
    evaluation = json.loads((out / "eval" / "metrics.json").read_text())
    metrics = {"stage_seconds": seconds, "invert": invert,
               "eval_mean": {m: {k: iv["mean"] for k, iv in ivs.items()} for m, ivs in evaluation["intervals"].items()},
               "eval_intervals": evaluation["intervals"], "eval_paired": evaluation.get("paired", {}),
               "eval_subjects": evaluation.get("subjects", [])}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2, sort_keys=True, default=float))
    eval_report = (out / "eval" / "report.md").read_text()
    body = eval_report.split("\n", 1)[1].replace("](grid_", "](eval/grid_").replace("](psnr_", "](eval/psnr_")
    lines = ["# SynShot demo report", "", "| stage | seconds | outputs |", "|---|---|---|"]
    for st in stages:
        shown = ", ".join(str(p.relative_to(out)) if p.is_relative_to(out) else str(p) for p in st.outputs)
        lines.append(f"| {st.name} | {seconds.get(st.name, 0):.0f} | {shown} |")
    lines += ["", f"TensorBoard: `make tensorboard RUN={out / 'train'}`", "",
              f"Inverted test subject `{avatar_dir.name}` (tracked from its 3 input images): eval PSNR (full frame) "
              f"{invert.get('eval_psnr_full', float('nan')):.2f} dB, head "
              f"{invert.get('eval_psnr_head', float('nan')):.2f}"
              f" dB; avatar, .ply, turntable and driven video in `{avatar_dir}`.", "",
              f"## Evaluation ({n_test} test subjects: seeds {', '.join(map(str, cfg.subject_seeds))})", body]
    path = out / "report.md"
    path.write_text("\n".join(lines))
    return path


CLI = Command("demo", "The whole pipeline at toy scale, one stage after the other (finished stages are reused).",
              config_cls=DemoConfig, default_config="configs/demo/tiny.yaml",
              out_help="output folder (report.md, metrics.json, every stage's outputs)", out_key="out",
              example="synshot demo nproc=1 --out runs/demo2")
CLI.parser.add_argument("--force", nargs="*", default=[],
                        help="re-run these stages (and the ones that consume their outputs)")


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, cfg: DemoConfig) -> int:
    from synshot.eval.splits import check_seeds

    check_seeds("test", cfg.subject_seeds, other=cfg.validation_seeds)
    check_seeds("validation", cfg.validation_seeds)
    out = Path(cfg.out)
    stages = build_stages(cfg)
    names = [s.name for s in stages]
    bad = [f for f in args.force if f not in names]
    if bad:
        raise UsageError(f"--force {bad}: stages are {names}")
    start = time.perf_counter()
    seconds = run_stages(out, stages, set(args.force))
    report = write_summary(cfg, stages, seconds)
    log.info("=== demo finished in %.0f s (stages: %.0f s) ===", time.perf_counter() - start, sum(seconds.values()))
    log.info("report:      %s", report)
    log.info("metrics:     %s", out / "metrics.json")
    log.info("checkpoints: %s", out / "train" / "checkpoints")
    log.info("tensorboard: %s", out / "train" / "tb")
    log.info("avatar:      %s", _stage(stages, "invert").outputs[0].parent)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
