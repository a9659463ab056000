"""Evaluation units: metric definitions, bootstrap intervals and verdicts, splits, the baseline's
fairness rules, the tuning search's equal budget, the report's files and the ablation configs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from synshot.eval.metrics import absent_metrics, frame_metrics, mean_over_frames
from synshot.eval.protocol import MethodResult, find_subjects
from synshot.eval.splits import SplitError, check_seeds, check_subjects
from synshot.eval.stats import Interval, bootstrap, paired_difference, verdict_word


def test_metrics_full_frame_and_head_mask():
    target = torch.rand(2, 3, 32, 32) * 0.8
    mask = torch.zeros(2, 1, 32, 32)
    mask[:, :, 8:24, 8:24] = 1
    pred = target.clone()
    pred[:, :, 8:24, 8:24] += 0.1  # error only inside the head
    m = frame_metrics(pred, target, mask)
    assert m["l1_head"] == pytest.approx([0.1, 0.1], abs=1e-5)
    assert m["psnr_head"] == pytest.approx([20.0, 20.0], abs=1e-3)  # MSE 0.01 over the head
    assert m["l1_full"] == pytest.approx([0.1 / 4] * 2, abs=1e-5)  # the head is a quarter of the frame
    assert m["psnr_full"][0] == pytest.approx(20.0 + 10 * np.log10(4), abs=1e-3)
    assert max(m["ssim_full"]) < 1 and m["ssim_head"][0] < m["ssim_full"][0]  # the error is all in the head
    same = frame_metrics(target, target, mask)
    assert same["ssim_head"] == pytest.approx([1.0, 1.0], abs=1e-6)
    # per-frame PSNR averaged (not the PSNR of the pooled MSE), images clamped to [0, 1]
    pred2 = target.clone()
    pred2[0] += 0.1
    pred2[1] += 0.001
    assert mean_over_frames(frame_metrics(pred2, target, torch.ones(2, 1, 32, 32)))["psnr_full"] == \
        pytest.approx((20.0 + 60.0) / 2, abs=1e-2)
    assert frame_metrics(target + 5, target.clamp(max=1) * 0 + 1, mask)["l1_full"] == pytest.approx([0, 0])
    with pytest.raises(ValueError, match="N,3,H,W"):
        frame_metrics(target[:, :2], target[:, :2], mask)
    with pytest.raises(ValueError, match="empty head mask"):
        frame_metrics(target, target, torch.zeros(2, 1, 32, 32))


def test_optional_metrics_present_or_said_absent():
    x = torch.rand(1, 3, 16, 16)
    m = frame_metrics(x, x, torch.ones(1, 1, 16, 16), lpips=lambda a, b: torch.tensor([0.25]),
                      id_distance=lambda a, b: torch.tensor([0.5]))
    assert m["lpips_full"] == [0.25] and m["id_distance"] == [0.5]
    assert set(absent_metrics(m)) == set()
    assert set(absent_metrics(["psnr_full"])) == {"lpips_full", "id_distance"}


def test_inversion_metrics_use_the_same_definitions():
    """metrics.json of the inversion reports the evaluation's names (per frame, full and head)."""
    import inspect

    from synshot.invert import export

    src = inspect.getsource(export.eval_metrics)
    assert "frame_metrics" in src and "psnr(" not in src


def test_bootstrap_interval_and_paired_verdict():
    rng = np.random.default_rng(0)
    base = {f"s{i}": list(rng.normal(20 + i, 1.0, 9)) for i in range(6)}
    iv = bootstrap(base, replicates=500)
    flat = np.concatenate(list(base.values()))
    assert iv.mean == pytest.approx(flat.mean()) and iv.low < iv.mean < iv.high
    assert (iv.n_subjects, iv.n_frames) == (6, 54)
    assert iv.high - iv.low > 1.0  # subject spread (20..25 dB) dominates: a frame bootstrap would be narrower
    better = {s: [v + 0.5 + rng.normal(0, 0.05) for v in vals] for s, vals in base.items()}
    d = paired_difference(better, base, replicates=500)
    assert d.low > 0 and verdict_word(d, True) == "beats" and verdict_word(d, False) == "loses to"
    noisy = {s: [v + rng.normal(0, 1.0) for v in vals] for s, vals in base.items()}
    tie = paired_difference(noisy, base, replicates=500)
    if tie.low < 0 < tie.high:
        assert verdict_word(tie, True) == "ties with"
    assert verdict_word(Interval(0.1, -0.1, 0.3, 3, 9), True) == "ties with"
    with pytest.raises(ValueError, match="frames"):
        paired_difference({"a": [1.0, 2.0]}, {"a": [1.0]})


