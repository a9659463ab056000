"""A personalised avatar: the tuned prior + the frozen identity code (pivot) + the subject's identity.

Stored as one safetensors file (no pickle): all prior weights under their submodule names, the
pivot under ``avatar.q_id``, and JSON metadata (model config, inversion config, head-model
version, identity params, reference camera). Driving needs nothing else: expression coefficients
-> the head model's expression map -> ``E_expr`` -> decoders -> Gaussians.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from synshot.cli import CheckpointFileError

AVATAR_FORMAT = "synshot-avatar-1"
PIVOT_KEY = "avatar.q_id"


class AvatarError(CheckpointFileError, ValueError):
    """An avatar file that cannot be used; the message names the file and the fix."""


@dataclass
class Avatar:
    model: Any  # SynShotPrior
    q_id: Tensor  # (1, D, s, s)
    identity: dict[str, Any] | None
    expression_names: list[str]
    head_model_version: str
    reference: dict[str, Any]  # {"K", "w2c", "width", "height", "head_pose", "expression"}
    invert_config: dict[str, Any] = field(default_factory=dict)
    subject: str = ""
    _head: Any = None

    @property
    def head(self):
        from synshot.invert.headio import HeadAdapter

        if self._head is None:
            self._head = HeadAdapter(self.identity, mesh=self.invert_config.get("head_mesh", "default"))
        return self._head

    @property
    def device(self) -> torch.device:
        return self.q_id.device

    def to(self, device) -> "Avatar":
        self.model.to(device)
        self.q_id = self.q_id.to(device)
        return self

    @torch.no_grad()
    def expression_codes(self, expressions: Tensor) -> Tensor:
        m = self.model
        maps = self.head.exp_maps(expressions.cpu(), m.cfg.uv_size).to(self.device)
        return m.quantize_expression(m.encode_expression(maps))

    @torch.no_grad()
    def gaussians(self, expressions: Tensor, head_poses: Tensor):
        """GaussianBatch (T samples) for (T,E) expressions and (T,4,4) head poses."""
        q_expr = self.expression_codes(expressions)
        decoded = self.model.decode(self.q_id.expand(q_expr.shape[0], -1, -1, -1), q_expr)
        return self.model.gaussians(decoded, head_poses.to(self.device))

    @torch.no_grad()
    def render(self, expressions: Tensor, head_poses: Tensor, K: Tensor, w2c: Tensor, height: int, width: int,
               background=(1.0, 1.0, 1.0), backend: str = "auto", chunk: int = 4) -> tuple[Tensor, Tensor]:
        """Render T frames (one camera each) -> rgb (T,3,H,W), alpha (T,1,H,W), in chunks."""
        from synshot.model import render_gaussians

        bg = torch.tensor(background, dtype=torch.float32, device=self.device)
        rgbs, alphas = [], []
        for s in range(0, expressions.shape[0], chunk):
            sl = slice(s, s + chunk)
            g = self.gaussians(expressions[sl], head_poses[sl])
            rgb, alpha = render_gaussians(g, K[sl, None].to(self.device), w2c[sl, None].to(self.device),
                                          height, width, background=bg, backend=backend)
            rgbs.append(rgb[:, 0])
            alphas.append(alpha[:, 0])
        return torch.cat(rgbs), torch.cat(alphas)


def _tensor_list(x) -> list:
    return x.detach().cpu().tolist() if isinstance(x, Tensor) else x


def save_avatar(path: str | Path, avatar: Avatar) -> Path:
    from synshot.model.io import write_safetensors

    path = Path(path)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in avatar.model.state_dict().items()}
    tensors[PIVOT_KEY] = avatar.q_id.detach().to("cpu").contiguous().clone()
    meta = {
        "format": AVATAR_FORMAT,
        "model_config": json.dumps(avatar.model.cfg.model_dump(mode="json"), sort_keys=True),
        "invert_config": json.dumps(avatar.invert_config, sort_keys=True),
        "head_model_version": avatar.head_model_version,
        "identity": json.dumps(avatar.identity),
        "expression_names": json.dumps(avatar.expression_names),
        "reference": json.dumps({k: _tensor_list(v) for k, v in avatar.reference.items()}),
        "subject": avatar.subject,
        "gaussian_counts": json.dumps(avatar.model.gaussian_counts()),
    }
    return write_safetensors(path, tensors, meta, what="avatar",
                             fix="the inversion diverged: lower stage1.lr/stage2.lr or check the subject's inputs")


def load_avatar(path: str | Path, device: str | torch.device = "cpu") -> Avatar:
    """Read an avatar written by :func:`save_avatar` (checks the head-model version)."""
    from synshot.head import HEAD_MODEL_VERSION
    from synshot.model import SynShotPrior
    from synshot.model.io import embedded_model_config, read_safetensors

    path = Path(path)
    meta, tensors = read_safetensors(
        path, AvatarError, missing=f"{path}: avatar not found (create it with `make invert SUBJECT=...`)",
        unreadable=lambda exc: f"{path}: not a readable safetensors file ({exc}); re-run the inversion",
        fix="re-run the inversion to re-create it")
    if meta.get("format") != AVATAR_FORMAT:
        raise AvatarError(f"{path}: not a SynShot avatar (format={meta.get('format')!r}); "
                          f"pass the avatar.safetensors written by `synshot invert`")
    if meta.get("head_model_version") != HEAD_MODEL_VERSION:
        raise AvatarError(f"{path}: made with head model {meta.get('head_model_version')!r} but this code has "
                          f"{HEAD_MODEL_VERSION!r}; re-run the inversion with the current code")
    cfg = embedded_model_config(meta, path, AvatarError)
    q_id = tensors.pop(PIVOT_KEY, None)
    if q_id is None:
        raise AvatarError(f"{path}: no identity code '{PIVOT_KEY}'; re-run the inversion")
    model = SynShotPrior(cfg)
    missing, unexpected = model.load_state_dict(tensors, strict=False)
    if missing or unexpected:
        raise AvatarError(f"{path}: weights do not match the embedded config (missing {missing[:5]}, "
                          f"unexpected {unexpected[:5]})")
    model.eval().requires_grad_(False)
    ref = {k: (torch.tensor(v, dtype=torch.float32) if isinstance(v, list) else v)
           for k, v in json.loads(meta.get("reference", "{}")).items()}
    avatar = Avatar(model=model, q_id=q_id, identity=json.loads(meta.get("identity", "null")),
                    expression_names=json.loads(meta.get("expression_names", "[]")),
                    head_model_version=meta["head_model_version"], reference=ref,
                    invert_config=json.loads(meta.get("invert_config", "{}")), subject=meta.get("subject", ""))
    return avatar.to(device)
