"""The on-disk sample format (docs/DESIGN.md "Data"): one sample = one identity in one expression, V views.

Members of sample ``{identity:06d}_{expression:04d}``: ``meta.json``, ``tex.png`` (S,S,3 uint8),
``verts.npy`` / ``exp.npy`` (3,S,S float16), ``rgb.{v}.png|jpg`` (H,W,3), ``mask.{v}.png`` (H,W).
:func:`encode_sample` validates before writing, :func:`decode_sample` validates when reading, so a bad
sample is caught with its key and shard URL instead of surfacing as a shape error inside training.
"""

from __future__ import annotations

import io
import json
import re
from typing import Any, Mapping, Sequence

import numpy as np
from PIL import Image

from synshot.cli import DataFileError

SCHEMA_VERSION = 1
IMAGE_FORMATS = ("png", "jpg")
META_FIELDS = (
    "schema_version",
    "identity",
    "expression",
    "head_model_version",
    "identity_params",
    "expression_coeffs",
    "expression_names",
    "head_pose",
    "views",
    "lighting_id",
    "renderer",
)
VIEW_FIELDS = ("K", "w2c", "width", "height")
_KEY_RE = re.compile(r"^(\d{6})_(\d{4})$")


class DataError(DataFileError, ValueError):
    """Base of data errors; names the sample key and the shard URL (exit 5)."""

    def __init__(self, message: str, key: str | None = None, url: str | None = None):
        self.key, self.url, self.reason = key, url, message
        if key is None and url is None:  # e.g. re-raised from a DataLoader worker with the full text
            super().__init__(message)
            return
        where = f"sample '{key}'" if key else "sample"
        if url:
            where += f" in shard {url}"
        super().__init__(f"{where}: {message}")


class CorruptSampleError(DataError):
    """The sample is unreadable or inconsistent; a loader may skip and count it."""


class SchemaVersionError(DataError):
    """The data was written with another schema version: never skipped, the whole dataset is incompatible."""


def sample_key(identity: int, expression: int) -> str:
    """``"{identity:06d}_{expression:04d}"``: sorts by identity, then expression."""
    if not (0 <= int(identity) < 10**6 and 0 <= int(expression) < 10**4):
        raise ValueError(f"sample_key: identity {identity} must be in [0, 1e6) and expression {expression} in [0, 1e4)")
    return f"{int(identity):06d}_{int(expression):04d}"


def parse_key(key: str) -> tuple[int, int]:
    m = _KEY_RE.match(key)
    if not m:
        raise ValueError(f"'{key}' is not a sample key of the form 000123_0004")
    return int(m.group(1)), int(m.group(2))


# ---------------------------------------------------------------- encoding


