"""Standard 3D Gaussian Splatting .ply files (the layout of the original 3DGS code and its viewers).

Per vertex, binary little-endian float32: ``x y z nx ny nz f_dc_0..2 f_rest_0..(3*(K-1)-1) opacity
scale_0..2 rot_0..3`` with opacity as a logit, scales as logs, rotations as wxyz quaternions and
``f_rest`` channel-major (all coefficients of R, then G, then B), as 3DGS writes
``features_rest.transpose(1, 2).flatten(1)``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

SH_C0 = 0.28209479177387814


@dataclass
class PlyGaussians:
    means: np.ndarray  # (N, 3)
    quats: np.ndarray  # (N, 4) wxyz, normalised
    scales: np.ndarray  # (N, 3) linear
    opacities: np.ndarray  # (N,) in (0, 1)
    sh: np.ndarray  # (N, K, 3), K = (degree + 1) ** 2

    @property
    def sh_degree(self) -> int:
        return int(round(math.sqrt(self.sh.shape[1]))) - 1


def rgb_to_sh_dc(rgb: torch.Tensor) -> torch.Tensor:
    """DC coefficient that renders ``rgb`` (3DGS adds 0.5 after evaluating the SH)."""
    return (rgb - 0.5) / SH_C0


def _np(x) -> np.ndarray:
    if isinstance(x, torch.Tensor):
        x = x.detach().to("cpu", torch.float32).numpy()
    return np.asarray(x, dtype=np.float32)


def write_ply(path: str | Path, means, quats, scales, opacities, sh) -> Path:
    """Write Gaussians (linear scales, opacities in (0,1), SH (N,K,3) or RGB (N,3)) as a 3DGS .ply."""
    means, quats, scales, opacities, sh = map(_np, (means, quats, scales, opacities, sh))
    n = means.shape[0]
    if sh.ndim == 2:  # plain RGB -> DC only
        sh = _np(rgb_to_sh_dc(torch.from_numpy(sh)))[:, None, :]
    k = sh.shape[1]
    if int(round(math.sqrt(k))) ** 2 != k:
        raise ValueError(f"SH coefficient count {k} is not a square (expected (degree+1)^2)")
    for name, arr, shape in (("means", means, (n, 3)), ("quats", quats, (n, 4)), ("scales", scales, (n, 3)),
                             ("opacities", opacities.reshape(-1), (n,)), ("sh", sh, (n, k, 3))):
        if arr.shape != shape:
            raise ValueError(f"write_ply: {name} has shape {arr.shape}, expected {shape}")
    quats = quats / np.linalg.norm(quats, axis=1, keepdims=True).clip(1e-12)
    op = np.clip(opacities.reshape(-1, 1), 1e-6, 1 - 1e-6)
    columns = [
        means, np.zeros((n, 3), np.float32), sh[:, 0, :],
        sh[:, 1:, :].transpose(0, 2, 1).reshape(n, 3 * (k - 1)),
        np.log(op / (1 - op)), np.log(np.clip(scales, 1e-12, None)), quats,
    ]
    data = np.concatenate(columns, axis=1).astype("<f4")
    names = (["x", "y", "z", "nx", "ny", "nz"] + [f"f_dc_{i}" for i in range(3)]
             + [f"f_rest_{i}" for i in range(3 * (k - 1))] + ["opacity"]
             + [f"scale_{i}" for i in range(3)] + [f"rot_{i}" for i in range(4)])
    assert data.shape[1] == len(names)
    header = "ply\nformat binary_little_endian 1.0\n" + f"element vertex {n}\n"
    header += "".join(f"property float {name}\n" for name in names) + "end_header\n"
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(np.ascontiguousarray(data).tobytes())
    return path


def read_ply(path: str | Path) -> PlyGaussians:
    """Parse a 3DGS .ply (binary little-endian float properties) back into activated values."""
    raw = Path(path).read_bytes()
    end = raw.find(b"end_header\n")
    if not raw.startswith(b"ply\n") or end < 0:
        raise ValueError(f"{path}: not a PLY file")
    header = raw[:end].decode("ascii").splitlines()
    if "format binary_little_endian 1.0" not in header:
        raise ValueError(f"{path}: only binary_little_endian PLY is supported")
    n, names = 0, []
    for line in header:
        parts = line.split()
        if parts[:2] == ["element", "vertex"]:
            n = int(parts[2])
        elif parts[:1] == ["property"]:
            if parts[1] != "float":
                raise ValueError(f"{path}: property {parts[2]} is {parts[1]}, expected float")
            names.append(parts[2])
    body = np.frombuffer(raw, dtype="<f4", offset=end + len(b"end_header\n"), count=n * len(names))
    table = body.reshape(n, len(names))
    col = {name: table[:, i] for i, name in enumerate(names)}
    n_rest = sum(1 for name in names if name.startswith("f_rest_"))
    k = 1 + n_rest // 3
    sh = np.zeros((n, k, 3), np.float32)
    sh[:, 0, :] = np.stack([col[f"f_dc_{i}"] for i in range(3)], axis=1)
    if n_rest:
        rest = np.stack([col[f"f_rest_{i}"] for i in range(n_rest)], axis=1).reshape(n, 3, k - 1)
        sh[:, 1:, :] = rest.transpose(0, 2, 1)
    return PlyGaussians(
        means=np.stack([col["x"], col["y"], col["z"]], axis=1),
        quats=np.stack([col[f"rot_{i}"] for i in range(4)], axis=1),
        scales=np.exp(np.stack([col[f"scale_{i}"] for i in range(3)], axis=1)),
        opacities=1.0 / (1.0 + np.exp(-col["opacity"])),
        sh=sh,
    )
