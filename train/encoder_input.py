"""What E_id sees as its texture input during training: the generator's albedo, or the texture an
inversion would unwrap from the sample's own images.

Why: the inversion cannot read a real person's albedo; it unwraps the input photos onto the head
model's UV atlas (``synshot.invert.unwrap``), so E_id gets lit, partly observed colours with the mean
texture in the texels no image sees. A prior trained only on clean albedo meets that input for the
first time at inversion. With ``tex: unwrapped`` a fraction of the training samples (chosen by a hash
of the sample key, so a resumed run makes the same choices) get exactly the inversion's texture,
unwrapped from the sample's rendered views with its known geometry and cameras. The decoders' targets
do not change: D_id still reconstructs geometry and the images are still the loss targets.
"""

from __future__ import annotations

import zlib
from functools import lru_cache
from typing import Literal

import torch
from pydantic import Field

from synshot.config import ConfigBase


class EncoderInputConfig(ConfigBase):
    tex: Literal["albedo", "unwrapped"] = "albedo"   # albedo: the paper's synthetic texture maps
    unwrapped_fraction: float = Field(1.0, ge=0, le=1)   # share of samples given the unwrapped texture
    mask_threshold: float = Field(0.5, ge=0, le=1)   # = the inversion's subject.mask_threshold


def chosen(key: str, fraction: float) -> bool:
    """Deterministic per-sample coin: the same sample gets the same input in every run and on resume."""
    return zlib.crc32(key.encode()) / 2**32 < fraction


class EncoderInput:
    """Rewrites ``batch["tex"]`` (on the batch's device) according to :class:`EncoderInputConfig`."""

    def __init__(self, cfg: EncoderInputConfig) -> None:
        self.cfg = cfg

    @staticmethod
    @lru_cache(maxsize=2)
    def atlas(size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The UV atlas mask and the inversion's fill (the average identity's albedo) at ``size``."""
        from synshot.invert.headio import HeadAdapter, _region_masks, atlas_mask

        return atlas_mask(_region_masks(size)), HeadAdapter(mesh="tiny").mean_texture(size)

    @torch.no_grad()
    def __call__(self, batch: dict) -> dict:
        if self.cfg.tex == "albedo" or self.cfg.unwrapped_fraction == 0:
            return batch
        from synshot.invert.unwrap import posed_uv_positions, unwrap_texture

        keys = batch.get("key") or [str(i) for i in range(batch["tex"].shape[0])]
        tex = batch["tex"].clone()
        valid, fill = (t.to(tex.device) for t in self.atlas(tex.shape[-1]))
        for b, key in enumerate(keys):
            if not chosen(key, self.cfg.unwrapped_fraction):
                continue
            v = batch["rgb"].shape[1]
            pos = posed_uv_positions(batch["verts"][b], batch["exp"][b][None].expand(v, -1, -1, -1),
                                     batch["head_pose"][b][None].expand(v, -1, -1))
            tex[b], _ = unwrap_texture(pos, valid, batch["rgb"][b], batch["mask"][b], batch["K"][b], batch["w2c"][b],
                                       fill, mask_threshold=self.cfg.mask_threshold)
        return {**batch, "tex": tex}
