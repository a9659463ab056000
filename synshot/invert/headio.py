"""The few head-model calls the inversion needs, in one place (so the rest of invert does not depend on synshot.head's API).

Why an adapter: the inversion only needs UV maps (verts, exp, mean texture), posed head vertices
and the face region; keeping those calls here keeps the rest of synshot.invert independent of the
head model's internals.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any, Sequence

import torch
from torch import Tensor


class HeadAdapter:
    """Wraps ``synshot.head.HeadModel`` with the identity of one subject."""

    def __init__(self, identity: dict[str, Any] | None = None, head_model=None, mesh: str = "default"):
        import synshot.head as head

        self._head = head
        self.model = head_model if head_model is not None else _default_head_model(mesh)
        self.version: str = head.HEAD_MODEL_VERSION
        self.expression_names: list[str] = list(self.model.expression_names)
        self.identity_dict = identity
        self.identity = self._identity_from_dict(identity)
        self._vert_cache: dict[tuple, Tensor] = {}

    def _identity_from_dict(self, identity: dict[str, Any] | None):
        cls = self._head.IdentityParams
        if identity is None:
            return mean_identity(self._head)
        try:
            return cls.from_dict(identity)
        except Exception as exc:  # noqa: BLE001 - message names the fix
            raise ValueError(f"identity params cannot be read by this head model ({type(exc).__name__}: {exc}); "
                             f"re-track the subject with head model {self.version}") from exc

    def identity_to_dict(self) -> dict[str, Any]:
        return self.identity.to_dict()

    @property
    def num_expressions(self) -> int:
        return len(self.expression_names)

    # Deforming the mesh is the expensive call (~1 s on a busy CPU); every map, vertex set and face
    # point set of one expression comes from one deformation, cached for no-grad callers.
    def vertices(self, expression: Tensor) -> Tensor:
        """Head-frame mesh vertices (V,3) of this identity in ``expression`` (differentiable when it requires grad)."""
        if isinstance(expression, Tensor) and expression.requires_grad:
            return self.model.vertices(self.identity, expression.cpu()).float()
        expression = torch.as_tensor(expression, dtype=torch.float32).detach().cpu()
        key = tuple(round(float(x), 6) for x in expression)
        if key not in self._vert_cache:
            if len(self._vert_cache) > 64:
                self._vert_cache.pop(next(iter(self._vert_cache)))
            with torch.no_grad():
                self._vert_cache[key] = self.model.vertices(self.identity, expression).float()
        return self._vert_cache[key]

    def _gather(self, attr: Tensor, size: int) -> Tensor:
        from synshot.head.uvraster import gather_uv

        return gather_uv(attr, self.model.faces, self.model.raster(size))

    def uv_maps(self, expression: Tensor, size: int) -> dict[str, Tensor]:
        """{"tex", "verts", "exp"} (3,S,S) for this identity in ``expression`` (E,) (differentiable in it)."""
        neutral = self.vertices(torch.zeros(self.num_expressions))
        posed = self.vertices(expression)
        return {"tex": self.model.texture(self.identity, size), "verts": self._gather(neutral, size),
                "exp": self._gather(posed - neutral, size)}

    def exp_map(self, expression: Tensor, size: int) -> Tensor:
        neutral = self.vertices(torch.zeros(self.num_expressions))
        return self._gather(self.vertices(expression) - neutral, size)

    def exp_maps(self, expressions: Tensor, size: int) -> Tensor:
        """(N,3,S,S) expression-offset maps for (N,E) coefficients."""
        return torch.stack([self.exp_map(e, size) for e in expressions])

    def mean_texture(self, size: int) -> Tensor:
        """Albedo of the average identity: the fill for texels no input image sees."""
        return self.model.texture(mean_identity(self._head), size)

    def region_masks(self, size: int) -> dict[str, Tensor]:
        return _region_masks(size)

    def face_points(self, expression: Tensor) -> Tensor:
        """Head-frame face-region vertices (P,3) (for ArcFace crops)."""
        face_id = list(self._head.REGION_NAMES).index("face")
        return self.vertices(expression)[self.model.regions.cpu() == face_id]


@lru_cache(maxsize=2)
def _region_masks(size: int) -> dict[str, Tensor]:
    from synshot.head import uv_region_masks

    return uv_region_masks(size)


@lru_cache(maxsize=2)
def _default_head_model(mesh: str = "default"):
    """One HeadModel per mesh resolution per process (building the template takes a while)."""
    from synshot.head import HeadConfig, HeadModel

    return HeadModel(HeadConfig.tiny() if mesh == "tiny" else HeadConfig())


def mean_identity(head_module=None):
    """An average person of the head model: zero shape/feature offsets, mid skin tone, short dark hair.

    Used when params.json has no identity (a subject from an external tracker) and as the source
    of the mean texture that fills texels no input image sees.
    """
    if head_module is None:
        import synshot.head as head_module
    cls = head_module.IdentityParams
    if hasattr(cls, "mean"):
        return cls.mean()
    from synshot.head import params as hp

    skin = hp._SKIN_RAMP.mean(0) if hasattr(hp, "_SKIN_RAMP") else [0.7, 0.5, 0.4]
    skin = [float(x) for x in skin]
    return cls(shape=[0.0] * hp.N_SHAPE, features=[0.0] * len(hp.FEATURE_NAMES), age=0.35, skin_color=skin,
               lip_color=[skin[0] * 0.95, skin[1] * 0.62, skin[2] * 0.62], eye_color=[0.3, 0.2, 0.1],
               hair_color=[0.16, 0.10, 0.06], hair_length=0.2, hair_volume=0.3, hair_density=0.9,
               freckles=0.0, texture_seed=0)


def atlas_mask(masks: dict[str, Tensor], names: Sequence[str] | None = None) -> Tensor:
    names = list(names) if names is not None else list(masks)
    out = torch.zeros_like(masks[names[0]], dtype=torch.bool)
    for n in names:
        out |= masks[n].bool()
    return out
