"""End-to-end inversion on a tiny prior and a tiny ray-traced held-out subject.

One module-scoped subject (data_tools.subject, tiny head, 32 px) and one freshly initialised tiny
prior exported with save_exported are shared by all tests; each inversion runs a handful of steps.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from synshot.config import load_config
from synshot.invert.config import InvertConfig

ROOT = Path(__file__).resolve().parents[1]
from tiny_fixtures import SIZE  # the shared tiny prior and subject: tests/conftest.py


@pytest.fixture(scope="module")
def loss_nets(tmp_path_factory) -> tuple[Path, Path]:
    """A random AlexNet trunk (torchvision key layout) for LPIPS and a tiny ArcFace-shaped ONNX model."""
    from test_invert_arcface import make_arcface_onnx

    d = tmp_path_factory.mktemp("nets")
    gen = torch.Generator().manual_seed(0)
    shapes = {0: (64, 3, 11, 11), 3: (192, 64, 5, 5), 6: (384, 192, 3, 3), 8: (256, 384, 3, 3), 10: (256, 256, 3, 3)}
    state = {}
    for i, shp in shapes.items():
        state[f"features.{i}.weight"] = torch.randn(shp, generator=gen) / math.sqrt(shp[1] * shp[2] * shp[3])
        state[f"features.{i}.bias"] = torch.zeros(shp[0])
    torch.save(state, d / "alexnet.pth")
    return d / "alexnet.pth", make_arcface_onnx(d / "arcface.onnx")


def _cfg(prior_path, *extra) -> InvertConfig:
    return load_config(InvertConfig, None, [
        f"ckpt={prior_path}", f"image_size={SIZE}", "head_mesh=tiny", "progress=false", "tensorboard=false",
        "stage1.steps=2", "stage2.steps=2", "stage1.lr=1e-3", "stage2.lr=1e-3", *extra])


def _inversion(prior_path, subject_dir, *extra):
    from synshot.invert.pti import Inversion
    from synshot.invert.run import load_prior, prepare_subject
    from synshot.seeding import seed_everything

    cfg = _cfg(prior_path, *extra)
    seed_everything(cfg.seed)
    model, _ = load_prior(cfg.ckpt, torch.device("cpu"))
    subject, head = prepare_subject(cfg, subject_dir)
    return Inversion(cfg, model, head, subject, device=torch.device("cpu"), log=lambda *_: None)


def test_subject_tool_writes_a_valid_held_out_subject(subject_dir):
    from synshot.head import EXPRESSION_NAMES, HEAD_MODEL_VERSION
    from synshot.camera import camera_error
    from synshot.invert.subject import load_subject

    subj = load_subject(subject_dir, size=SIZE, head_model_version=HEAD_MODEL_VERSION,
                        expression_names=list(EXPRESSION_NAMES))
    assert len(subj.frames) == 3 and len(subj.eval_frames) == 2 and subj.identity is not None
    meta = json.loads((subject_dir / "meta.json").read_text())
    assert meta["lighting_id"] >= 1000 and meta["out_of_distribution"]["dyed_hair"]
    assert float(subj.frames[0].expression.abs().sum()) == 0 and float(subj.frames[1].expression.abs().sum()) > 0
    yaw, _ = camera_error(subj.frames[0].w2c, subj.frames[2].w2c)
    assert 55 < yaw < 75  # profile view
    for f in subj.frames + subj.eval_frames:
        assert 0.05 < float((f.mask > 0.5).float().mean()) < 0.9  # the head is in the picture


def test_cli_end_to_end_writes_every_output_without_deepspeed(subject_dir, prior_path, loss_nets, tmp_path):
    """The CLI in a fresh interpreter: all outputs, loss drops, and DeepSpeed never imported."""
    out = tmp_path / "out"
    lpips_path, arc_path = loss_nets
    code = (
        "import sys\n"
        "from synshot.invert.__main__ import main\n"
        f"rc = main([{str(subject_dir)!r}, '--prior', {str(prior_path)!r}, '--out', {str(out)!r},"
        f" '--config', {str(ROOT / 'configs/invert/tiny.yaml')!r}, 'image_size={SIZE}', 'head_mesh=tiny',"
        " 'stage1.steps=3', 'stage2.steps=4', 'stage2.lr=3e-3', 'output.turntable_frames=3', 'progress=false',"
        f" 'lpips_backbone={lpips_path}', 'arcface_model={arc_path}'])\n"
        "import synshot.invert.drive, synshot.invert.export, synshot.invert.pti\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] == 'deepspeed')\n"
        "assert not bad, bad\n"
        "sys.exit(rc)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600,
                          env={**__import__("os").environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("avatar.safetensors", "avatar.ply", "turntable.mp4", "metrics.json", "inputs_vs_renders.png"):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    metrics = json.loads((out / "metrics.json").read_text())
    for key in ("eval_l1_full", "eval_psnr_full", "eval_ssim_full", "eval_l1_head", "eval_psnr_head", "eval_ssim_head",
                "eval_lpips_full", "eval_id_cosine", "wall_s", "peak_rss_mb"):
        assert isinstance(metrics[key], (int, float)), key
    assert metrics["loss_final"] < metrics["loss_first"]
    assert -1 <= metrics["eval_id_cosine"] <= 1
    refined = json.loads((out / "cameras_refined.json").read_text())["frames"]
    given = json.loads((subject_dir / "cameras.json").read_text())["frames"]
    assert [f["file"] for f in refined] == [f["file"] for f in given]
    moved = max(np.abs(np.asarray(r["w2c"]) - np.asarray(g["w2c"])).max() for r, g in zip(refined, given))
    assert 0 < moved < 0.05          # stage 1 corrected the cameras, by a small motion
    assert all(r["width"] == SIZE and len(r["K"]) == 3 for r in refined)

    from synshot.invert.avatar import load_avatar
    from synshot.invert.ply import read_ply
    from synshot.invert.video import read_mp4_frames

    avatar = load_avatar(out / "avatar.safetensors")
    g = avatar.gaussians(torch.zeros(1, len(avatar.expression_names)), torch.eye(4)[None]).sample(0)
    ply = read_ply(out / "avatar.ply")
    np.testing.assert_allclose(ply.means, g["means"].numpy(), atol=1e-5)
    np.testing.assert_allclose(ply.scales, g["scales"].numpy(), rtol=1e-4)
    np.testing.assert_allclose(ply.opacities, g["opacities"].numpy(), atol=1e-5)
    np.testing.assert_allclose(ply.sh, g["sh"].numpy(), atol=1e-5)
    assert len(read_mp4_frames(out / "turntable.mp4")) == 3
    grid = np.asarray(Image.open(out / "inputs_vs_renders.png"))
    assert grid.shape[0] > 3 * SIZE  # inputs, renders, eval targets, eval renders

    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(out / "tb"), size_guidance={"scalars": 0}).Reload()
    assert {"stage1/loss", "stage2/loss", "stage2/l1", "stage2/lpips", "stage2/id", "stage2/arc_feat"} \
        <= set(acc.Tags()["scalars"])

    # driving: a JSON sequence and cross-reenactment from a subject folder
    from synshot.invert.drive import main as drive_main

    seq = tmp_path / "seq.json"
    seq.write_text(json.dumps({"fps": 4, "frames": [{"expression": {"jaw_open": 0.8}}, {"expression": {"smile_l": 1.0}}]}))
    assert drive_main(["--avatar", str(out / "avatar.safetensors"), "--expr", str(seq), "--out", str(tmp_path / "d.mp4")]) == 0
    assert len(read_mp4_frames(tmp_path / "d.mp4")) == 2
    assert drive_main(["--avatar", str(out / "avatar.safetensors"), "--expr", str(subject_dir),
                       "--out", str(tmp_path / "x.mp4"), "--side-by-side"]) == 0
    frames = read_mp4_frames(tmp_path / "x.mp4")
    assert len(frames) == 5 and frames[0].shape[1] > 2 * SIZE  # 3 inputs + 2 eval frames, side by side
    seq.write_text(json.dumps({"frames": [{"expression": {"no_such_blendshape": 1.0}}]}))
    assert drive_main(["--avatar", str(out / "avatar.safetensors"), "--expr", str(seq), "--out", str(tmp_path / "e.mp4")]) == 2


def _state(model, skip_prefix=None):
    return {k: v.clone() for k, v in model.state_dict().items() if skip_prefix is None or not k.startswith(skip_prefix)}


def test_stage1_changes_only_E_id_and_stage2_keeps_the_pivot(subject_dir, prior_path):
    inv = _inversion(prior_path, subject_dir, "stage1.quantize=false", "refine.expressions=true")
    before = _state(inv.model)
    r1 = inv.stage1()
    after1 = _state(inv.model)
    changed = sorted({k.split(".")[0] for k in before if not torch.equal(before[k], after1[k])})
    assert changed == ["E_id"]  # everything else bit-identical, buffers included
    assert inv.cam_delta.abs().sum() > 0 and inv.expr_delta.abs().sum() > 0  # refinement moved
    pivot = inv.q_id.clone()
    r2 = inv.stage2()
    after2 = _state(inv.model)
    changed2 = sorted({k.split(".")[0] for k in before if not torch.equal(after1[k], after2[k])})
    assert changed2 == sorted(inv.cfg.stage2.modules)
    assert torch.equal(inv.q_id, pivot)
    with torch.no_grad():
        assert torch.equal(inv.encode_identity(quantize=False)[1], pivot)  # E_id untouched by stage 2
    assert len(r1.losses) == 2 and len(r2.losses) == 2


def test_same_seed_same_result(subject_dir, prior_path):
    a = _inversion(prior_path, subject_dir, "stage2.steps=0").stage1().losses
    b = _inversion(prior_path, subject_dir, "stage2.steps=0").stage1().losses
    assert a == b


def test_camera_refinement_recovers_part_of_a_perturbation(subject_dir, prior_path, tmp_path):
    """Targets rendered by the prior at the true cameras; the inversion gets perturbed cameras."""
    import shutil

    from synshot.camera import se3_correction

    true = _inversion(prior_path, subject_dir, "refine.cameras=false", "stage1.steps=0")
    with torch.no_grad():
        true.q_id = true.encode_identity()[1]
        rgb, alpha = true.render_inputs()
    pert_dir = tmp_path / "pert"
    shutil.copytree(subject_dir, pert_dir, ignore=shutil.ignore_patterns("eval"))
    cams = json.loads((pert_dir / "cameras.json").read_text())
    gen = torch.Generator().manual_seed(3)
    for i, fr in enumerate(cams["frames"]):
        xi = torch.cat([torch.nn.functional.normalize(torch.randn(3, generator=gen), dim=0) * np.radians(2.0),
                        torch.nn.functional.normalize(torch.randn(3, generator=gen), dim=0) * 0.01])
        fr["w2c"] = (se3_correction(xi) @ torch.tensor(fr["w2c"])).tolist()
        Image.fromarray((rgb[i].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)).save(pert_dir / "images" / fr["file"])
        Image.fromarray(((alpha[i, 0] > 0.5).numpy() * 255).astype(np.uint8)).save(pert_dir / "masks" / fr["file"])
    (pert_dir / "cameras.json").write_text(json.dumps(cams))

    inv = _inversion(prior_path, pert_dir, "stage1.lr=0", "stage1.steps=12", "refine.camera_lr=3e-3",
                     "weights.ssim=0", "weights.mask=1.0", "weights.camera_reg=0")
    inv.inputs.tex = true.inputs.tex  # same identity code as the targets: only the cameras differ

    from synshot.camera import pose_points, project_points

    def err(w2c):  # mean reprojection error (pixels) of the head-model vertices
        out = []
        for i, f in enumerate(inv.subject.frames):
            world = pose_points(inv.head.vertices(f.expression), f.head_pose)
            a, _ = project_points(world, f.K, w2c[i])
            b, _ = project_points(world, f.K, true.inputs.w2c[i])
            out.append(float((a - b).norm(dim=1).mean()))
        return sum(out) / len(out)

    before = err(inv.inputs.w2c)
    result = inv.stage1()
    after = err(inv.current_w2c().detach())
    print(f"camera refinement: mean reprojection error {before:.2f} px -> {after:.2f} px")
    assert result.losses[-1] < result.losses[0]
    assert after < 0.8 * before, (before, after)
