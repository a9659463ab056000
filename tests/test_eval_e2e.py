"""Evaluation end to end on a tiny prior and tiny ray-traced subjects: the inversion never reads the
eval frames, an interrupted evaluation resumes from its cache, a changed config re-runs only what
it changes, and the tuning search never touches a test subject."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synshot.config import load_config

pytestmark = [pytest.mark.slow]  # ray-traced subjects + a few inversions: ~1-2 min on 2 cores
SIZE = 32
TINY_PRIOR = [
    "uv_size=32", "enc_channels=[8,16]", "dec_channels=[16,8]", "norm_groups=4", "code_dim=8", "codebook_size=32",
    "feature_channels=8", "regressor_hidden=16", "sh_degree=1",
    "parts={face: {grid_size: 32, regions: [face, ears, neck, eyes, mouth]}, scalp: {grid_size: 48, regions: [scalp]}}",
]
FAST_INVERT = ["image_size=32", "head_mesh=tiny", "stage1.steps=2", "stage2.steps=2"]


@pytest.fixture(scope="module")
def subjects(tmp_path_factory) -> dict[str, Path]:
    from data_tools.subject import make_subject

    root = tmp_path_factory.mktemp("subjects")
    return {split: make_subject(seed, root / split / f"s{seed}", size=SIZE, spp=2, eval_views=1, eval_expressions=2,
                                tiny_head=True)
            for split, seed in (("test", 3001), ("validation", 2001))}


@pytest.fixture(scope="module")
def prior_path(tmp_path_factory) -> Path:
    from synshot.model import ModelConfig, SynShotPrior, save_exported

    mcfg = load_config(ModelConfig, None, TINY_PRIOR)
    torch.manual_seed(0)
    return save_exported(SynShotPrior(mcfg), mcfg, tmp_path_factory.mktemp("prior") / "prior.safetensors")


def _invert_cfg(prior: Path):
    from synshot.invert.config import InvertConfig

    return load_config(InvertConfig, "configs/invert/tiny.yaml", [
        f"ckpt={prior}", *FAST_INVERT, "output.video=false", "output.ply=false", "tensorboard=false", "progress=false"])


def test_inversion_never_reads_eval_frames(subjects, prior_path, tmp_path):
    """Replacing every eval image with noise leaves the avatar bit-identical."""
    from safetensors.torch import load_file

    from synshot.invert.run import run_inversion

    clean = subjects["test"]
    noisy = tmp_path / clean.name
    shutil.copytree(clean, noisy)
    rng = np.random.default_rng(0)
    changed = 0
    for img in sorted((noisy / "eval" / "images").glob("*.png")):  # masks stay: the loader checks them
        arr = np.asarray(Image.open(img))
        Image.fromarray(rng.integers(0, 256, arr.shape, dtype=np.uint8)).save(img)
        changed += 1
    assert changed >= 2
    cfg = _invert_cfg(prior_path)
    m_clean = run_inversion(cfg, clean, tmp_path / "a", log=lambda *_: None)
    m_noisy = run_inversion(cfg, noisy, tmp_path / "b", log=lambda *_: None)
    a, b = load_file(tmp_path / "a" / "avatar.safetensors"), load_file(tmp_path / "b" / "avatar.safetensors")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert m_clean["eval_psnr_full"] != m_noisy["eval_psnr_full"]  # the eval frames did change (and are scored)


def _eval_cfg(subjects_glob: str, prior: Path, out: Path, *extra: str):
    from synshot.eval.config import EvalConfig

    return load_config(EvalConfig, "configs/eval/tiny.yaml", [
        # 32 px subjects are below the face detector's size: the cache logic is tested on the true geometry
        # (tests/test_eval_tracked.py covers the tracked geometry)
        f"subjects=[{subjects_glob}]", f"prior={prior}", f"out={out}", "methods=[no_prior,full]", "geometry=oracle",
        "invert_overrides=" + json.dumps(FAST_INVERT), "bootstrap_replicates=100", *extra])


def ran_results(logs: list[str]) -> list[str]:
    """'<subject> <method> seed <k>' of each result the evaluator computed (its one line per result)."""
    return [m.group(1) for line in logs if (m := re.match(r"^(s\d+ \S+ seed \d+): PSNR", line))]


def test_evaluation_resumes_and_a_changed_config_reruns(subjects, prior_path, tmp_path):
    from synshot.eval.protocol import Evaluator
    from synshot.eval.report import write_report

    out = tmp_path / "eval"
    glob = str(subjects["test"].parent / "*")
    logs: list[str] = []
    cfg = _eval_cfg(glob, prior_path, out)
    results, loaded = Evaluator(cfg, log=logs.append).run()
    ran = ran_results(logs)
    assert len(ran) == 2 and {r.method for r in results} == {"no_prior", "full"}
    for r in results:  # dlib + its weights are requirements: the identity column is always there
        assert len(r.frames["id_distance"]) == 2 and np.isfinite(r.frames["id_distance"]).all()
    np_result = next(r for r in results if r.method == "no_prior")
    assert np_result.details["steps"] == 4  # the full method's stage1 + stage2 budget
    assert abs(np_result.details["gaussians"] / np_result.details["prior_gaussians"] - 1) <= 0.10
    report = write_report(results, loaded, out, "{}", replicates=100)
    assert "grid_s3001.png" in report.read_text()
    assert Image.open(out / "grid_s3001.png").size[1] >= 128 * 2  # inputs row + eval rows at >= 128 px tiles

    # interrupted: one result lost mid-write -> only that one runs again
    (out / "s3001" / "full" / "seed0" / "result.json").write_text('{"frames": ')
    logs.clear()
    Evaluator(cfg, log=logs.append).run()
    assert ran_results(logs) == ["s3001 full seed 0"]
    # unchanged -> nothing runs
    logs.clear()
    Evaluator(cfg, log=logs.append).run()
    assert not ran_results(logs)
    # a changed baseline config re-runs the baseline only; a changed inversion config the full method only
    logs.clear()
    Evaluator(_eval_cfg(glob, prior_path, out, "no_prior.lr_color=0.03"), log=logs.append).run()
    assert ran_results(logs) == ["s3001 no_prior seed 0"]
    logs.clear()
    cfg2 = _eval_cfg(glob, prior_path, out, "no_prior.lr_color=0.03")
    cfg2 = cfg2.model_copy(update={"invert_overrides": [*cfg2.invert_overrides, "stage2.lr=2e-3"]})
    Evaluator(cfg2, log=logs.append).run()
    assert ran_results(logs) == ["s3001 full seed 0"]


def test_tuning_never_uses_test_subjects(subjects, prior_path, tmp_path):
    from synshot.eval.splits import SplitError
    from synshot.eval.tune import TuneConfig, run_search

    base = ["eval_overrides=" + json.dumps([f"prior={prior_path}", "invert_overrides=" + json.dumps(FAST_INVERT),
                                            "geometry=oracle"]),
            "trials=2", "step_budget=4", "space={no_prior: {no_prior.lr_color: {log: [0.01, 0.03]}}}",
            "methods=[no_prior]"]
    bad = load_config(TuneConfig, "configs/eval/tune_tiny.yaml",
                      [*base, f"subjects=[{subjects['test']}]", f"out={tmp_path / 'bad'}"])
    with pytest.raises(SplitError):
        run_search(bad, log=lambda *_: None)
    good = load_config(TuneConfig, "configs/eval/tune_tiny.yaml",
                       [*base, f"subjects=[{subjects['validation']}]", f"out={tmp_path / 'good'}"])
    logs = []
    record = run_search(good, log=logs.append)
    assert any("2 runs of 2 evaluations to compute" in line for line in logs)  # the trials share one pool
    trials = record["methods"]["no_prior"]["trials"]
    assert len(trials) == 2 and trials[0]["values"] == {} and set(trials[1]["per_subject"]) == {"s2001"}
    assert (tmp_path / "good" / "tuning.md").is_file()