def _png(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def _jpg(array: np.ndarray, quality: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def _npy(array: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, array, allow_pickle=False)
    return buf.getvalue()


def _require(cond: bool, message: str, key: str) -> None:
    if not cond:
        raise ValueError(f"encode_sample '{key}': {message}")


def encode_sample(
    meta: Mapping[str, Any],
    tex: np.ndarray,
    verts: np.ndarray,
    exp: np.ndarray,
    rgbs: Sequence[np.ndarray],
    masks: Sequence[np.ndarray],
    image_format: str = "png",
    jpeg_quality: int = 95,
) -> dict[str, Any]:
    """Validate one sample and turn it into ``{"__key__": key, member: bytes}`` for a tar writer.

    ``meta`` holds every field of :data:`META_FIELDS` except ``schema_version`` (added here);
    ``tex`` is (S,S,3) uint8, ``verts``/``exp`` (3,S,S) (stored as float16), ``rgbs`` V x (H,W,3) uint8,
    ``masks`` V x (H,W) uint8 (0..255), one per entry of ``meta["views"]``.
    """
    meta = dict(meta)
    meta.setdefault("schema_version", SCHEMA_VERSION)
    key = sample_key(meta.get("identity", -1), meta.get("expression", -1)) if "identity" in meta and "expression" in meta else "?"
    missing = [f for f in META_FIELDS if f not in meta]
    _require(not missing, f"meta is missing {missing}", key)
    _require(meta["schema_version"] == SCHEMA_VERSION, f"schema_version {meta['schema_version']} != {SCHEMA_VERSION}", key)
    _require(image_format in IMAGE_FORMATS, f"image_format '{image_format}' not in {IMAGE_FORMATS}", key)
    tex = np.asarray(tex)
    _require(tex.dtype == np.uint8 and tex.ndim == 3 and tex.shape[2] == 3 and tex.shape[0] == tex.shape[1],
             f"tex must be (S,S,3) uint8, got {tex.shape} {tex.dtype}", key)
    size = tex.shape[0]
    for name, arr in (("verts", verts), ("exp", exp)):
        arr = np.asarray(arr)
        _require(arr.shape == (3, size, size), f"{name} must be (3,{size},{size}) like tex, got {arr.shape}", key)
        _require(np.isfinite(arr).all(), f"{name} has non-finite values", key)
    views = meta["views"]
    _require(len(views) == len(rgbs) == len(masks) and len(views) > 0,
             f"{len(views)} views in meta, {len(rgbs)} rgb images, {len(masks)} masks (must match, > 0)", key)
    for v, (view, rgb, mask) in enumerate(zip(views, rgbs, masks)):
        _check_view(view, v, key, ValueError)
        rgb, mask = np.asarray(rgb), np.asarray(mask)
        hw = (int(view["height"]), int(view["width"]))
        _require(rgb.dtype == np.uint8 and rgb.shape == hw + (3,), f"rgb.{v} must be {hw + (3,)} uint8 (camera size), got {rgb.shape} {rgb.dtype}", key)
        _require(mask.dtype == np.uint8 and mask.shape == hw, f"mask.{v} must be {hw} uint8, got {mask.shape} {mask.dtype}", key)
    _require(len(meta["expression_coeffs"]) == len(meta["expression_names"]),
             "expression_coeffs and expression_names differ in length", key)
    out: dict[str, Any] = {
        "__key__": key,
        "meta.json": json.dumps(_jsonable(meta), sort_keys=True).encode(),
        "tex.png": _png(tex),
        "verts.npy": _npy(np.asarray(verts, dtype=np.float16)),
        "exp.npy": _npy(np.asarray(exp, dtype=np.float16)),
    }
    for v, (rgb, mask) in enumerate(zip(rgbs, masks)):
        out[f"rgb.{v}.{image_format}"] = _png(np.asarray(rgb)) if image_format == "png" else _jpg(np.asarray(rgb), jpeg_quality)
        out[f"mask.{v}.png"] = _png(np.asarray(mask))
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "detach"):  # torch tensor
        obj = obj.detach().cpu().numpy()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.generic):
        return obj.item()
    return obj


# ---------------------------------------------------------------- decoding


def _check_view(view: Any, v: int, key: str, err: type, url: str | None = None) -> None:
    def fail(msg: str):
        if err is ValueError:
            raise ValueError(f"encode_sample '{key}': views[{v}]: {msg}")
        raise err(f"meta.json views[{v}]: {msg}", key, url)

    if not isinstance(view, Mapping):
        fail(f"must be an object with {VIEW_FIELDS}")
    missing = [f for f in VIEW_FIELDS if f not in view]
    if missing:
        fail(f"missing {missing}")
    if np.asarray(view["K"], dtype=np.float64).shape != (3, 3):
        fail("K must be 3x3")
    if np.asarray(view["w2c"], dtype=np.float64).shape != (4, 4):
        fail("w2c must be 4x4")
    if not (int(view["width"]) > 0 and int(view["height"]) > 0):
        fail("width and height must be positive")


def _decode_image(data: bytes, name: str, key: str, url: str | None, mode: str) -> np.ndarray:
    try:
        with Image.open(io.BytesIO(data)) as img:
            if img.mode != mode:
                raise CorruptSampleError(f"{name}: image mode {img.mode}, expected {mode}", key, url)
            return np.array(img)  # writable copy: torch.from_numpy warns on read-only buffers
    except CorruptSampleError:
        raise
    except Exception as exc:  # PIL raises many types for truncated/garbled data
        raise CorruptSampleError(f"{name}: cannot decode image ({type(exc).__name__}: {exc})", key, url) from None


