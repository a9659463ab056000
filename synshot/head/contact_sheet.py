"""Population contact sheet: N sampled identities x M expressions, ray traced, saved as one PNG.

    synshot head sheet --out docs/img/population.png --identities 8 --expressions 4

Why: the quickest check that sampled heads look like heads (eyes, mouth, hair, ears) and that the
population is diverse; the data inspect tool makes similar sheets from shards.
"""

from __future__ import annotations


import numpy as np
import torch
from PIL import Image
from pydantic import Field

from synshot.cli import Command, get_logger
from synshot.config import ConfigBase
from synshot.fsio import atomic_path
from synshot.images import save_png, to_uint8

from synshot.head import EXPRESSION_NAMES, HeadConfig, HeadModel, sample_cameras, sample_expression, sample_identity
from synshot.camera import look_at_w2c
from synshot.raytrace import RayTraceConfig, RayTracer

log = get_logger(__name__)

# columns after the first (random) one show these expressions when there is room
_SHOWCASE = [{"jaw_open": 1.0}, {"smile_l": 1.0, "smile_r": 1.0, "brow_up_l": 0.6, "brow_up_r": 0.6},
             {"blink_l": 1.0, "blink_r": 1.0, "pucker": 0.8}]


def _expr(d: dict[str, float]) -> torch.Tensor:
    e = torch.zeros(len(EXPRESSION_NAMES))
    for k, v in d.items():
        e[EXPRESSION_NAMES.index(k)] = v
    return e


def _cell_camera(col: int, size: int) -> tuple[np.ndarray, np.ndarray]:
    yaw = np.radians([0.0, 20.0, -30.0, 45.0, -60.0][col % 5])
    d = 0.8
    eye = np.array([np.sin(yaw) * d, 0.05, np.cos(yaw) * d])
    target = np.array([0.0, -0.01, 0.0])
    f = 0.85 * size * d / 0.30
    return np.array([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]]), look_at_w2c(eye, target)


def population_sheet(n_identities: int = 8, n_expressions: int = 4, size: int = 128, seed: int = 0,
                     spp: int = 32, head_cfg: HeadConfig | None = None, random_views: bool = False) -> np.ndarray:
    """(rows * size, cols * size, 3) uint8: rows = identities, columns = expressions (and views)."""
    model = HeadModel(head_cfg or HeadConfig())
    tracer = RayTracer(RayTraceConfig(spp=spp, background=(0.12, 0.12, 0.14)))
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n_identities):
        ident = sample_identity(rng)
        cells = []
        for j in range(n_expressions):
            expr = sample_expression(rng) if j == 0 or j > len(_SHOWCASE) else _expr(_SHOWCASE[j - 1])
            mesh = model.mesh(ident, expr)
            cam = sample_cameras(rng, 1, size, size)[0] if random_views else _cell_camera(i + j, size)
            rgb, _ = tracer.render(mesh, [cam], lighting_id=(i * n_expressions + j) % 8, seed=i * 1000 + j)[0]
            cells.append(rgb)
        rows.append(np.concatenate(cells, 1))
    return np.concatenate(rows, 0)


_REGION_COLOURS = {"face": (230, 180, 150), "scalp": (90, 60, 40), "ears": (220, 120, 120), "neck": (170, 140, 110),
                   "eyes": (80, 140, 230), "mouth": (200, 40, 60)}


def uv_layout_image(size: int = 256, seed: int = 0, head_cfg: HeadConfig | None = None) -> np.ndarray:
    """(size, 3*size, 3) uint8: albedo | region masks | neutral positions of one sampled identity."""
    model = HeadModel(head_cfg or HeadConfig())
    rng = np.random.default_rng(seed)
    maps = model.uv_maps(sample_identity(rng), torch.zeros(len(model.expression_names)), size)
    tex = to_uint8(maps["tex"])
    reg = np.zeros((size, size, 3), dtype=np.uint8)
    for name, m in model.uv_region_masks(size).items():
        reg[m.numpy()] = _REGION_COLOURS[name]
    v = maps["verts"]
    inside = model.raster(size).mask
    lo, hi = v[:, inside].min(1).values[:, None, None], v[:, inside].max(1).values[:, None, None]
    pos = (((v - lo) / (hi - lo)).clamp(0, 1) * 255).permute(1, 2, 0).numpy().astype(np.uint8) * inside[..., None]
    return np.concatenate([tex, reg, pos], 1)


class SheetConfig(ConfigBase):
    """Size and sampling of the population sheet."""

    identities: int = Field(8, ge=1)
    expressions: int = Field(4, ge=1)
    size: int = Field(128, ge=16)
    spp: int = Field(32, ge=1)
    seed: int = 0
    max_kib: int = Field(290, ge=1)  # above this, store a 256-colour palette PNG
    uv_layout: str | None = None  # also write the UV layout (albedo | regions | positions) to this PNG


CLI = Command("head sheet", "Ray-traced contact sheet of sampled identities x expressions (one PNG).",
              config_cls=SheetConfig, out_help="PNG to write (default docs/img/population.png)",
              example="synshot head sheet --out docs/img/population.png seed=4 uv_layout=docs/img/uv_layout.png")
CLI.option("--identities", key="identities", type=int)
CLI.option("--expressions", key="expressions", type=int)
CLI.option("--seed", key="seed", type=int)
CLI.option("--uv-layout", key="uv_layout", help="also write the UV layout to this PNG")


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, a: SheetConfig) -> int:
    if a.uv_layout:
        save_png(a.uv_layout, uv_layout_image(256, a.seed), optimize=True)
        log.info("wrote %s", a.uv_layout)
    img = population_sheet(a.identities, a.expressions, a.size, a.seed, a.spp)
    out = save_png(args.out or "docs/img/population.png", img, optimize=True)
    if out.stat().st_size > a.max_kib * 1024:          # path-tracing noise compresses badly: use a palette
        with atomic_path(out) as tmp:
            Image.fromarray(img).quantize(256, method=Image.Quantize.MEDIANCUT).save(tmp, format="PNG", optimize=True)
    log.info("wrote %s (%d KiB, %dx%d)", out, out.stat().st_size // 1024, img.shape[1], img.shape[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
