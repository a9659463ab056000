"""Exports that splat viewers open: the neutral .ply and a driven sequence baked to world-space .ply frames.

Read back with ``plyfile`` (an independent PLY reader), not with our own parser, and compared with
the avatar's Gaussians.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from plyfile import PlyData

from synshot.invert.avatar import load_avatar, save_avatar
from synshot.invert.drive import DriveSequence, main as drive_main
from synshot.invert.export import export_ply
from synshot.invert.ply import SH_C0
from synshot.view.plyseq import ExportError, export_ply_sequence, read_index

from view_helpers import tiny_avatar

# the 3DGS layout (Kerbl et al. 2023, their PLY writer; SuperSplat, Brush and SIBR read it by these names)
STANDARD_NAMES = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]


@pytest.fixture(scope="module")
def avatar():
    return tiny_avatar()


def _sequence(avatar, n=3) -> DriveSequence:
    """Neutral; jaw open; smile with the head turned and moved."""
    e = len(avatar.expression_names)
    ex = torch.zeros(3, e)
    ex[1, avatar.expression_names.index("jaw_open")] = 0.8
    ex[2, avatar.expression_names.index("smile_l")] = 0.9
    poses = torch.eye(4).repeat(3, 1, 1)
    c, s = math.cos(0.3), math.sin(0.3)
    poses[2, :3, :3] = torch.tensor([[c, 0, s], [0, 1, 0], [-s, 0, c]])
    poses[2, :3, 3] = torch.tensor([0.01, -0.02, 0.03])
    ex, poses = ex[:n], poses[:n]
    ref = avatar.reference
    return DriveSequence(ex, poses, ref["K"].expand(n, 3, 3), ref["w2c"].expand(n, 4, 4),
                         int(ref["width"]), int(ref["height"]), fps=10)


def _activated(vertex, k: int) -> dict[str, np.ndarray]:
    """Decode a 3DGS vertex element the way 3DGS viewers do (exp scales, sigmoid opacity, wxyz quats)."""
    rest = np.stack([vertex[f"f_rest_{i}"] for i in range(3 * (k - 1))], 1).reshape(-1, 3, k - 1)
    dc = np.stack([vertex[f"f_dc_{i}"] for i in range(3)], 1)
    return {
        "means": np.stack([vertex[c] for c in "xyz"], 1),
        "quats": np.stack([vertex[f"rot_{i}"] for i in range(4)], 1),
        "scales": np.exp(np.stack([vertex[f"scale_{i}"] for i in range(3)], 1)),
        "opacities": 1 / (1 + np.exp(-vertex["opacity"])),
        "sh": np.concatenate([dc[:, None], rest.transpose(0, 2, 1)], 1),
    }


def _assert_same_gaussians(ply_path, g: dict[str, torch.Tensor]) -> None:
    data = PlyData.read(str(ply_path))
    assert not data.text and data.byte_order == "<"
    vertex = data["vertex"]
    k = g["sh"].shape[1]
    names = [p.name for p in vertex.properties]
    assert names == (STANDARD_NAMES + [f"f_rest_{i}" for i in range(3 * (k - 1))] + ["opacity"]
                     + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])
    assert all(p.val_dtype in ("f4", "float32") for p in vertex.properties)
    got = _activated(vertex, k)
    ref = {key: v.numpy() for key, v in g.items()}
    np.testing.assert_allclose(got["means"], ref["means"], atol=1e-6)
    np.testing.assert_allclose(got["scales"], ref["scales"], rtol=1e-4)
    np.testing.assert_allclose(got["opacities"], np.clip(ref["opacities"], 1e-6, 1 - 1e-6), atol=1e-4)
    np.testing.assert_allclose(got["sh"], ref["sh"], atol=1e-5)
    # rot_0 is w: the same rotation as the avatar's (q and -q are one rotation)
    np.testing.assert_allclose(np.abs((got["quats"] * ref["quats"]).sum(1)), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got["quats"], axis=1), 1.0, atol=1e-5)


def test_neutral_ply_is_the_avatars_gaussians_in_3dgs_layout(avatar, tmp_path):
    path = export_ply(avatar, tmp_path / "avatar.ply")
    e = len(avatar.expression_names)
    g = avatar.gaussians(torch.zeros(1, e), torch.eye(4)[None]).sample(0)
    _assert_same_gaussians(path, g)


def test_driven_sequence_exports_world_space_frames_with_an_index(avatar, tmp_path):
    seq = _sequence(avatar)
    index_path = export_ply_sequence(avatar, seq, tmp_path / "frames", compressed=True)
    index = read_index(tmp_path / "frames")
    assert index_path == tmp_path / "frames" / "frames.json"
    assert index["fps"] == 10 and index["num_frames"] == 3 and index["files"][0] == "frame_0000.ply"
    assert index["expression_names"] == avatar.expression_names
    assert sorted(p.name for p in (tmp_path / "frames").iterdir()) == sorted(
        ["frames.json"] + index["files"] + index["compressed_files"])
    for i, name in enumerate(index["files"]):
        g = avatar.gaussians(seq.expressions[i:i + 1], seq.head_poses[i:i + 1]).sample(0)
        _assert_same_gaussians(tmp_path / "frames" / name, g)
        assert index["frames"][i]["expression"] == pytest.approx(seq.expressions[i].tolist(), abs=1e-6)
    # world space: the posed frame is the neutral frame's Gaussians moved by the head pose, not the head frame
    f0 = PlyData.read(str(tmp_path / "frames" / "frame_0000.ply"))["vertex"]
    f2 = PlyData.read(str(tmp_path / "frames" / "frame_0002.ply"))["vertex"]
    centroid = lambda v: np.stack([v["x"], v["y"], v["z"]], 1).mean(0)  # noqa: E731
    assert np.linalg.norm(centroid(f2) - centroid(f0)) > 0.01
    # each frame is decoded with its own expression (an untrained prior's D_expr moves them only slightly)
    f1 = PlyData.read(str(tmp_path / "frames" / "frame_0001.ply"))["vertex"]
    assert np.abs(np.asarray(f1["y"]) - np.asarray(f0["y"])).max() > 1e-5


def _decode_compressed(path):
    """SuperSplat's .compressed.ply decoder (chunk bounds + 11/10/11-bit positions/scales, 8-bit colours)."""
    data = PlyData.read(str(path))
    chunk, vertex = data["chunk"], data["vertex"]
    n = vertex.count
    ci = np.arange(n) // 256

    def unpack_111011(v):
        v = np.asarray(v, np.uint32)
        return np.stack([(v >> 21) / 2047.0, ((v >> 11) & 1023) / 1023.0, (v & 2047) / 2047.0], 1)

    def lerp(lo, hi, t):
        return lo + (hi - lo) * t

    pos = unpack_111011(vertex["packed_position"])
    lo = np.stack([chunk["min_x"], chunk["min_y"], chunk["min_z"]], 1)[ci]
    hi = np.stack([chunk["max_x"], chunk["max_y"], chunk["max_z"]], 1)[ci]
    col = np.asarray(vertex["packed_color"], np.uint32)
    rgba = np.stack([(col >> 24) & 255, (col >> 16) & 255, (col >> 8) & 255, col & 255], 1) / 255.0
    clo = np.stack([chunk["min_r"], chunk["min_g"], chunk["min_b"]], 1)[ci]
    chi = np.stack([chunk["max_r"], chunk["max_g"], chunk["max_b"]], 1)[ci]
    return lerp(lo, hi, pos), lerp(clo, chi, rgba[:, :3]), rgba[:, 3], data


