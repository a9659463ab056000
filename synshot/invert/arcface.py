"""ArcFace identity loss (1 - cos) and ArcFace feature matching, from an insightface ONNX model file.

Why ONNX through onnx2torch: insightface ships its recognition models as ONNX; onnx2torch turns
them into a differentiable torch graph, so the loss backpropagates to the rendered image. The model
is a local file given in the config (nothing is downloaded); without one the identity terms are off
with a single warning. Faces are cropped with a differentiable square crop around the projected
face region and resized to 112x112 (no 5-point alignment: we have no landmark detector offline).
"""

from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

ARCFACE_SIZE = 112
_warned = False


def import_torchvision_with_shim() -> None:
    """Import torchvision even when its C++ ops cannot load (CUDA build beside a CPU torch).

    onnx2torch imports torchvision at import time; the registry's torchvision 0.28.0 is a CUDA build
    that fails with "operator torchvision::nms does not exist" next to torch 2.13.0+cpu. Defining the
    two op schemas first lets the pure-Python parts import.
    """
    import sys

    if "torchvision" in sys.modules:
        return
    try:
        import torchvision  # noqa: F401
        return
    except RuntimeError as exc:
        if "torchvision::nms" not in str(exc):
            raise
    for name in [m for m in sys.modules if m == "torchvision" or m.startswith("torchvision.")]:
        del sys.modules[name]
    lib = torch.library.Library("torchvision", "DEF")  # noqa: F841 - kept alive by the registry
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    import_torchvision_with_shim._lib = lib  # keep a reference so the definitions stay registered
    import torchvision  # noqa: F401,F811


class ArcFace(nn.Module):
    """Frozen ArcFace network: RGB [0,1] (B,3,112,112) -> (embedding (B,D), stage features list)."""

    def __init__(self, onnx_path: str | Path):
        super().__init__()
        path = Path(onnx_path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: ArcFace ONNX model not found; set arcface_model to a local "
                                    f"insightface recognition model (e.g. w600k_r50.onnx) or null to disable")
        import_torchvision_with_shim()
        import onnx2torch

        try:
            self.net = onnx2torch.convert(str(path))
        except Exception as exc:  # noqa: BLE001 - re-raised with the file and the fix
            raise RuntimeError(f"{path}: onnx2torch cannot convert this model ({type(exc).__name__}: {exc}); "
                               f"export it with the legacy exporter (dynamo=False, opset 17)") from exc
        self.net.eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self._acts: list[torch.Tensor] = []
        for module in self.net.modules():
            if len(list(module.children())) == 0:
                module.register_forward_hook(self._hook)

    def _hook(self, _module, _inputs, output):
        if isinstance(output, torch.Tensor) and output.ndim == 4 and output.shape[-1] > 1:
            self._acts.append(output)

    def train(self, mode: bool = True):  # always frozen statistics
        return super().train(False)

    def forward(self, rgb: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        self._acts = []
        x = rgb * 255.0
        x = (x - 127.5) / 127.5  # insightface ArcFaceONNX: input_mean = input_std = 127.5, RGB order
        emb = self.net(x)
        if isinstance(emb, (tuple, list)):
            emb = emb[0]
        # last activation at each spatial resolution = the output of each stage
        stages: dict[int, torch.Tensor] = {}
        for act in self._acts:
            stages[int(act.shape[-1])] = act
        self._acts = []
        feats = [stages[k] for k in sorted(stages, reverse=True)]
        return emb.flatten(1), feats


def square_boxes(points_px: list[torch.Tensor], margin: float = 0.15) -> torch.Tensor:
    """Square (x0, y0, x1, y1) boxes around 2D point sets, enlarged by ``margin`` on each side."""
    boxes = []
    for pts in points_px:
        lo, hi = pts.min(0).values, pts.max(0).values
        centre, side = (lo + hi) / 2, (hi - lo).max() * (1 + 2 * margin)
        boxes.append(torch.cat([centre - side / 2, centre + side / 2]))
    return torch.stack(boxes)


def crop_resize(images: torch.Tensor, boxes: torch.Tensor, size: int = ARCFACE_SIZE,
                background: float = 1.0) -> torch.Tensor:
    """Differentiable crop of (B,3,H,W) images to (B,3,size,size); outside the image = background."""
    b, _, h, w = images.shape
    boxes = boxes.to(images)
    lin = (torch.arange(size, device=images.device, dtype=images.dtype) + 0.5) / size
    xs = boxes[:, 0:1] + lin[None] * (boxes[:, 2:3] - boxes[:, 0:1])  # pixel coords (B,size)
    ys = boxes[:, 1:2] + lin[None] * (boxes[:, 3:4] - boxes[:, 1:2])
    gx = (2 * xs / w - 1)[:, None, :].expand(b, size, size)
    gy = (2 * ys / h - 1)[:, :, None].expand(b, size, size)
    grid = torch.stack([gx, gy], dim=-1)
    shifted = images - background
    out = F.grid_sample(shifted, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    return out + background


class IdentityLoss(nn.Module):
    """L_id = 1 - cos(ArcFace(render), ArcFace(target)); L_arc = mean L1 of stage features."""

    def __init__(self, arcface: ArcFace):
        super().__init__()
        self.arcface = arcface
        self._target: tuple[torch.Tensor, list[torch.Tensor]] | None = None

    @torch.no_grad()
    def set_target(self, target_crops: torch.Tensor) -> None:
        emb, feats = self.arcface(target_crops)
        self._target = (F.normalize(emb, dim=1), [f.detach() for f in feats])

    def forward(self, render_crops: torch.Tensor) -> dict[str, torch.Tensor]:
        if self._target is None:
            raise RuntimeError("IdentityLoss.set_target must be called first")
        emb, feats = self.arcface(render_crops)
        t_emb, t_feats = self._target
        cos = (F.normalize(emb, dim=1) * t_emb).sum(1)
        feat = torch.stack([(a - b).abs().mean() for a, b in zip(feats, t_feats)]).mean() if feats else cos.new_zeros(())
        return {"id": (1 - cos).mean(), "arc_feat": feat, "id_cos": cos.detach()}


def cosine_similarity(arcface: ArcFace, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-pair ArcFace cosine between crops a and b (B,3,112,112)."""
    with torch.no_grad():
        ea, _ = arcface(a)
        eb, _ = arcface(b)
    return (F.normalize(ea, dim=1) * F.normalize(eb, dim=1)).sum(1)


def load_arcface(path: str | None) -> ArcFace | None:
    """The configured ArcFace, or None with one clear warning when no model file is configured."""
    global _warned
    if path is None:
        if not _warned:
            warnings.warn("arcface_model is not set: the ArcFace identity and feature-matching losses and the "
                          "identity-cosine metric are off (set arcface_model=/path/to/recognition.onnx)",
                          stacklevel=2)
            _warned = True
        return None
    return ArcFace(path)
