"""The 3DGS .ply writer: layout, round trip, and the MP4/PNG writers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from synshot.invert.ply import SH_C0, read_ply, write_ply
from synshot.images import image_grid
from synshot.invert.video import read_mp4_frames, write_mp4


def _gaussians(n=50, degree=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    quats = torch.nn.functional.normalize(torch.randn(n, 4, generator=g), dim=1)
    return dict(means=torch.randn(n, 3, generator=g), quats=quats,
                scales=torch.rand(n, 3, generator=g) * 0.01 + 1e-4,
                opacities=torch.rand(n, generator=g) * 0.98 + 0.01,
                sh=torch.randn(n, (degree + 1) ** 2, 3, generator=g))


@pytest.mark.parametrize("degree", [0, 1, 3])
def test_round_trip(tmp_path, degree):
    g = _gaussians(degree=degree)
    path = write_ply(tmp_path / "a.ply", **g)
    back = read_ply(path)
    assert back.sh_degree == degree
    np.testing.assert_allclose(back.means, g["means"].numpy(), atol=1e-6)
    np.testing.assert_allclose(back.quats, g["quats"].numpy(), atol=1e-6)
    np.testing.assert_allclose(back.scales, g["scales"].numpy(), rtol=1e-5)
    np.testing.assert_allclose(back.opacities, g["opacities"].numpy(), atol=1e-5)
    np.testing.assert_allclose(back.sh, g["sh"].numpy(), atol=1e-6)


def test_header_is_standard_3dgs_layout(tmp_path):
    g = _gaussians(n=3, degree=3)
    path = write_ply(tmp_path / "a.ply", **g)
    raw = path.read_bytes()
    header = raw[: raw.index(b"end_header\n")].decode().splitlines()
    props = [line.split()[2] for line in header if line.startswith("property")]
    expected = (["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2"]
                + [f"f_rest_{i}" for i in range(45)] + ["opacity", "scale_0", "scale_1", "scale_2"]
                + ["rot_0", "rot_1", "rot_2", "rot_3"])
    assert props == expected
    assert "format binary_little_endian 1.0" in header and "element vertex 3" in header
    body = np.frombuffer(raw[raw.index(b"end_header\n") + 11:], dtype="<f4").reshape(3, 62)
    # f_rest is channel-major: f_rest_0..14 = red coefficients 1..15
    np.testing.assert_allclose(body[0, 9:24], g["sh"][0, 1:, 0].numpy(), atol=1e-6)
    np.testing.assert_allclose(body[0, 55:58], np.log(g["scales"][0].numpy()), atol=1e-5)  # log scales
    op = g["opacities"][0].item()
    assert body[0, 54] == pytest.approx(np.log(op / (1 - op)), abs=1e-4)  # logit


def test_rgb_colours_become_dc(tmp_path):
    g = _gaussians(n=4)
    rgb = torch.rand(4, 3)
    back = read_ply(write_ply(tmp_path / "c.ply", g["means"], g["quats"], g["scales"], g["opacities"], rgb))
    np.testing.assert_allclose(back.sh[:, 0] * SH_C0 + 0.5, rgb.numpy(), atol=1e-6)


def test_bad_shapes_are_refused(tmp_path):
    g = _gaussians(n=4)
    g["scales"] = g["scales"][:3]
    with pytest.raises(ValueError, match="scales"):
        write_ply(tmp_path / "bad.ply", **g)


def test_mp4_and_grid(tmp_path):
    frames = [np.full((33, 47, 3), i * 20, np.uint8) for i in range(6)]  # odd size: padded to even
    path = write_mp4(tmp_path / "v.mp4", frames, fps=6)
    back = read_mp4_frames(path)
    assert len(back) == 6 and back[0].shape == (34, 48, 3)
    assert abs(int(back[3].mean()) - 60) < 4
    grid = image_grid([[torch.zeros(3, 8, 8), torch.ones(3, 8, 8)]], pad=2)
    assert grid.shape == (8, 18, 3) and grid[0, 0, 0] == 0 and grid[0, -1, 0] == 255
