"""Inversion/driving fault catalogue: damaged or non-finite priors and avatars, output folders (lock,
stale files, atomic publish), input checks (expressions, camera orientation, upsampling, fps)."""

from __future__ import annotations

import json
import shutil
import socket
import struct
from pathlib import Path

import pytest
import torch

from synshot import fsio
from synshot.cli import EXIT_CHECKPOINT, EXIT_NONFINITE, EXIT_USAGE
from synshot.config import load_config
from tiny_fixtures import SIZE, TINY_PRIOR

pytestmark = pytest.mark.faults


def _invert(prior, subject, out, *extra) -> int:
    from synshot.invert.__main__ import main

    return main(["--subject", str(subject), "--ckpt", str(prior), "--out", str(out), "--config",
                 "configs/invert/tiny.yaml", f"image_size={SIZE}", "head_mesh=tiny", "progress=false",
                 "tensorboard=false", "stage1.steps=1", "stage2.steps=1", "output.video=false",
                 *extra])


def _flip_tensor_byte(path: Path, dst: Path) -> Path:
    data = bytearray(path.read_bytes())
    header = struct.unpack("<Q", data[:8])[0]
    data[8 + header + 17] ^= 0x5A  # inside the first tensor's bytes: same length, valid header
    dst.write_bytes(bytes(data))
    return dst