def _subject(tmp_path, name, seed):
    d = tmp_path / name
    (d / "eval").mkdir(parents=True)
    (d / "meta.json").write_text(json.dumps({"seed": seed}))
    return d


def test_splits_refuse_overlap_wrong_split_and_training_identities(tmp_path):
    check_seeds("test", [3001, 3020], train_identities=2000)
    check_seeds("validation", [2001, 2010], train_identities=2000)
    with pytest.raises(SplitError, match="both the validation and the test"):
        check_seeds("test", [3001, 2001], other=[2001])
    with pytest.raises(SplitError, match="retired"):
        check_seeds("test", [1002])
    with pytest.raises(SplitError, match="overlaps the training identities"):
        check_seeds("test", [12], train_identities=48)
    with pytest.raises(SplitError, match="not a test subject"):
        check_seeds("test", [3021])
    a, b = _subject(tmp_path, "a", 3001), _subject(tmp_path, "b", 2003)
    assert check_subjects("test", [a]) == [3001]
    with pytest.raises(SplitError, match="other split"):
        check_subjects("test", [a, b])
    with pytest.raises(SplitError, match="other split"):
        check_subjects("validation", [a, b])
    c = _subject(tmp_path, "c", 3001)
    with pytest.raises(SplitError, match="more than one folder"):
        check_subjects("test", [a, c])
    (tmp_path / "d" / "eval").mkdir(parents=True)
    with pytest.raises(SplitError, match="meta.json"):
        check_subjects("test", [tmp_path / "d"])


def test_evaluator_refuses_validation_subjects_for_the_report(tmp_path):
    from synshot.eval.config import EvalConfig
    from synshot.eval.protocol import Evaluator

    _subject(tmp_path, "s2001", 2001)
    ev = Evaluator(EvalConfig(subjects=[str(tmp_path / "*")], split="test", out=str(tmp_path / "out")))
    with pytest.raises(SplitError, match="other split"):
        ev.run()


def test_find_subjects_needs_eval_frames(tmp_path):
    (tmp_path / "a" / "eval").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    assert find_subjects([str(tmp_path / "*")]) == [tmp_path / "a"]
    with pytest.raises(FileNotFoundError, match="synshot data subject"):
        find_subjects([str(tmp_path / "b")])


def test_no_prior_budget_matches_the_prior():
    from synshot.eval.config import NoPriorConfig
    from synshot.eval.noprior import FairnessError, atlas_count, resolve_budget
    from synshot.invert.headio import HeadAdapter

    head = HeadAdapter(None, mesh="tiny")
    cfg = resolve_budget(NoPriorConfig(), head, prior_gaussians=4518, method_steps=90)
    assert cfg.steps == 90 and abs(atlas_count(head, cfg.grid_size) / 4518 - 1) <= 0.10
    with pytest.raises(FairnessError, match="Gaussians"):
        resolve_budget(NoPriorConfig(grid_size=24), head, prior_gaussians=4518, method_steps=90)


def test_no_prior_gaussians_follow_the_mesh_and_fit():
    from synshot.eval.config import NoPriorConfig
    from synshot.eval.noprior import BoundGaussians, fit_no_prior, render_frames
    from synshot.invert.config import LossWeights
    from synshot.invert.headio import HeadAdapter
    from synshot.invert.subject import Frame

    head = HeadAdapter(None, mesh="tiny")
    cfg = NoPriorConfig(grid_size=24, steps=25, seed=0)
    model = BoundGaussians(head, cfg)
    e = head.num_expressions
    jaw = torch.zeros(e)
    jaw[head.expression_names.index("jaw_open")] = 1.0
    g0, g1 = model(torch.zeros(e), torch.eye(4)), model(jaw, torch.eye(4))
    moved = (g1["means"] - g0["means"]).norm(dim=-1)
    assert moved.max() > 5e-3 and (moved < 1e-6).float().mean() > 0.3  # the jaw moves, the skull does not
    assert torch.allclose(g0["quats"].norm(dim=-1), torch.ones(model.num_gaussians), atol=1e-5)

    K = torch.tensor([[80.0, 0, 24], [0, 80.0, 24], [0, 0, 1]])
    w2c = torch.eye(4)
    w2c[2, 3] = 0.6
    w2c[1, 1] = w2c[2, 2] = -1  # camera on +z looking at the face (OpenCV: y down, z forward)
    teacher = BoundGaussians(head, cfg)
    with torch.no_grad():
        teacher.color_logit.copy_(torch.randn_like(teacher.color_logit))
    frames = [Frame("f0", torch.zeros(3, 48, 48), torch.ones(1, 48, 48), K, w2c, torch.zeros(e), torch.eye(4))]
    rgb, alpha = teacher.render(frames[0], torch.ones(3), with_alpha=True)
    frames[0].rgb, frames[0].mask = rgb.detach(), (alpha.detach() > 0.5).float()
    _, summary = fit_no_prior(head, frames, cfg, LossWeights(), log=lambda *_: None)
    assert summary["loss_final"] < 0.8 * summary["loss_first"]
    assert render_frames(model, frames).shape == (1, 3, 48, 48)


