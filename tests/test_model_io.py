"""Exports: safetensors + embedded JSON config round trip, clear errors for bad files, no DeepSpeed."""

import json
import subprocess
import sys

import pytest
import torch

from synshot.model import ExportError, load_exported, save_exported
from test_model import inputs, make, tiny
from test_model_sampler import toy_masks


def test_round_trip_is_exact(tmp_path):
    cfg = tiny("vq=true", "feature_channels=16")
    model = make(cfg).train()
    tex, verts, exp, pose = inputs()
    model(tex, verts, exp, pose)  # one training forward: EMA codebooks move away from their init
    model.eval()
    path = save_exported(model, cfg, tmp_path / "prior.safetensors")
    loaded, cfg2 = load_exported(path, mask_fn=toy_masks)
    assert cfg2 == cfg and not loaded.training
    sd1, sd2 = model.state_dict(), loaded.state_dict()
    assert sd1.keys() == sd2.keys()
    assert all(torch.equal(sd1[k], sd2[k]) for k in sd1)
    with torch.no_grad():
        a, b = model(tex, verts, exp, pose).gaussians, loaded(tex, verts, exp, pose).gaussians
    assert torch.equal(a.means, b.means) and torch.equal(a.sh, b.sh) and torch.equal(a.quats, b.quats)


def test_metadata_holds_config_and_head_version(tmp_path):
    from safetensors import safe_open

    from synshot.head import HEAD_MODEL_VERSION

    cfg = tiny()
    path = save_exported(make(cfg), cfg, tmp_path / "p.safetensors")
    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    assert meta["head_model_version"] == HEAD_MODEL_VERSION
    assert json.loads(meta["model_config"])["uv_size"] == cfg.uv_size
    assert not list(tmp_path.glob("*.tmp"))


def test_truncated_foreign_and_missing_files_are_clear_errors(tmp_path):
    cfg = tiny()
    path = save_exported(make(cfg), cfg, tmp_path / "p.safetensors")
    data = path.read_bytes()
    bad = tmp_path / "truncated.safetensors"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(ExportError, match="truncated.safetensors"):
        load_exported(bad, mask_fn=toy_masks)
    bad.write_bytes(data[:5])
    with pytest.raises(ExportError, match="truncated.safetensors"):
        load_exported(bad, mask_fn=toy_masks)
    from safetensors.torch import save_file

    foreign = tmp_path / "foreign.safetensors"
    save_file({"w": torch.zeros(2)}, str(foreign))
    with pytest.raises(ExportError, match="foreign.safetensors.*not a SynShot prior export"):
        load_exported(foreign, mask_fn=toy_masks)
    with pytest.raises(ExportError, match="missing.safetensors"):
        load_exported(tmp_path / "missing.safetensors")


def test_head_version_mismatch_is_refused(tmp_path, monkeypatch):
    cfg = tiny()
    path = save_exported(make(cfg), cfg, tmp_path / "p.safetensors")
    import synshot.head

    monkeypatch.setattr(synshot.head, "HEAD_MODEL_VERSION", "synhead-999")
    with pytest.raises(ExportError, match="head model"):
        load_exported(path)


def test_loading_does_not_import_deepspeed():
    code = "import sys, synshot.model, synshot.model.io; assert 'deepspeed' not in sys.modules, 'deepspeed imported'"
    subprocess.run([sys.executable, "-c", code], check=True)