def _resave(path: Path, dst: Path, edit) -> Path:
    """Re-save a safetensors file with edited tensors and a *matching* content hash (a diverged export)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from synshot.model.io import CONTENT_HASH_KEY, tensors_digest

    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    edit(tensors)
    meta[CONTENT_HASH_KEY] = tensors_digest(tensors)
    save_file(tensors, str(dst), metadata=meta)
    return dst


def test_damaged_prior_bytes_are_refused(prior_path, tmp_path, capsys):
    from synshot.model import ExportError, load_exported

    bad = _flip_tensor_byte(prior_path, tmp_path / "damaged.safetensors")
    assert bad.stat().st_size == prior_path.stat().st_size
    with pytest.raises(ExportError, match=r"damaged.safetensors: damaged, the weights' content hash.*re-export"):
        load_exported(bad)
    assert _invert(bad, tmp_path / "nowhere", tmp_path / "out") == EXIT_CHECKPOINT
    assert "Traceback" not in capsys.readouterr().err


def test_nan_prior_inverts_to_nothing_with_exit_4(prior_path, subject_dir, tmp_path, capsys):
    from synshot.model import load_exported
    from synshot.model.io import NonFiniteWeightsError

    def poison(t):
        name = next(k for k, v in sorted(t.items()) if v.is_floating_point() and v.numel() > 1)
        t[name][0] = float("nan")

    bad = _resave(prior_path, tmp_path / "nan.safetensors", poison)
    with pytest.raises(NonFiniteWeightsError, match="nan.safetensors: weights hold NaN/inf in"):
        load_exported(bad)
    out = tmp_path / "out"
    assert _invert(bad, subject_dir, out) == EXIT_NONFINITE
    assert not out.exists()  # no avatar.ply of NaNs, no folder at all
    assert "Traceback" not in capsys.readouterr().err


def test_avatar_writer_refuses_non_finite_weights(tmp_path):
    from synshot.model import ModelConfig, SynShotPrior
    from synshot.model.io import NonFiniteWeightsError, write_safetensors

    mcfg = load_config(ModelConfig, None, TINY_PRIOR)
    state = SynShotPrior(mcfg).state_dict()
    name = next(k for k, v in state.items() if v.is_floating_point())
    state[name] = state[name].clone().fill_(float("inf"))
    with pytest.raises(NonFiniteWeightsError, match=rf"a.safetensors: not written.*{name}"):
        write_safetensors(tmp_path / "a.safetensors", state, {}, what="avatar", fix="x")
    assert list(tmp_path.iterdir()) == []


def test_inversion_outputs_are_published_as_one_set(prior_path, subject_dir, tmp_path):
    from synshot.invert.avatar import AvatarError, load_avatar

    out = tmp_path / "inv"
    out.mkdir()
    (out / "turntable.mp4").write_bytes(b"from an earlier run with video on")
    assert _invert(prior_path, subject_dir, out) == 0
    names = sorted(p.name for p in out.iterdir())
    assert "turntable.mp4" not in names and "avatar.ply" in names and "avatar.safetensors" in names
    assert (tmp_path / "inv.previous" / "turntable.mp4").is_file()  # moved aside, not lost
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no staging/lock left
    # the avatar carries a content hash: damaged bytes are refused with the fix
    avatar = load_avatar(out / "avatar.safetensors")
    assert torch.isfinite(avatar.q_id).all()
    bad = _flip_tensor_byte(out / "avatar.safetensors", tmp_path / "bad.safetensors")
    with pytest.raises(AvatarError, match="damaged.*re-run the inversion") as e:
        load_avatar(bad)
    assert e.value.exit_code == EXIT_CHECKPOINT


def test_two_inversions_into_one_folder_are_refused(prior_path, subject_dir, tmp_path, capsys):
    out = tmp_path / "inv"
    lock = fsio.sibling_lock(out)
    lock.write_text(json.dumps({"host": socket.gethostname(), "pid": 1, "purpose": "invert"}))
    assert _invert(prior_path, subject_dir, out) == EXIT_USAGE
    err = capsys.readouterr().err
    assert "in use by invert (pid 1" in err and "Traceback" not in err
    assert not out.exists()


def test_unwritable_output_is_a_message(prior_path, subject_dir, tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    assert _invert(prior_path, subject_dir, tmp_path / "file" / "out") == EXIT_USAGE
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err


# ------------------------------------------------------------------------------------ input checks


def _edit(path: Path, fn) -> None:
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def _copy(subject_dir, tmp_path) -> Path:
    dst = tmp_path / subject_dir.name
    shutil.copytree(subject_dir, dst)
    shutil.rmtree(dst / "eval", ignore_errors=True)
    return dst


def _prepare(prior_path, subject):
    from synshot.invert.config import InvertConfig
    from synshot.invert.run import prepare_subject

    cfg = load_config(InvertConfig, None, [f"ckpt={prior_path}", f"image_size={SIZE}", "head_mesh=tiny"])
    return prepare_subject(cfg, subject)


@pytest.mark.parametrize("value,needle", [
    (float("nan"), r"expression coefficient\(s\) jaw_open \(#0\) are NaN/inf"),
    (7.0, r"expression coefficient\(s\) jaw_open \(#0\)=7 outside \[-0.5, 1.5\]"),
], ids=["nan", "out-of-range"])
def test_bad_expressions_have_their_own_message(prior_path, subject_dir, tmp_path, value, needle):
    from synshot.invert.subject import SubjectError

    subj = _copy(subject_dir, tmp_path)
    _edit(subj / "params.json", lambda d: d["frames"][1]["expression"].__setitem__(0, value))
    with pytest.raises(SubjectError, match=rf"params.json \[001.png\]\.expression: {needle}"):
        _prepare(prior_path, subj)


def test_camera_to_world_given_as_world_to_camera_is_caught(prior_path, subject_dir, tmp_path):
    from synshot.invert.subject import SubjectError

    subj = _copy(subject_dir, tmp_path)
    _prepare(prior_path, subj)  # the original cameras pass

    def swap(d):
        fr = d["frames"][1]
        fr["w2c"] = torch.linalg.inv(torch.tensor(fr["w2c"], dtype=torch.float64)).tolist()

    _edit(subj / "cameras.json", swap)
    with pytest.raises(SubjectError, match=r"cameras.json \[001.png\].*camera-to-world"):
        _prepare(prior_path, subj)


def test_tiny_images_warn_when_upsampled(tmp_path):
    from test_subject_validation import NAMES, make_subject

    from synshot.invert.subject import load_subject

    root = make_subject(tmp_path / "s", width=16, height=12)
    subj = load_subject(root, size=64, head_model_version="test-1", expression_names=NAMES)
    assert any("upsampled 4.0x" in w for w in subj.warnings)
    subj = load_subject(root, size=32, head_model_version="test-1", expression_names=NAMES)
    assert not any("upsampled" in w for w in subj.warnings)


def test_drive_refuses_nan_expressions_fps_0_and_bad_cameras(prior_path, subject_dir, tmp_path, capsys):
    from synshot.invert.drive import main

    out = tmp_path / "inv"
    assert _invert(prior_path, subject_dir, out) == 0
    names = json.loads((subject_dir / "params.json").read_text())["expression_names"]
    cases = {
        "nan": ({"frames": [{"expression": [float("nan")] + [0.0] * (len(names) - 1)}]}, "are NaN/inf"),
        "range": ({"frames": [{"expression": {names[0]: 9.0}}]}, "outside [-0.5, 1.5]"),
        "fps": ({"fps": 0, "frames": [{"expression": [0.0] * len(names)}]}, "fps must be a whole number in [1, 240]"),
        "w2c": ({"w2c": [[2, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 1], [0, 0, 0, 1]],
                 "frames": [{"expression": [0.0] * len(names)}]}, "not a proper rotation"),
    }
    for name, (seq, needle) in cases.items():
        p = tmp_path / f"{name}.json"
        p.write_text(json.dumps(seq))
        rc = main(["--avatar", str(out / "avatar.safetensors"), "--expr", str(p), "--out", str(tmp_path / f"{name}.mp4")])
        err = capsys.readouterr().err
        assert rc == EXIT_USAGE and needle in err and "Traceback" not in err, (name, err)
        assert not (tmp_path / f"{name}.mp4").exists()
    # a subject whose camera is camera-to-world: refused like in the inversion
    subj = _copy(subject_dir, tmp_path)
    _edit(subj / "cameras.json", lambda d: d["frames"][1].__setitem__(
        "w2c", torch.linalg.inv(torch.tensor(d["frames"][1]["w2c"], dtype=torch.float64)).tolist()))
    rc = main(["--avatar", str(out / "avatar.safetensors"), "--expr", str(subj), "--out", str(tmp_path / "x.mp4")])
    assert rc == EXIT_USAGE and "camera-to-world" in capsys.readouterr().err