def test_tuning_search_gives_every_method_the_same_budget(tmp_path):
    from synshot.config import load_config
    from synshot.eval.tune import TuneConfig, draw, eval_config_for, trial_overrides

    cfg = load_config(TuneConfig, "configs/eval/tune_tiny.yaml", [f"out={tmp_path}"])
    rng_a, rng_b = np.random.default_rng(cfg.seed), np.random.default_rng(cfg.seed)
    a = [draw(cfg.space["full"], rng_a) for _ in range(cfg.trials - 1)]
    b = [draw(cfg.space["no_prior"], rng_b) for _ in range(cfg.trials - 1)]
    assert len(a) == len(b) == cfg.trials - 1 and len({json.dumps(x, sort_keys=True) for x in a}) == len(a)
    for values in a:
        words = trial_overrides(values, cfg.step_budget)
        s1 = int(values["stage1.steps"])
        assert f"stage2.steps={cfg.step_budget - s1}" in words
        ecfg = eval_config_for(cfg, "full", values, tmp_path / "t")
        assert ecfg.split == "validation" and ecfg.methods == ["full"]
    for values in b:
        ecfg = eval_config_for(cfg, "no_prior", values, tmp_path / "t")
        assert ecfg.no_prior.steps is None  # = the full method's stage1 + stage2 steps
        assert ecfg.no_prior.lr_color == values["no_prior.lr_color"]


def test_report_intervals_verdict_plot_and_tiles(tmp_path):
    from PIL import Image

    from synshot.eval.report import write_report

    rng = np.random.default_rng(0)
    results = []
    for s in ("s3001", "s3002", "s3003"):
        base = rng.normal(18, 1, 4)
        for method, shift in (("no_prior", 0.0), ("full", 1.0), ("ablation:no_vq", 0.8),
                              ("full (training seed 1)", 0.9)):
            vals = {k: list(base + shift + rng.normal(0, 0.05, 4)) for k in ("psnr_full", "psnr_head")}
            vals.update({k: list(np.full(4, 0.9)) for k in ("ssim_full", "ssim_head")})
            vals.update({k: list(np.full(4, 0.05 - shift / 100)) for k in ("l1_full", "l1_head")})
            results.append(MethodResult(s, method, 0, vals, {"gaussians": 4518, "steps": 90},
                                        np.zeros((4, 64, 64, 3), np.uint8)))
    path = write_report(results, {}, tmp_path, "{}", replicates=200)
    text = path.read_text()
    assert "**test** subjects" in text and "Absent columns" in text and "`lpips_full`" in text
    assert "full beats no_prior" in text and "95 % CI" in text
    assert "w/o VQ" in text and "19.29" in text and "arXiv:2501.06903" in text
    assert Image.open(tmp_path / "psnr_intervals.png").size[0] >= 600
    readme = (tmp_path / "readme_summary.md").read_text()
    assert "3 test subjects" in readme and "beats the no-prior baseline on PSNR full" in readme
    assert "| ablation:no_vq |" in readme
    # a training-seed replicate: a row after full, paired against the main prior, described
    assert readme.index("| full |") < readme.index("| full (training seed 1) |") < readme.index("| ablation:no_vq |")
    assert "### Training seeds" in text and "**full (training seed 1)**: the full method on the main prior" in text
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["paired"]["full - no_prior"]["psnr_full"]["low"] > 0
    assert data["intervals"]["full"]["psnr_full"]["n_frames"] == 12
    assert data["paired"]["full (training seed 1) - full"]["psnr_full"]["high"] < 0