def test_compressed_frames_decode_to_the_same_splats(avatar, tmp_path):
    from gsplat.exporter import sort_centers

    seq = _sequence(avatar, n=1)
    export_ply_sequence(avatar, seq, tmp_path / "c", compressed=True)
    g = avatar.gaussians(seq.expressions, seq.head_poses).sample(0)
    keep = g["opacities"] > 1 / 255  # the compressed form drops invisible splats
    means = g["means"][keep]
    order = sort_centers(means, torch.arange(means.shape[0]))  # Morton order, as written
    pos, rgb, alpha, data = _decode_compressed(tmp_path / "c" / "frame_0000.compressed.ply")
    assert data["vertex"].count == int(keep.sum()) and data["sh"].count == int(keep.sum())
    extent = float((means.max(0).values - means.min(0).values).max())
    assert np.abs(pos - means[order].numpy()).max() < extent / 1000  # 11-bit chunk-relative quantisation
    rgb_ref = (g["sh"][keep][:, 0] * SH_C0 + 0.5)[order].numpy()
    assert np.abs(rgb - rgb_ref).max() < 0.01
    assert np.abs(alpha - g["opacities"][keep][order].numpy()).max() < 0.01


def test_export_never_replaces_a_foreign_folder(avatar, tmp_path):
    other = tmp_path / "mine"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    with pytest.raises(ExportError, match="not a .ply sequence export"):
        export_ply_sequence(avatar, _sequence(avatar, n=1), other)
    assert (other / "notes.txt").read_text() == "keep me" and sorted(p.name for p in tmp_path.iterdir()) == ["mine"]
    # a previous export is replaced as a whole
    export_ply_sequence(avatar, _sequence(avatar, n=2), tmp_path / "seq")
    export_ply_sequence(avatar, _sequence(avatar, n=1), tmp_path / "seq")
    assert read_index(tmp_path / "seq")["num_frames"] == 1 and not (tmp_path / "seq" / "frame_0001.ply").exists()


def test_drive_cli_writes_ply_frames_from_a_json_sequence(avatar, tmp_path):
    path = save_avatar(tmp_path / "avatar.safetensors", avatar)
    seq = tmp_path / "seq.json"
    seq.write_text(json.dumps({"fps": 5, "frames": [{"expression": {"jaw_open": 0.5}}, {"expression": {}}]}))
    rc = drive_main(["--avatar", str(path), "--expr", str(seq), "--ply", str(tmp_path / "ply"), "--no-video"])
    assert rc == 0
    index = read_index(tmp_path / "ply")
    assert index["fps"] == 5 and len(index["files"]) == 2 and not (tmp_path / "driven.mp4").exists()
    back = load_avatar(path)
    g = back.gaussians(torch.zeros(1, len(back.expression_names)), back.reference["head_pose"][None]).sample(0)
    _assert_same_gaussians(tmp_path / "ply" / "frame_0001.ply", g)