def _decode_npy(data: bytes, name: str, key: str, url: str | None, size: int) -> np.ndarray:
    try:
        arr = np.load(io.BytesIO(data), allow_pickle=False)
    except Exception as exc:
        raise CorruptSampleError(f"{name}: cannot decode .npy ({type(exc).__name__}: {exc})", key, url) from None
    if arr.dtype != np.float16:
        raise CorruptSampleError(f"{name}: dtype {arr.dtype}, expected float16", key, url)
    if arr.shape != (3, size, size):
        raise CorruptSampleError(f"{name}: shape {arr.shape}, expected (3, {size}, {size}) (tex is {size}x{size})", key, url)
    _require_finite(arr, name, key, url)
    return arr


def _require_finite(arr: np.ndarray, name: str, key: str | None, url: str | None) -> None:
    """Non-finite numbers in a sample would reach the loss as NaN: the sample is corrupt (skipped, counted)."""
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        raise CorruptSampleError(f"{name}: {bad} of {arr.size} values are NaN/inf", key, url)


def decode_meta(raw: Mapping[str, Any]) -> dict[str, Any]:
    """Parse and check ``meta.json`` only (cheap); raises :class:`SchemaVersionError` on a version mismatch."""
    key, url = raw.get("__key__"), raw.get("__url__")
    if "meta.json" not in raw:
        raise CorruptSampleError(f"missing member meta.json (members: {sorted(k for k in raw if not k.startswith('__'))})", key, url)
    try:
        meta = json.loads(raw["meta.json"])
    except Exception as exc:
        raise CorruptSampleError(f"meta.json is not valid JSON ({exc})", key, url) from None
    if not isinstance(meta, dict):
        raise CorruptSampleError("meta.json must be an object", key, url)
    if "schema_version" in meta and meta["schema_version"] != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"schema_version {meta['schema_version']!r} but this code reads version {SCHEMA_VERSION}; "
            "regenerate the dataset with data_tools.synth or use the matching code version",
            key, url,
        )
    missing = [f for f in META_FIELDS if f not in meta]
    if missing:
        raise CorruptSampleError(f"meta.json is missing fields {missing}", key, url)
    if key is not None:
        try:
            ident, expr = parse_key(key)
        except ValueError as exc:
            raise CorruptSampleError(str(exc), key, url) from None
        if (ident, expr) != (meta["identity"], meta["expression"]):
            raise CorruptSampleError(
                f"key says identity {ident} expression {expr}, meta.json says {meta['identity']} {meta['expression']}", key, url
            )
    views = meta["views"]
    if not isinstance(views, list) or not views:
        raise CorruptSampleError("meta.json views must be a non-empty list", key, url)
    for v, view in enumerate(views):
        _check_view(view, v, key, CorruptSampleError, url)
    if len(meta["expression_coeffs"]) != len(meta["expression_names"]):
        raise CorruptSampleError("meta.json expression_coeffs and expression_names differ in length", key, url)
    if np.asarray(meta["head_pose"], dtype=np.float64).shape != (4, 4):
        raise CorruptSampleError("meta.json head_pose must be 4x4", key, url)
    for field in ("head_pose", "expression_coeffs"):
        try:
            values = np.asarray(meta[field], dtype=np.float64)
        except (TypeError, ValueError):
            raise CorruptSampleError(f"meta.json {field} is not numeric", key, url) from None
        _require_finite(values, f"meta.json {field}", key, url)
    for v, view in enumerate(views):
        for field in ("K", "w2c"):
            if field in view:
                _require_finite(np.asarray(view[field], dtype=np.float64), f"meta.json views[{v}].{field}", key, url)
    return meta


