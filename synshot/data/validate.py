"""Dataset validation and contact sheets (behind ``synshot data inspect``).

Reads every shard of a split in full (the same reader and decoder as the loader), so what it
calls valid is exactly what the loader will accept; counts are checked against the manifest, and
splits are checked to share no identity.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
from PIL import Image

from synshot import fsio
from synshot.data import storage
from synshot.data.reader import ShardFailure, iter_shard
from synshot.data.schema import DataError, decode_sample
from synshot.data.writer import ManifestError, read_manifest, read_sidecar, parse_shard_name

SPLITS = ("train", "val", "test")


def _sha256(url: str, storage_options: Mapping[str, Any] | None) -> str:
    with storage.open_url(url, "rb", storage_options) as f:
        return fsio.stream_sha256(f)


def inspect_split(
    root: str, split: str, storage_options: Mapping[str, Any] | None = None, verify_hash: bool = False, max_errors: int = 50
) -> dict[str, Any]:
    """Validate one split: manifest, every shard's samples, counts; returns a JSON-able report."""
    report: dict[str, Any] = {"split": split, "ok": False, "errors": [], "shards": [], "num_samples": 0, "corrupt_samples": 0}
    try:
        manifest = read_manifest(root, split, storage_options)
    except ManifestError as exc:
        report["errors"].append(str(exc))
        return report
    report["manifest_num_samples"] = manifest["num_samples"]
    report["manifest_complete"] = manifest.get("complete")
    if manifest.get("complete") is False:
        report["errors"].append(f"manifest lists {len(manifest['shards'])} of {manifest.get('planned_shards')} planned shards (generation unfinished?)")
    identities: set[int] = set()
    keys_seen: set[str] = set()
    image_sizes: set[tuple[int, int]] = set()
    uv_sizes: set[int] = set()
    fingerprints: set[str | None] = set()
    for entry in manifest["shards"]:
        url = storage.join(root, entry["name"])
        shard = {"name": entry["name"], "manifest_samples": int(entry["num_samples"]), "samples": 0, "corrupt": [], "read_error": None}
        for item in iter_shard(url, storage_options):
            if isinstance(item, ShardFailure):
                shard["read_error"] = item.message
                continue
            try:
                sample = decode_sample(item)
            except DataError as exc:  # schema mismatch is reported too, not raised: this tool diagnoses
                shard["corrupt"].append({"key": item.get("__key__"), "error": exc.reason})
                continue
            shard["samples"] += 1
            if sample["key"] in keys_seen:
                shard["corrupt"].append({"key": sample["key"], "error": "duplicate key in split"})
            keys_seen.add(sample["key"])
            identities.add(sample["identity"])
            image_sizes.add(tuple(sample["rgb"].shape[1:3]))
            uv_sizes.add(int(sample["tex"].shape[0]))
        if shard["read_error"]:
            report["errors"].append(f"{url}: {shard['read_error']}")
        if shard["samples"] != shard["manifest_samples"]:
            report["errors"].append(f"{url}: {shard['samples']} valid samples, manifest says {shard['manifest_samples']}")
        for bad in shard["corrupt"]:
            report["errors"].append(f"{url}: sample '{bad['key']}': {bad['error']}")
        if verify_hash:
            parsed = parse_shard_name(entry["name"])
            sidecar = read_sidecar(root, parsed[0], parsed[1], storage_options) if parsed else None
            if sidecar is None:
                report["errors"].append(f"{url}: no sidecar to verify the hash against")
            elif _sha256(url, storage_options) != sidecar.get("sha256"):
                report["errors"].append(f"{url}: sha256 differs from its sidecar (shard replaced or damaged)")
            if sidecar is not None:
                fingerprints.add(sidecar.get("fingerprint"))
        report["num_samples"] += shard["samples"]
        report["corrupt_samples"] += len(shard["corrupt"])
        report["shards"].append(shard)
    if len(fingerprints) > 1:
        report["errors"].append(f"shards come from {len(fingerprints)} different generator configs (fingerprints {sorted(map(str, fingerprints))})")
    if len(report["errors"]) > max_errors:
        report["errors"] = report["errors"][:max_errors] + [f"... and {len(report['errors']) - max_errors} more"]
    report["identities"] = sorted(identities)
    report["image_sizes"] = sorted(image_sizes)
    report["uv_sizes"] = sorted(uv_sizes)
    report["generator_config"] = manifest.get("generator_config")
    report["ok"] = not report["errors"]
    return report


def inspect_dataset(
    root: str, splits: list[str] | None = None, storage_options: Mapping[str, Any] | None = None, verify_hash: bool = False
) -> dict[str, Any]:
    """Validate the given splits (default: those with a manifest) and check they share no identity."""
    if splits is None:
        names = set(storage.list_names(root, storage_options))
        splits = [s for s in SPLITS if f"{s}.json" in names] or ["train"]
    reports = {s: inspect_split(root, s, storage_options, verify_hash) for s in splits}
    errors = []
    for i, a in enumerate(splits):
        for b in splits[i + 1 :]:
            shared = set(reports[a].get("identities", [])) & set(reports[b].get("identities", []))
            if shared:
                errors.append(f"splits {a} and {b} share identities {sorted(shared)[:10]} (splits must be by identity)")
    summary = {
        "url": root,
        "ok": all(r["ok"] for r in reports.values()) and not errors,
        "errors": errors,
        "num_samples": sum(r["num_samples"] for r in reports.values()),
        "corrupt_samples": sum(r["corrupt_samples"] for r in reports.values()),
        "splits": {s: {k: v for k, v in r.items() if k != "identities"} | {"num_identities": len(r.get("identities", []))} for s, r in reports.items()},
    }
    return summary


def _fit(img: np.ndarray, height: int) -> Image.Image:
    pil = Image.fromarray(img)
    width = max(1, round(pil.width * height / pil.height))
    return pil.resize((width, height), Image.BILINEAR)


def contact_sheet(
    root: str, split: str, out_path: str, num_samples: int = 4, storage_options: Mapping[str, Any] | None = None, cell: int = 128
) -> str:
    """One row per sample: UV albedo, then every view's rgb, then every view's mask (``cell`` px high)."""
    manifest = read_manifest(root, split, storage_options)
    rows: list[Image.Image] = []
    for entry in manifest["shards"]:
        for item in iter_shard(storage.join(root, entry["name"]), storage_options):
            if isinstance(item, ShardFailure):
                break
            try:
                s = decode_sample(item)
            except DataError:
                continue
            tiles = [_fit(s["tex"], cell)] + [_fit(v, cell) for v in s["rgb"]] + [_fit(m, cell).convert("RGB") for m in s["mask"]]
            row = Image.new("RGB", (sum(t.width for t in tiles) + 2 * (len(tiles) - 1), cell), (40, 40, 40))
            x = 0
            for t in tiles:
                row.paste(t, (x, 0))
                x += t.width + 2
            rows.append(row)
            if len(rows) >= num_samples:
                break
        if len(rows) >= num_samples:
            break
    if not rows:
        raise DataError(f"{storage.join(root, split + '.json')}: no readable sample for a contact sheet")
    sheet = Image.new("RGB", (max(r.width for r in rows), sum(r.height for r in rows) + 2 * (len(rows) - 1)), (40, 40, 40))
    y = 0
    for r in rows:
        sheet.paste(r, (0, y))
        y += r.height + 2
    with storage.open_url(out_path, "wb") if not storage.is_local(out_path) else open(out_path, "wb") as f:
        sheet.save(f, format="PNG")
    return out_path
