"""Subject folders: every validation error names the file and the fix; odd images are handled."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

from synshot.invert.subject import (
    SubjectError,
    check_cameras_see_head,
    load_subject,
    read_image,
)

E = 4
NAMES = [f"e{i}" for i in range(E)]


def _camera(width=32, height=24, f=40.0):
    K = [[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]]
    w2c = [[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0.5], [0, 0, 0, 1]]  # head 0.5 m in front of the camera
    return {"K": K, "w2c": w2c, "width": width, "height": height}


def make_subject(root, n=3, width=32, height=24, masks=True, eval_frames=False):
    """A minimal valid subject folder (random images, masks, cameras and params)."""
    rng = np.random.default_rng(0)
    for sub in (["", "eval/"] if eval_frames else [""]):
        (root / sub / "images").mkdir(parents=True, exist_ok=True)
        if masks:
            (root / sub / "masks").mkdir(exist_ok=True)
        cams, params = [], []
        for i in range(n):
            name = f"{i:03d}.png"
            Image.fromarray(rng.integers(0, 256, (height, width, 3), dtype=np.uint8)).save(root / sub / "images" / name)
            if masks:
                m = np.zeros((height, width), np.uint8)
                m[4:-4, 6:-6] = 255
                Image.fromarray(m).save(root / sub / "masks" / name)
            cams.append({"file": name, **_camera(width, height)})
            params.append({"file": name, "expression": [0.1 * i] * E, "head_pose": np.eye(4).tolist()})
        (root / sub / "cameras.json").write_text(json.dumps({"frames": cams}))
        (root / sub / "params.json").write_text(json.dumps(
            {"head_model_version": "test-1", "identity": None, "expression_names": NAMES, "frames": params}))
    return root


def _load(root, **kw):
    return load_subject(root, size=kw.pop("size", 32), head_model_version="test-1", expression_names=NAMES, **kw)


def test_valid_subject_loads(tmp_path):
    subj = _load(make_subject(tmp_path / "s", eval_frames=True))
    assert len(subj.frames) == 3 and len(subj.eval_frames) == 3
    f = subj.frames[0]
    assert f.rgb.shape == (3, 24, 32) and f.mask.shape == (1, 24, 32) and f.expression.shape == (E,)
    assert 0.3 < float(f.mask.mean()) < 0.7
    assert subj.stack()["rgb"].shape == (3, 3, 24, 32)


def test_resize_scales_K(tmp_path):
    subj = _load(make_subject(tmp_path / "s"), size=16)
    f = subj.frames[0]
    assert (f.height, f.width) == (12, 16)
    assert torch.allclose(f.K, torch.tensor([[20.0, 0, 8], [0, 20, 6], [0, 0, 1]]))


def _edit_json(path, fn):
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("breaker, needle", [
    (lambda r: __import__("shutil").rmtree(r / "images"), "images: missing"),
    (lambda r: [p.unlink() for p in (r / "images").iterdir()], "no images"),
    (lambda r: (r / "cameras.json").unlink(), "cameras.json: missing"),
    (lambda r: (r / "params.json").write_text("{not json"), "params.json: not valid JSON"),
    (lambda r: (r / "images" / "001.png").unlink(), "but"),  # listed, file gone
    (lambda r: Image.new("RGB", (32, 24)).save(r / "images" / "009.png"), "has no entry for ['009.png']"),
    (lambda r: (r / "masks" / "002.png").unlink(), "no mask for 002.png"),
    (lambda r: Image.new("L", (10, 10)).save(r / "masks" / "000.png"), "masks must match"),
    (lambda r: Image.new("L", (32, 24)).save(r / "masks" / "000.png"), "mask is empty"),
    (lambda r: (r / "images" / "000.png").write_bytes(b"garbage"), "cannot read this image"),
    (lambda r: _edit_json(r / "cameras.json", lambda d: d["frames"][0].update(width=64)), "does not match the image"),
    (lambda r: _edit_json(r / "cameras.json", lambda d: d["frames"][0].pop("K")), "missing key 'K'"),
    (lambda r: _edit_json(r / "cameras.json", lambda d: d["frames"][0].update(K=[[1, 0], [0, 1]])), "expected shape 3x3"),
    (lambda r: _edit_json(r / "cameras.json", lambda d: d["frames"][1]["w2c"][0].__setitem__(0, 2.0)),
     "not a proper rotation"),
    (lambda r: _edit_json(r / "params.json", lambda d: d["frames"][0].update(expression=[0.0] * (E + 1))),
     "coefficients, the head model has"),
    (lambda r: _edit_json(r / "params.json", lambda d: d.update(head_model_version="other-9")),
     "tracked with head model 'other-9'"),
    (lambda r: _edit_json(r / "params.json", lambda d: d["frames"][2].pop("head_pose")), "needs 'expression'"),
])
def test_each_problem_is_a_clear_error(tmp_path, breaker, needle):
    root = make_subject(tmp_path / "s")
    breaker(root)
    with pytest.raises(SubjectError) as exc:
        _load(root)
    msg = str(exc.value)
    assert needle in msg
    assert str(root) in msg  # names the file


def test_missing_folder(tmp_path):
    with pytest.raises(SubjectError, match="not found"):
        _load(tmp_path / "nope")


def test_odd_images_are_handled(tmp_path):
    # RGBA: composited on the background, alpha becomes the mask
    rgba = np.zeros((24, 32, 4), np.uint8)
    rgba[..., 0] = 255
    rgba[6:18, 8:24, 3] = 255
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    rgb, alpha = read_image(tmp_path / "a.png", background=(0.0, 1.0, 0.0))
    assert alpha is not None and alpha[10, 10] == 1.0 and alpha[0, 0] == 0.0
    assert np.allclose(rgb[10, 10], [1, 0, 0]) and np.allclose(rgb[0, 0], [0, 1, 0])
    # grayscale -> RGB
    Image.fromarray(np.full((5, 6), 128, np.uint8), "L").save(tmp_path / "g.png")
    rgb, alpha = read_image(tmp_path / "g.png")
    assert rgb.shape == (5, 6, 3) and alpha is None and abs(rgb[0, 0, 2] - 128 / 255) < 1e-6
    # 16-bit -> [0, 1]
    Image.fromarray(np.full((5, 6), 65535 // 2, np.uint16)).save(tmp_path / "h.png")
    rgb, _ = read_image(tmp_path / "h.png")
    assert abs(rgb[0, 0, 0] - 0.5) < 1e-3
    # very large: a clear error (the limit is configurable)
    Image.new("RGB", (300, 20)).save(tmp_path / "big.png")
    with pytest.raises(SubjectError, match="max_image_side=256"):
        read_image(tmp_path / "big.png", max_side=256)


def test_rgba_subject_without_masks_uses_alpha(tmp_path):
    root = make_subject(tmp_path / "s", masks=False)
    rgba = np.full((24, 32, 4), 200, np.uint8)
    rgba[..., 3] = 0
    rgba[5:20, 5:25, 3] = 255
    for i in range(3):
        Image.fromarray(rgba, "RGBA").save(root / "images" / f"{i:03d}.png")
    subj = _load(root)
    assert abs(float(subj.frames[0].mask.mean()) - (15 * 20) / (24 * 32)) < 1e-6
    assert torch.allclose(subj.frames[0].rgb[:, 0, 0], torch.ones(3))  # white background


def test_no_mask_no_alpha_warns(tmp_path):
    subj = _load(make_subject(tmp_path / "s", masks=False))
    assert len(subj.warnings) == 3 and "whole image counts as foreground" in subj.warnings[0]


def test_cameras_that_do_not_see_the_head(tmp_path):
    root = make_subject(tmp_path / "s")
    subj = _load(root)
    head = torch.randn(200, 3) * 0.05  # a head-sized blob at the origin of the head frame
    check_cameras_see_head(subj, [head] * 3, 0.5)  # the valid cameras pass
    _edit_json(root / "cameras.json", lambda d: d["frames"][1]["w2c"][2].__setitem__(3, -0.5))  # head behind
    with pytest.raises(SubjectError, match=r"001.png.*behind the camera.*invert it"):
        check_cameras_see_head(_load(root), [head] * 3, 0.5)
    _edit_json(root / "cameras.json", lambda d: d["frames"][1]["w2c"][0].__setitem__(3, 3.0))  # looks away
    _edit_json(root / "cameras.json", lambda d: d["frames"][1]["w2c"][2].__setitem__(3, 0.5))
    with pytest.raises(SubjectError, match=r"cameras.json \[001.png\]: the camera sees only 0%"):
        check_cameras_see_head(_load(root), [head] * 3, 0.5)
