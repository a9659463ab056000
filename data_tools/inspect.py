"""Validate a synthetic dataset (schema, counts vs manifest, corrupt samples) and draw a contact sheet.

    synshot data inspect data/tiny
    synshot data inspect s3://bucket/synshot --split val --json storage_options.endpoint_url=http://...
    synshot data inspect data/tiny --out results/tiny_sheet.png

Exit status 0 when everything is valid, 1 otherwise (so it can gate a pipeline).
"""

from __future__ import annotations

import json
import os

from synshot import fsio
from synshot.cli import Command
from synshot.config import ConfigBase
from synshot.data.validate import contact_sheet, inspect_dataset


class InspectConfig(ConfigBase):
    """What to check and how to reach the dataset."""

    split: list[str] | None = None  # split(s) to check (default: every split with a manifest)
    sheet_samples: int = 4  # samples in the contact sheet
    verify_hash: bool = False  # compare each shard's sha256 with its sidecar; one config fingerprint for all
    storage_options: dict = {}  # fsspec options, e.g. storage_options.endpoint_url=http://...


CLI = Command("data inspect", "Validate a synthetic dataset (schema, counts vs manifest, corrupt samples); "
              "exit 1 when it is invalid.", config_cls=InspectConfig,
              out_help="also draw a contact sheet PNG of the first split here",
              example="synshot data inspect data/tiny --out results/data_sheet.png verify_hash=true")
CLI.parser.add_argument("url", help="dataset root URL")
CLI.option("--split", key="split", action="append", help="split to check (repeatable)")
CLI.option("--verify-hash", key="verify_hash", action="store_true", help="check shard sha256 sidecars")
CLI.parser.add_argument("--json", action="store_true", help="print the full report as JSON")


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, cfg: InspectConfig) -> int:
    opts = cfg.storage_options
    report = inspect_dataset(args.url, cfg.split, opts, cfg.verify_hash)
    if args.out:
        split = next(iter(report["splits"]))
        if os.path.dirname(args.out):
            fsio.ensure_dir(os.path.dirname(args.out))  # unwritable/invalid: one error line, exit 2
        with fsio.user_errors(args.out, "cannot write the contact sheet"):
            report["sheet"] = contact_sheet(args.url, split, args.out, cfg.sheet_samples, opts)
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
