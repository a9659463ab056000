"""E_id's training-time texture input (train/encoder_input.py): the albedo, or what the inversion unwraps."""

from __future__ import annotations

import torch

from synshot.camera import pose_points
from synshot.invert.unwrap import posed_uv_positions
from train.encoder_input import EncoderInput, EncoderInputConfig, chosen

S = 32


def test_posed_uv_positions_match_posing_each_texel():
    g = torch.Generator().manual_seed(0)
    verts, exp = torch.randn(3, S, S, generator=g), 0.1 * torch.randn(2, 3, S, S, generator=g)
    poses = torch.eye(4).repeat(2, 1, 1)
    poses[:, :3, :3] = torch.linalg.qr(torch.randn(2, 3, 3, generator=g))[0]
    poses[:, :3, 3] = torch.randn(2, 3, generator=g)
    got = posed_uv_positions(verts, exp, poses)
    for i in range(2):
        want = pose_points((verts + exp[i]).reshape(3, -1).T, poses[i]).T.reshape(3, S, S)
        assert torch.equal(got[i], want)          # bit-identical: the inversion's results do not move


def _sample_batch(subject_dir, frame: int = 0) -> dict:
    """One training sample built from a ray-traced subject frame, the way the dataset stores it."""
    from synshot.invert.headio import HeadAdapter
    from synshot.invert.subject import load_subject

    subject = load_subject(subject_dir, size=S)
    head = HeadAdapter(subject.identity, mesh="tiny")
    b = subject.stack(subject.frames[frame:frame + 1])
    maps = head.uv_maps(b["expression"][0], S)
    return {"tex": maps["tex"][None], "verts": maps["verts"][None], "exp": maps["exp"][None],
            "rgb": b["rgb"][None], "mask": b["mask"][None], "K": b["K"][None], "w2c": b["w2c"][None],
            "head_pose": b["head_pose"], "key": ["s7_000"]}


def test_albedo_input_leaves_the_batch_alone(subject_dir):
    batch = _sample_batch(subject_dir)
    assert EncoderInput(EncoderInputConfig())(batch)["tex"] is batch["tex"]
    assert EncoderInput(EncoderInputConfig(tex="unwrapped", unwrapped_fraction=0.0))(batch)["tex"] is batch["tex"]


def _coordinate_image(batch: dict) -> dict:
    """The same sample with its view replaced by an image whose colour is its pixel position:
    red = x / W, green = y / H (bilinear lookups of a linear ramp are exact), mask all ones."""
    h, w = batch["rgb"].shape[-2:]
    ys, xs = torch.meshgrid((torch.arange(h) + 0.5) / h, (torch.arange(w) + 0.5) / w, indexing="ij")
    rgb = torch.stack([xs, ys, torch.full_like(xs, 0.5)])[None, None]
    return {**batch, "rgb": rgb, "mask": torch.ones(1, 1, 1, h, w)}


def _texels_on_their_pixel(batch: dict, tex: torch.Tensor) -> float:
    """Share of atlas texels whose unwrapped colour is the coordinate of the pixel they project to."""
    valid, _ = EncoderInput.atlas(S)
    pos = posed_uv_positions(batch["verts"][0], batch["exp"], batch["head_pose"])[0].reshape(3, -1).T
    w2c, K = batch["w2c"][0, 0], batch["K"][0, 0]
    cam = pos @ w2c[:3, :3].T + w2c[:3, 3]
    pix = (cam[:, :2] / cam[:, 2:]) @ K[:2, :2].T + K[:2, 2]
    h, w = batch["rgb"].shape[-2:]
    want = torch.stack([pix[:, 0] / w, pix[:, 1] / h], 0).reshape(2, S, S)
    hit = (tex[:2] - want).abs().amax(0) < 0.02
    return float((hit & valid).sum() / valid.sum())


def test_unwrapped_input_puts_each_pixel_on_its_texel(subject_dir):
    batch = _coordinate_image(_sample_batch(subject_dir))
    out = EncoderInput(EncoderInputConfig(tex="unwrapped"))(batch)
    tex = out["tex"][0]
    valid, _ = EncoderInput.atlas(S)
    assert out["verts"] is batch["verts"] and tex.shape == batch["tex"][0].shape
    assert torch.all(tex[:, ~valid] == 0)                        # nothing outside the atlas
    # the visible half of the head takes the colours of exactly the pixels it projects to ...
    assert _texels_on_their_pixel(batch, tex) > 0.3
    # ... which a geometry error would break (the same input posed 20 degrees off)
    c, s_ = torch.cos(torch.tensor(0.35)), torch.sin(torch.tensor(0.35))
    turn = torch.eye(4)
    turn[0, 0], turn[0, 2], turn[2, 0], turn[2, 2] = c, s_, -s_, c
    wrong = {**batch, "head_pose": batch["head_pose"] @ turn}
    assert _texels_on_their_pixel(batch, EncoderInput(EncoderInputConfig(tex="unwrapped"))(wrong)["tex"][0]) < 0.1


def test_unwrapped_fraction_is_a_deterministic_per_sample_choice():
    keys = [f"{i:06d}_0000" for i in range(2000)]
    picks = [chosen(k, 0.3) for k in keys]
    assert picks == [chosen(k, 0.3) for k in keys]                # same choice in every run / on resume
    assert 0.25 < sum(picks) / len(picks) < 0.35
    assert all(chosen(k, 1.0) for k in keys) and not any(chosen(k, 0.0) for k in keys)