def test_ablation_configs_mean_what_the_paper_means():
    """Same UV size as the main prior; No Sampling has fewer scalp Gaussians (the main prior upsamples
    the scalp); F/4 is a quarter of the main model's F; the train config is the model config."""
    from synshot.config import load_config
    from synshot.model import ModelConfig, SynShotPrior
    from train.config import TrainConfig

    main = load_config(TrainConfig, "configs/train/tiny.yaml")
    assert main.model == load_config(ModelConfig, "configs/model/tiny.yaml")
    no_samp = load_config(TrainConfig, "configs/train/ablation_no_sampling.yaml")
    f4 = load_config(TrainConfig, "configs/train/ablation_f32.yaml")
    assert no_samp.model.uv_size == main.model.uv_size == f4.model.uv_size
    assert f4.model.feature_channels * 4 == main.model.feature_channels
    m, n = SynShotPrior(main.model).gaussian_counts(), SynShotPrior(no_samp.model).gaussian_counts()
    assert m["face"] == n["face"] and m["scalp"] >= 3 * n["scalp"]


def test_make_eval_tunes_each_ablation_on_validation_and_reports_test_subjects():
    from synshot.config import load_config
    from synshot.demo import DemoConfig, build_stages

    cfg = load_config(DemoConfig, "configs/demo/eval.yaml")
    check_seeds("test", cfg.subject_seeds, other=cfg.validation_seeds)
    check_seeds("validation", cfg.validation_seeds)
    assert len(cfg.subject_seeds) >= 10
    stages = {s.name: s for s in build_stages(cfg, python="python")}
    tune = stages["tune-ablations"].commands[0]
    assert any(w.startswith("subjects=") and "validation" in w for w in tune)
    assert all(a in " ".join(tune) for a in ("no_sampling", "no_vq", "single_layer", "f32"))
    ev = stages["eval"].commands[0]
    assert "split=test" in ev and any(w.startswith("ablation_tuning=") for w in ev)
    # at least 2 training seeds of the main prior; the extra seed's prior trains after the ablations'
    # stages (adding one re-runs neither their training nor their search)
    names = list(stages)
    assert names.index("tune-ablations") < names.index("train-seeds") < names.index("eval")
    assert len(cfg.train_seeds) >= 1 and f"seed={cfg.train_seeds[0]}" in stages["train-seeds"].commands[0]
    seed_priors = json.loads(next(w for w in ev if w.startswith("train_seed_priors=")).split("=", 1)[1])
    assert list(seed_priors) == [str(s) for s in cfg.train_seeds]
    listed = json.loads(next(w for w in ev if w.startswith("subjects=")).split("=", 1)[1])
    assert [Path(p).name for p in listed] == [f"s{s}" for s in cfg.subject_seeds]
    assert not any("validation" in w for w in ev) and "methods=[no_prior,prior_only,stage1_only,full]" in ev
    assert f"tracked_dir={Path(cfg.out) / 'tracked'}" in ev and any("tracked_dir=" in w for w in tune)
    assert "s2001" in " ".join(stages["track"].commands[0])  # validation subjects are tracked for the search
    demo = load_config(DemoConfig, "configs/demo/tiny.yaml")
    assert "tune-ablations" not in {s.name for s in build_stages(demo, python="python")}


def test_demo_tracks_the_held_out_subjects_and_inverts_the_tracked_one():
    from synshot.config import load_config
    from synshot.demo import DemoConfig, build_stages

    cfg = load_config(DemoConfig, "configs/demo/tiny.yaml")
    stages = build_stages(cfg, python="python")
    assert [s.name for s in stages] == ["data", "train", "export", "subjects", "track", "invert", "drive", "eval"]
    by_name = {s.name: s for s in stages}
    tracked = Path(cfg.out) / "tracked"
    track = by_name["track"].commands[0]
    assert track[:3] == ["python", "-m", "synshot.eval.tracked"] and track[track.index("--out") + 1] == str(tracked)
    assert [str(p) for p in by_name["track"].outputs] == [str(tracked / f"s{s}" / "params.json")
                                                          for s in cfg.subject_seeds]
    assert by_name["invert"].commands[0][3] == str(tracked / f"s{cfg.subject_seeds[0]}")
    ev = by_name["eval"].commands[0]
    assert f"tracked_dir={tracked}" in ev and "oracle_row=true" in ev and "methods=[no_prior,full]" in ev
