"""The demo's stage reuse: a stage re-runs when its command, config or outputs changed, or when a
stage it consumes ran again; stages that do not consume it are reused."""

import sys
from pathlib import Path

from synshot.demo import DemoConfig, Stage, build_stages, run_stages


def writer(name: str, out: Path) -> Stage:
    """A stage whose one command appends a line to its output (so each run is counted)."""
    target = out / f"{name}.txt"
    code = f"open({str(target)!r}, 'a').write('run\\n')"
    return Stage(name, [[sys.executable, "-c", code]], [target])


def runs(out: Path, name: str) -> int:
    return (out / f"{name}.txt").read_text().count("run")


def pipeline(out: Path) -> list[Stage]:
    data, train, subjects = writer("data", out), writer("train", out), writer("subjects", out)
    track, evaluate = writer("track", out), writer("eval", out)
    train.needs, track.needs, evaluate.needs = ("data",), ("subjects",), ("train", "track")
    return [data, train, subjects, track, evaluate]


def test_rerun_follows_what_each_stage_consumes(tmp_path):
    stages = pipeline(tmp_path)
    run_stages(tmp_path, stages)
    run_stages(tmp_path, stages)
    assert all(runs(tmp_path, s.name) == 1 for s in stages)  # everything reused

    # an edited track command: track and eval run again; data, train, subjects are reused
    stages = pipeline(tmp_path)
    stages[3].commands.append([sys.executable, "-c", "pass"])
    run_stages(tmp_path, stages)
    assert {s.name: runs(tmp_path, s.name) for s in stages} == {
        "data": 1, "train": 1, "subjects": 1, "track": 2, "eval": 2}

    # --force data: data, train (consumes it) and eval (consumes train) run again, subjects and track do not
    run_stages(tmp_path, stages, forced={"data"})
    assert {s.name: runs(tmp_path, s.name) for s in stages} == {
        "data": 2, "train": 2, "subjects": 1, "track": 2, "eval": 3}

    # a lost output re-runs that stage and its consumers
    (tmp_path / "subjects.txt").unlink()
    run_stages(tmp_path, stages)
    assert {s.name: runs(tmp_path, s.name) for s in stages} == {
        "data": 2, "train": 2, "subjects": 1, "track": 3, "eval": 4}


def test_eval_pipeline_dependencies(tmp_path):
    """Every need names an earlier stage; the trained priors do not depend on the subjects or the tracker."""
    cfg = DemoConfig(out=str(tmp_path), subject_seeds=[3001, 3002], validation_seeds=[2001],
                     ablations=["f32"], train_seeds=[1])
    stages = build_stages(cfg)
    seen: set[str] = set()
    for stage in stages:
        assert set(stage.needs) <= seen, (stage.name, stage.needs)
        seen.add(stage.name)
    needs = {s.name: set(s.needs) for s in stages}

    def upstream(name: str) -> set[str]:
        return set().union(*(upstream(n) | {n} for n in needs[name])) if needs[name] else set()

    for trained in ("train", "export", "ablations", "train-seeds"):
        assert not upstream(trained) & {"subjects", "track"}, trained
    assert {"track", "ablations", "tune-ablations", "train-seeds", "export"} <= upstream("eval")
    assert {"track", "export"} <= upstream("invert")
