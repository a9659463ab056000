"""Convolutional encoders/decoders in UV space and the per-Gaussian regressors (MLPs).

Decoders get two UV-coordinate channels at their input: the same code means different things at
different places of the atlas, and coordinates let a small decoder know where it is.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint
from torch import Tensor, nn


def _uv_coords(b: int, h: int, w: int, like: Tensor) -> Tensor:
    v = (torch.arange(h, device=like.device, dtype=like.dtype) + 0.5) / h
    u = (torch.arange(w, device=like.device, dtype=like.dtype) + 0.5) / w
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv])[None].expand(b, 2, h, w) * 2 - 1


class ConvBlock(nn.Module):
    """Conv 3x3 -> GroupNorm -> SiLU, twice, with a residual connection."""

    def __init__(self, cin: int, cout: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.norm1 = nn.GroupNorm(min(groups, cout), cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.norm2 = nn.GroupNorm(min(groups, cout), cout)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: Tensor) -> Tensor:
        h = F.silu(self.norm1(self.conv1(x)))
        h = self.norm2(self.conv2(h))
        return F.silu(h + self.skip(x))


class Encoder(nn.Module):
    """``(B, in_ch, S, S) -> (B, code_dim, S / 2**L, S / 2**L)`` with L = len(channels)."""

    def __init__(self, in_ch: int, channels: list[int], code_dim: int, groups: int) -> None:
        super().__init__()
        self.stem = nn.Conv2d(in_ch, channels[0], 3, padding=1)
        layers = []
        cin = channels[0]
        for c in channels:
            layers += [nn.Conv2d(cin, c, 4, stride=2, padding=1), ConvBlock(c, c, groups)]
            cin = c
        self.down = nn.Sequential(*layers)
        self.out = nn.Conv2d(cin, code_dim, 1)

    def forward(self, x: Tensor) -> Tensor:
        return self.out(self.down(self.stem(x)))


class Decoder(nn.Module):
    """``(B, in_ch, s, s) -> (B, out_ch, s * 2**L, s * 2**L)``.

    ``single_layer`` (paper ablation "Single Layer"): bilinear upsampling to the output size and a
    single 3x3 conv, i.e. no learned up path.
    """

    def __init__(
        self, in_ch: int, channels: list[int], out_ch: int, groups: int, single_layer: bool, out_gain: float = 1.0
    ) -> None:
        super().__init__()
        self.levels = len(channels)
        self.single_layer = single_layer
        # memory switch, not architecture: recompute each up block's activations in backward
        # (set by the trainer from distributed.activation_checkpointing; weights and outputs unchanged)
        self.activation_checkpointing = False
        if single_layer:
            self.head = nn.Conv2d(in_ch + 2, out_ch, 3, padding=1)
            self._scale_head(out_gain)
            return
        self.stem = nn.Conv2d(in_ch + 2, channels[0], 3, padding=1)
        self.up = nn.ModuleList()
        cin = channels[0]
        for c in channels:
            self.up.append(ConvBlock(cin, c, groups))
            cin = c
        self.head = nn.Conv2d(cin, out_ch, 3, padding=1)
        self._scale_head(out_gain)

    def _scale_head(self, gain: float) -> None:
        """Residual decoders start near zero output (the model starts at its template)."""
        with torch.no_grad():
            self.head.weight.mul_(gain)
            self.head.bias.mul_(gain)

    def forward(self, x: Tensor) -> Tensor:
        b, _, h, w = x.shape
        x = torch.cat([x, _uv_coords(b, h, w, x)], 1)
        if self.single_layer:
            x = F.interpolate(x, scale_factor=2**self.levels, mode="bilinear", align_corners=False)
            return self.head(x)
        x = self.stem(x)
        recompute = self.activation_checkpointing and self.training and torch.is_grad_enabled()
        for block in self.up:
            x = F.interpolate(x, scale_factor=2, mode="nearest")
            x = checkpoint(block, x, use_reentrant=False) if recompute else block(x)
        return self.head(x)


class MLP(nn.Module):
    """Per-Gaussian MLP on ``(..., in_ch)`` (a stack of 1x1 convs); the last layer starts small."""

    def __init__(self, in_ch: int, hidden: int, layers: int, out_ch: int, last_std: float = 1e-3) -> None:
        super().__init__()
        mods: list[nn.Module] = []
        cin = in_ch
        for _ in range(layers):
            mods += [nn.Linear(cin, hidden), nn.SiLU()]
            cin = hidden
        self.body = nn.Sequential(*mods)
        self.last = nn.Linear(cin, out_ch)
        nn.init.normal_(self.last.weight, std=last_std)
        nn.init.zeros_(self.last.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.last(self.body(x))