def decode_sample(raw: Mapping[str, Any], views: Sequence[int] | None = None, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """Decode and validate a raw sample (``{"__key__", "__url__", member: bytes}``).

    ``views``: indices of the views to decode (default all; decoding only the chosen views saves time).
    Returns numpy arrays: ``tex`` (S,S,3) uint8, ``verts``/``exp`` (3,S,S) float16, ``rgb`` (V,H,W,3) uint8,
    ``mask`` (V,H,W) uint8, ``K`` (V,3,3), ``w2c`` (V,4,4), ``head_pose`` (4,4), ``expression_coeffs`` (E,)
    float32, plus ``meta``, ``key``, ``identity``, ``expression``, ``views`` (the chosen indices).
    ``meta``: the result of :func:`decode_meta` for this ``raw`` when the caller already has it.
    Raises :class:`CorruptSampleError` (skippable) or :class:`SchemaVersionError` (fatal), naming key and shard.
    """
    key, url = raw.get("__key__"), raw.get("__url__")
    meta = decode_meta(raw) if meta is None else meta
    all_views = meta["views"]
    chosen = list(range(len(all_views))) if views is None else [int(v) for v in views]
    for v in chosen:
        if not 0 <= v < len(all_views):
            raise CorruptSampleError(f"view {v} requested but the sample has {len(all_views)} views", key, url)
    for name in ("tex.png", "verts.npy", "exp.npy"):
        if name not in raw:
            raise CorruptSampleError(f"missing member {name}", key, url)
    tex = _decode_image(raw["tex.png"], "tex.png", key, url, "RGB")
    if tex.ndim != 3 or tex.shape[0] != tex.shape[1]:
        raise CorruptSampleError(f"tex.png: shape {tex.shape}, expected square (S,S,3)", key, url)
    size = tex.shape[0]
    verts = _decode_npy(raw["verts.npy"], "verts.npy", key, url, size)
    exp = _decode_npy(raw["exp.npy"], "exp.npy", key, url, size)
    rgbs, masks = [], []
    for v in chosen:
        view = all_views[v]
        hw = (int(view["height"]), int(view["width"]))
        rgb_name = next((f"rgb.{v}.{ext}" for ext in IMAGE_FORMATS if f"rgb.{v}.{ext}" in raw), None)
        if rgb_name is None:
            raise CorruptSampleError(f"missing member rgb.{v}.png|jpg", key, url)
        if f"mask.{v}.png" not in raw:
            raise CorruptSampleError(f"missing member mask.{v}.png", key, url)
        rgb = _decode_image(raw[rgb_name], rgb_name, key, url, "RGB")
        mask = _decode_image(raw[f"mask.{v}.png"], f"mask.{v}.png", key, url, "L")
        if rgb.shape[:2] != hw:
            raise CorruptSampleError(f"{rgb_name}: image is {rgb.shape[1]}x{rgb.shape[0]} but camera {v} says {hw[1]}x{hw[0]}", key, url)
        if mask.shape != hw:
            raise CorruptSampleError(f"mask.{v}.png: image is {mask.shape[1]}x{mask.shape[0]} but camera {v} says {hw[1]}x{hw[0]}", key, url)
        rgbs.append(rgb)
        masks.append(mask)
    if len({r.shape for r in rgbs}) > 1:
        raise CorruptSampleError(f"views {chosen} have different image sizes {[r.shape for r in rgbs]}", key, url)
    return {
        "key": key,
        "url": url,
        "meta": meta,
        "identity": int(meta["identity"]),
        "expression": int(meta["expression"]),
        "views": chosen,
        "tex": tex,
        "verts": verts,
        "exp": exp,
        "rgb": np.stack(rgbs),
        "mask": np.stack(masks),
        "K": np.asarray([all_views[v]["K"] for v in chosen], dtype=np.float32),
        "w2c": np.asarray([all_views[v]["w2c"] for v in chosen], dtype=np.float32),
        "head_pose": np.asarray(meta["head_pose"], dtype=np.float32),
        "expression_coeffs": np.asarray(meta["expression_coeffs"], dtype=np.float32),
    }
