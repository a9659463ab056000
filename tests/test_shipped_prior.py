"""The prior shipped in synshot/priors/ loads with the current code and still works as a prior.

A change to the model code that can no longer load the file (renamed or reshaped weights, another
Gaussian layout, another head model) fails here, so the shipped file never rots silently.
"""

import re
from pathlib import Path

import numpy as np
import torch

from synshot.priors import MODEL_CARD, SHIPPED_PRIOR, describe, sha256_file
from synshot.runs import resolve_prior


def _head_maps(seed: int, size: int):
    """UV maps (tex, verts, exp) of a sampled head the prior never saw, batch of one."""
    from synshot.head import HeadConfig, HeadModel

    head = HeadModel(HeadConfig.tiny())
    rng = np.random.default_rng(seed)
    maps = head.uv_maps(head.sample_identity(rng), head.sample_expression(rng), size)
    return [maps[k][None].float() for k in ("tex", "verts", "exp")]


def test_model_card_names_the_file_and_its_sha256():
    card = MODEL_CARD.read_text()
    assert SHIPPED_PRIOR.name in card
    found = re.search(r"sha256[^0-9a-f]*([0-9a-f]{64})", card)
    assert found, f"{MODEL_CARD}: no sha256 line"
    assert found.group(1) == sha256_file(SHIPPED_PRIOR), "the model card's sha256 is not the shipped file's"


def test_a_run_without_an_export_means_the_shipped_prior(tmp_path):
    run = tmp_path / "runs" / "tiny"
    assert resolve_prior(None, run) == SHIPPED_PRIOR  # fresh clone: nothing trained
    assert "shipped prior" in describe(SHIPPED_PRIOR) and sha256_file(SHIPPED_PRIOR)[:16] in describe(SHIPPED_PRIOR)
    run.mkdir(parents=True)
    (run / "prior.safetensors").write_bytes(b"")
    assert resolve_prior(None, run) == run / "prior.safetensors"  # a trained run's own prior wins
    assert resolve_prior("elsewhere/p.safetensors", run) == Path("elsewhere/p.safetensors")
    assert describe("elsewhere/p.safetensors") == "prior elsewhere/p.safetensors"


def test_shipped_prior_loads_and_reconstructs_an_unseen_head():
    from synshot.model import SynShotPrior, load_exported

    model, cfg = load_exported(SHIPPED_PRIOR)  # also checks the head-model version and Gaussian counts
    tex, verts, exp = _head_maps(seed=987654, size=cfg.uv_size)
    pose = torch.eye(4)[None]
    with torch.no_grad():
        out = model(tex, verts, exp, pose)
        g = out.gaussians
        assert g.num_gaussians == sum(model.gaussian_counts().values()) > 0
        for t in (g.means, g.quats, g.scales, g.sh):
            assert torch.isfinite(t).all()
        # trained weights, not just loadable ones: the texture comes back far closer than from an
        # untrained prior of the same architecture
        inside = (verts.abs().sum(1, keepdim=True) > 0).float()
        err = ((out.decoded.tex - tex).abs() * inside).sum() / (3 * inside.sum())
        torch.manual_seed(0)
        untrained = SynShotPrior(cfg).eval()
        err0 = ((untrained(tex, verts, exp, pose).decoded.tex - tex).abs() * inside).sum() / (3 * inside.sum())
    assert err < 0.1 and err < 0.5 * err0, (float(err), float(err0))


def test_reproduction_check_compares_weights_not_file_bytes(tmp_path, capsys):
    """Two exports of the same weights whose headers differ in metadata order count as the same prior."""
    import json
    import struct

    from synshot.priors import weights_digest
    from synshot.priors.__main__ import main

    raw = SHIPPED_PRIOR.read_bytes()
    n = struct.unpack("<Q", raw[:8])[0]
    header = json.loads(raw[8:8 + n])
    header["__metadata__"] = dict(reversed(list(header["__metadata__"].items())))
    text = json.dumps(header, separators=(",", ":")).encode()
    text += b" " * (-len(text) % 8)
    reordered = tmp_path / "reordered.safetensors"
    reordered.write_bytes(struct.pack("<Q", len(text)) + text + raw[8 + n:])
    assert sha256_file(reordered) != sha256_file(SHIPPED_PRIOR)
    assert weights_digest(reordered) == weights_digest(SHIPPED_PRIOR)
    assert main([str(reordered)]) == 0

    from synshot.model import SynShotPrior, load_exported, save_exported

    _, cfg = load_exported(SHIPPED_PRIOR)
    torch.manual_seed(1)
    other = save_exported(SynShotPrior(cfg), cfg, tmp_path / "untrained.safetensors")
    assert main([str(other)]) == 1
    assert main([str(tmp_path / "missing.safetensors")]) == 3          # a missing file: a clear error, no traceback
    assert "missing.safetensors" in capsys.readouterr().err
