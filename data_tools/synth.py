"""Render a synthetic head dataset into webdataset shards on any fsspec URL.

    synshot data synth --config configs/data/tiny.yaml --out data/tiny
    synshot data synth --config configs/data/paper.yaml --out s3://bucket/synshot \
        --shard-index $SLURM_ARRAY_TASK_ID --num-shards $SLURM_ARRAY_TASK_COUNT storage_options.endpoint_url=http://...
    synshot data synth --config configs/data/paper.yaml --out s3://bucket/synshot --finalize

Re-running skips complete shards; ``--finalize`` only rebuilds the manifests (after all array tasks).
"""

from __future__ import annotations

import json

from synshot import fsio
from synshot.cli import Command, UsageError, get_logger
from synshot.data.synthesize import DatasetPlan, SynthConfig, finalize, synthesize

log = get_logger("data.synth")

CLI = Command("data synth", "Render a synthetic head dataset into webdataset shards on any fsspec URL.",
              config_cls=SynthConfig, default_config="configs/data/tiny.yaml",
              out_help="dataset root URL: path, file://, s3://, gs://, memory:// (not needed with --plan)",
              example="synshot data synth --config configs/data/tiny.yaml --out data/tiny num_identities=8")
CLI.parser.add_argument("--shard-index", type=int, default=0, help="this array task (0-based)")
CLI.parser.add_argument("--num-shards", type=int, default=1, help="number of array tasks sharing the work")
CLI.parser.add_argument("--finalize", action="store_true", help="only rebuild the split manifests from complete shards")
CLI.parser.add_argument("--plan", action="store_true", help="print the dataset plan (splits, shards, images) and exit")
CLI.parser.add_argument("--no-progress", action="store_true")


def main(argv: list[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, cfg: SynthConfig) -> int:
    plan = DatasetPlan(cfg)
    if args.plan:
        summary = {
            split: {"identities": len(plan.identities[split]), "shards": len(plan.shards_of(split)),
                    "samples": plan.num_samples(split), "images": plan.num_samples(split) * cfg.views}
            for split in plan.identities
        }
        summary["total_images"] = plan.num_samples() * cfg.views
        summary["total_shards"] = len(plan.shards)
        print(json.dumps(summary, indent=1))
        return 0
    if not args.out:
        raise UsageError("--out URL is required (where the shards go)")
    if not (args.num_shards >= 1 and 0 <= args.shard_index < args.num_shards):
        raise UsageError(f"--shard-index {args.shard_index} must be in [0, --num-shards {args.num_shards})")
    if args.finalize:
        with fsio.user_errors(args.out, "cannot write the manifests"):
            manifests = finalize(cfg, args.out)
        for split, m in manifests.items():
            state = "complete" if m["complete"] else f"INCOMPLETE ({len(m['shards'])}/{m['planned_shards']} shards)"
            log.info("%s: %d samples in %d shards, %s", split, m["num_samples"], len(m["shards"]), state)
        return 0 if all(m["complete"] for m in manifests.values()) else 1
    with fsio.user_errors(args.out, "cannot write the dataset"):
        result = synthesize(cfg, args.out, args.shard_index, args.num_shards, progress=not args.no_progress)
    log.info("task %d/%d: rendered %d shards, skipped %d complete, %.1f s -> %s", args.shard_index,
             args.num_shards, len(result["rendered"]), len(result["skipped"]), result["seconds"], args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
