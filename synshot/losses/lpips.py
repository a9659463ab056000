"""LPIPS (Zhang et al. 2018, v0.1) without torchvision: AlexNet/VGG16 trunks written in torch.nn.

Why vendored: the ``lpips`` package imports torchvision, whose CUDA-only wheel does not import on
a CPU-only torch. The calibrated 1x1 "lin" heads are read from
the ``lpips`` wheel's ``weights/v0.1/{net}.pth`` (located with ``importlib.util.find_spec``, the
package itself is never imported); the ImageNet trunk comes from a local file in torchvision's
layout (keys ``features.N.weight`` / ``features.N.bias``, e.g. ``alexnet-owt-7be5be79.pth``).
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import torch
from torch import Tensor, nn

# Trunk layer layouts (torchvision `features` indices) and the slice ends that give LPIPS's taps.
_ALEX = [("conv", 3, 64, 11, 4, 2), ("relu",), ("pool",), ("conv", 64, 192, 5, 1, 2), ("relu",), ("pool",),
         ("conv", 192, 384, 3, 1, 1), ("relu",), ("conv", 384, 256, 3, 1, 1), ("relu",),
         ("conv", 256, 256, 3, 1, 1), ("relu",)]
_ALEX_TAPS = (2, 5, 8, 10, 12)
_ALEX_CH = (64, 192, 384, 256, 256)


def _vgg16_layers() -> list[tuple]:
    cfg = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
    layers, cin = [], 3
    for v in cfg:
        if v == "M":
            layers.append(("maxpool2",))
        else:
            layers += [("conv", cin, v, 3, 1, 1), ("relu",)]
            cin = v
    return layers


_VGG_TAPS = (4, 9, 16, 23, 30)
_VGG_CH = (64, 128, 256, 512, 512)
NETS = {"alex": (_ALEX, _ALEX_TAPS, _ALEX_CH), "vgg": (_vgg16_layers(), _VGG_TAPS, _VGG_CH)}


class LPIPSError(ValueError):
    """An LPIPS weight file that cannot be used; the message names the file."""


def _build_features(layers: list[tuple]) -> nn.Sequential:
    mods: list[nn.Module] = []
    for spec in layers:
        if spec[0] == "conv":
            _, cin, cout, k, s, p = spec
            mods.append(nn.Conv2d(cin, cout, k, stride=s, padding=p))
        elif spec[0] == "relu":
            mods.append(nn.ReLU(inplace=False))
        elif spec[0] == "pool":
            mods.append(nn.MaxPool2d(3, 2))
        else:
            mods.append(nn.MaxPool2d(2, 2))
    return nn.Sequential(*mods)


def _load_state(path: Path) -> dict[str, Tensor]:
    if not path.is_file():
        raise LPIPSError(f"{path}: LPIPS weight file not found")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # torch/safetensors raise many types for corrupt files
        raise LPIPSError(f"{path}: cannot read LPIPS weights ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict):
        raise LPIPSError(f"{path}: expected a state dict, got {type(state).__name__}")
    return state


def default_heads_path(net: str) -> Path | None:
    """``weights/v0.1/{net}.pth`` inside the installed ``lpips`` package, or None if not installed."""
    spec = importlib.util.find_spec("lpips")
    if spec is None or not spec.submodule_search_locations:
        return None
    path = Path(list(spec.submodule_search_locations)[0]) / "weights" / "v0.1" / f"{net}.pth"
    return path if path.is_file() else None


class LPIPS(nn.Module):
    """LPIPS distance, inputs ``(N, 3, H, W)`` in [0, 1] -> ``(N,)``. All weights frozen."""

    def __init__(self, backbone: str | Path, net: str = "alex", heads: str | Path | None = None) -> None:
        super().__init__()
        if net not in NETS:
            raise ValueError(f"lpips_net must be one of {sorted(NETS)}, got {net!r}")
        layers, self.taps, chans = NETS[net]
        self.features = _build_features(layers[: self.taps[-1]])
        backbone = Path(backbone)
        state = _load_state(backbone)
        trunk = {k[len("features."):]: v for k, v in state.items() if k.startswith("features.")}
        own = self.features.state_dict()
        missing = [k for k in own if k not in trunk]
        if missing:
            raise LPIPSError(f"{backbone}: not a torchvision {net} backbone (missing features.{missing[0]}, ...)")
        try:
            self.features.load_state_dict({k: trunk[k] for k in own})
        except RuntimeError as exc:
            raise LPIPSError(f"{backbone}: backbone shapes do not match {net}: {exc}") from None
        heads_path = Path(heads) if heads is not None else default_heads_path(net)
        if heads_path is None:
            raise LPIPSError("LPIPS heads not found: install the pinned `lpips` wheel or set lpips_heads")
        hstate = _load_state(heads_path)
        self.lins = nn.ModuleList(nn.Conv2d(c, 1, 1, bias=False) for c in chans)
        for i, lin in enumerate(self.lins):
            key = f"lin{i}.model.1.weight"
            if key not in hstate or hstate[key].shape != lin.weight.shape:
                raise LPIPSError(f"{heads_path}: no LPIPS head {key} of shape {tuple(lin.weight.shape)}")
            lin.weight.data.copy_(hstate[key])
        self.register_buffer("shift", torch.tensor([-0.030, -0.088, -0.188]).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor([0.458, 0.448, 0.450]).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> "LPIPS":  # always frozen, no dropout/batch-norm anyway
        return super().train(False)

    def _taps(self, x: Tensor) -> list[Tensor]:
        outs, start = [], 0
        for end in self.taps:
            for i in range(start, end):
                x = self.features[i](x)
            outs.append(x)
            start = end
        return outs

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        x = ((x * 2 - 1) - self.shift) / self.scale
        y = ((y * 2 - 1) - self.shift) / self.scale
        total = x.new_zeros(x.shape[0])
        for fx, fy, lin in zip(self._taps(x), self._taps(y), self.lins):
            fx = fx / (fx.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            fy = fy / (fy.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            total = total + lin((fx - fy) ** 2).mean((1, 2, 3))
        return total
