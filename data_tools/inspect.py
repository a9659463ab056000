"""Validate a synthetic dataset (schema, counts vs manifest, corrupt samples) and draw a contact sheet.

    python -m data_tools.inspect data/tiny
    python -m data_tools.inspect s3://bucket/synshot --split val --json --storage-options '{"endpoint_url": "http://..."}'
    python -m data_tools.inspect data/tiny --sheet results/tiny_sheet.png

Exit status 0 when everything is valid, 1 otherwise (so it can gate a pipeline).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from synshot.data.validate import contact_sheet, inspect_dataset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("url", help="dataset root URL")
    parser.add_argument("--split", action="append", help="split(s) to check (default: every split with a manifest)")
    parser.add_argument("--json", action="store_true", help="print the full report as JSON")
    parser.add_argument("--sheet", help="write a contact sheet PNG of the first split here")
    parser.add_argument("--sheet-samples", type=int, default=4)
    parser.add_argument("--verify-hash", action="store_true",
                        help="also compare each shard's sha256 with its sidecar and check all sidecars share one config fingerprint")
    parser.add_argument("--storage-options", default="{}", help="fsspec options as JSON")
    args = parser.parse_args(argv)
    try:
        opts = json.loads(args.storage_options)
    except json.JSONDecodeError as exc:
        print(f"error: --storage-options is not JSON: {exc}", file=sys.stderr)
        return 2
    report = inspect_dataset(args.url, args.split, opts, args.verify_hash)
    if args.sheet:
        split = next(iter(report["splits"]))
        if os.path.dirname(args.sheet):
            os.makedirs(os.path.dirname(args.sheet), exist_ok=True)
        report["sheet"] = contact_sheet(args.url, split, args.sheet, args.sheet_samples, opts)
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        for split, r in report["splits"].items():
            status = "OK" if r["ok"] else "INVALID"
            print(f"{split}: {status}  {r['num_samples']} samples (manifest {r.get('manifest_num_samples', '?')}) in "
                  f"{len(r['shards'])} shards, {r['num_identities']} identities, images {r.get('image_sizes')}, "
                  f"uv {r.get('uv_sizes')}, corrupt {r['corrupt_samples']}")
            for err in r["errors"]:
                print(f"  error: {err}")
        for err in report["errors"]:
            print(f"error: {err}")
        if "sheet" in report:
            print(f"contact sheet: {report['sheet']}")
        print("dataset OK" if report["ok"] else "dataset INVALID")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
