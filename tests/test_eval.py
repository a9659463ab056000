"""Evaluation: metric values, the no-prior baseline, the report's verdict and files."""

import json

import numpy as np
import pytest
import torch

from synshot.eval.metrics import image_metrics, mean_metrics
from synshot.eval.protocol import MethodResult, find_subjects
from synshot.eval.report import verdict, write_report


def test_metrics_known_values():
    target = torch.rand(2, 3, 32, 32) * 0.8
    m = image_metrics(target + 0.1, target)
    assert m["l1"] == pytest.approx(0.1, abs=1e-6)
    assert m["psnr"] == pytest.approx(20.0, abs=1e-3)  # MSE 0.01
    assert image_metrics(target, target)["ssim"] == pytest.approx(1.0, abs=1e-6)
    assert m["num_frames"] == 2
    # per-frame PSNR is averaged (not the PSNR of the pooled MSE)
    pred = target.clone()
    pred[0] += 0.1  # frame 0: 20 dB; frame 1: 60 dB after clamping to 1e-6 error below
    pred[1] += 0.001
    assert image_metrics(pred, target)["psnr"] == pytest.approx((20.0 + 60.0) / 2, abs=1e-2)
    with pytest.raises(ValueError, match="N,3,H,W"):
        image_metrics(target[:, :2], target[:, :2])


def test_metrics_optional_terms_called():
    x = torch.rand(1, 3, 16, 16)
    m = image_metrics(x, x, lpips=lambda a, b: torch.tensor([0.25]), identity_cosine=lambda a, b: torch.tensor([0.5]))
    assert m["lpips"] == 0.25 and m["id_cosine"] == 0.5
    assert mean_metrics([{"psnr": 10.0, "l1": 1.0}, {"psnr": 20.0, "l1": 3.0, "ssim": 1.0}]) == {"psnr": 15.0, "l1": 2.0}


def test_verdict_reads_the_numbers():
    good = {"full": {"psnr": 20.0, "l1": 0.1}, "no_prior": {"psnr": 18.0, "l1": 0.2}}
    assert "beats the no-prior baseline" in verdict(good)
    bad = {"full": {"psnr": 17.0, "l1": 0.1}, "no_prior": {"psnr": 18.0, "l1": 0.2}}
    assert "does NOT beat" in verdict(bad) and "PSNR" in verdict(bad)
    assert "not both evaluated" in verdict({"full": good["full"]})


def test_report_files(tmp_path):
    renders = np.zeros((2, 16, 16, 3), np.uint8)
    results = [MethodResult("s1", m, {"l1": 0.1 * (i + 1), "psnr": 20.0 - i, "ssim": 0.9, "wall_s": 1.0}, renders)
               for i, m in enumerate(["full", "no_prior", "ablation:no_vq"])]
    path = write_report(results, {}, tmp_path, "{}")
    text = path.read_text()
    assert "| full | 0.1000 | 20.00 |" in text
    assert "w/o VQ" in text and "19.29" in text  # the paper's ablation row beside ours
    assert "beats the no-prior baseline" in text
    data = json.loads((tmp_path / "metrics.json").read_text())
    assert data["mean"]["no_prior"]["psnr"] == 19.0 and data["subjects"] == ["s1"]


def test_find_subjects_needs_eval_frames(tmp_path):
    (tmp_path / "a" / "eval").mkdir(parents=True)
    (tmp_path / "b").mkdir()
    assert find_subjects([str(tmp_path / "*")]) == [tmp_path / "a"]
    with pytest.raises(FileNotFoundError, match="make subjects"):
        find_subjects([str(tmp_path / "b")])


def test_no_prior_gaussians_follow_the_mesh_and_fit():
    from synshot.eval.config import NoPriorConfig
    from synshot.eval.noprior import BoundGaussians, fit_no_prior, render_frames
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

    # fit to a target rendered by a perturbed copy: the loss must drop
    K = torch.tensor([[80.0, 0, 24], [0, 80.0, 24], [0, 0, 1]])
    w2c = torch.eye(4)
    w2c[2, 3] = 0.6
    w2c[1, 1] = w2c[2, 2] = -1  # camera on +z looking at the face (OpenCV: y down, z forward)
    teacher = BoundGaussians(head, cfg)
    with torch.no_grad():
        teacher.color_logit.copy_(torch.randn_like(teacher.color_logit))
    frames = [Frame("f0", torch.zeros(3, 48, 48), torch.ones(1, 48, 48), K, w2c, torch.zeros(e), torch.eye(4))]
    frames[0].rgb = render_frames(teacher, frames)[0]
    _, summary = fit_no_prior(head, frames, cfg, log=lambda *_: None)
    assert summary["loss_final"] < 0.8 * summary["loss_first"]


def test_cached_results_depend_on_config(tmp_path):
    from synshot.eval.config import EvalConfig
    from synshot.eval.protocol import Evaluator

    prior = tmp_path / "prior.safetensors"
    prior.write_bytes(b"x")
    ev = Evaluator(EvalConfig(prior=str(prior), out=str(tmp_path / "eval")))
    base = ev.result_digest("full", ev.invert_config("full", str(prior)))
    assert base == ev.result_digest("full", ev.invert_config("full", str(prior)))
    ev.cfg.invert_overrides = ["stage2.steps=7"]
    assert ev.result_digest("full", ev.invert_config("full", str(prior))) != base
    assert ev.result_digest("stage1_only", ev.invert_config("stage1_only", str(prior))) != base
