"""Sample schema: encode/decode round trip and every validation error (names key and shard URL)."""

import io
import json

import numpy as np
import pytest
from test_data_helpers import encoded, random_sample_arrays

from synshot.data.schema import (
    SCHEMA_VERSION,
    CorruptSampleError,
    SchemaVersionError,
    decode_sample,
    encode_sample,
    parse_key,
    sample_key,
)

URL = "memory://ds/train-000003.tar"


def _raw(sample: dict) -> dict:
    raw = dict(sample)
    raw["__url__"] = URL
    return raw


def _npy(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_sample_key_format_and_parse():
    assert sample_key(12, 3) == "000012_0003"
    assert parse_key("000012_0003") == (12, 3)
    with pytest.raises(ValueError):
        sample_key(10**6, 0)
    with pytest.raises(ValueError):
        parse_key("12_3")


@pytest.mark.parametrize("fmt", ["png", "jpg"])
def test_round_trip(fmt):
    meta, tex, verts, exp, rgbs, masks = random_sample_arrays(7, 2, views=3, size=16, uv=8)
    sample = encode_sample(meta, tex, verts, exp, rgbs, masks, image_format=fmt)
    assert sample["__key__"] == "000007_0002"
    assert set(sample) == {"__key__", "meta.json", "tex.png", "verts.npy", "exp.npy"} | {
        f"rgb.{v}.{fmt}" for v in range(3)
    } | {f"mask.{v}.png" for v in range(3)}
    out = decode_sample(_raw(sample))
    assert out["meta"]["schema_version"] == SCHEMA_VERSION
    assert (out["identity"], out["expression"]) == (7, 2)
    np.testing.assert_array_equal(out["tex"], tex)
    assert out["verts"].dtype == np.float16 and out["verts"].shape == (3, 8, 8)
    np.testing.assert_array_equal(out["verts"], verts)
    np.testing.assert_array_equal(out["exp"], exp)
    assert out["rgb"].shape == (3, 16, 16, 3) and out["mask"].shape == (3, 16, 16)
    if fmt == "png":
        np.testing.assert_array_equal(out["rgb"], np.stack(rgbs))
    np.testing.assert_array_equal(out["mask"], np.stack(masks))
    np.testing.assert_allclose(out["K"][1], meta["views"][1]["K"])
    np.testing.assert_allclose(out["w2c"][2], meta["views"][2]["w2c"], atol=1e-6)
    assert out["expression_coeffs"].shape == (5,)
    # a subset of views decodes only those, in the requested order
    sub = decode_sample(_raw(sample), views=[2, 0])
    assert sub["views"] == [2, 0]
    np.testing.assert_allclose(sub["w2c"][0], meta["views"][2]["w2c"], atol=1e-6)


def test_missing_member_names_key_and_shard():
    raw = _raw(encoded(1, 0))
    del raw["mask.1.png"]
    with pytest.raises(CorruptSampleError, match=r"000001_0000.*train-000003\.tar.*missing member mask\.1\.png"):
        decode_sample(raw)
    raw = _raw(encoded(1, 0))
    del raw["meta.json"]
    with pytest.raises(CorruptSampleError, match="missing member meta.json"):
        decode_sample(raw)


def test_wrong_dtype_and_shape():
    raw = _raw(encoded(2, 0))
    raw["verts.npy"] = _npy(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(CorruptSampleError, match=r"verts\.npy: dtype float32, expected float16"):
        decode_sample(raw)
    raw = _raw(encoded(2, 0))
    raw["exp.npy"] = _npy(np.zeros((3, 4, 4), np.float16))
    with pytest.raises(CorruptSampleError, match=r"exp\.npy: shape \(3, 4, 4\), expected \(3, 8, 8\)"):
        decode_sample(raw)


def test_image_size_disagreeing_with_camera():
    meta, tex, verts, exp, rgbs, masks = random_sample_arrays(3, 1, views=2, size=16)
    sample = encode_sample(meta, tex, verts, exp, rgbs, masks)
    meta2 = json.loads(sample["meta.json"])
    meta2["views"][1]["width"] = 20
    sample["meta.json"] = json.dumps(meta2).encode()
    with pytest.raises(CorruptSampleError, match=r"rgb\.1\.png: image is 16x16 but camera 1 says 20x16"):
        decode_sample(_raw(sample))
    # and the encoder refuses to write it in the first place
    meta["views"][0]["height"] = 12
    with pytest.raises(ValueError, match=r"000003_0001.*rgb\.0 must be \(12, 16, 3\)"):
        encode_sample(meta, tex, verts, exp, rgbs, masks)


def test_schema_version_mismatch_is_its_own_error():
    raw = _raw(encoded(4, 0))
    meta = json.loads(raw["meta.json"])
    meta["schema_version"] = SCHEMA_VERSION + 1
    raw["meta.json"] = json.dumps(meta).encode()
    with pytest.raises(SchemaVersionError, match=rf"000004_0000.*train-000003.*schema_version {SCHEMA_VERSION + 1}"):
        decode_sample(raw)
    assert not issubclass(SchemaVersionError, CorruptSampleError)  # never silently skipped


def test_garbage_members():
    raw = _raw(encoded(5, 0))
    raw["rgb.0.png"] = raw["rgb.0.png"][:40]  # truncated PNG
    with pytest.raises(CorruptSampleError, match=r"rgb\.0\.png: cannot decode image"):
        decode_sample(raw)
    raw = _raw(encoded(5, 0))
    raw["meta.json"] = b"{not json"
    with pytest.raises(CorruptSampleError, match="not valid JSON"):
        decode_sample(raw)
    raw = _raw(encoded(5, 0))
    raw["__key__"] = "000006_0000"
    with pytest.raises(CorruptSampleError, match="key says identity 6"):
        decode_sample(raw)
    raw = _raw(encoded(5, 0))
    meta = json.loads(raw["meta.json"])
    del meta["head_pose"]
    raw["meta.json"] = json.dumps(meta).encode()
    with pytest.raises(CorruptSampleError, match=r"missing fields \['head_pose'\]"):
        decode_sample(raw)


def test_encoder_rejects_bad_arrays():
    meta, tex, verts, exp, rgbs, masks = random_sample_arrays(1, 1)
    with pytest.raises(ValueError, match="tex must be"):
        encode_sample(meta, tex.astype(np.float32), verts, exp, rgbs, masks)
    with pytest.raises(ValueError, match="verts must be"):
        encode_sample(meta, tex, verts[:, :4], exp, rgbs, masks)
    with pytest.raises(ValueError, match="4 views in meta, 3 rgb"):
        encode_sample(meta, tex, verts, exp, rgbs[:3], masks)
    bad = dict(meta)
    del bad["lighting_id"]
    with pytest.raises(ValueError, match="missing"):
        encode_sample(bad, tex, verts, exp, rgbs, masks)
