"""``synshot prior check EXPORT``: does an export hold the shipped prior's weights? (the end of ``make prior``)

It compares weight digests (:func:`synshot.priors.weights_digest`), not file hashes: exit 0 when the
weights are identical, 1 when they differ.
"""

from __future__ import annotations

from typing import Sequence

from synshot.cli import Command, UsageError, get_logger
from synshot.config import ConfigBase
from synshot.priors import SHIPPED_PRIOR, weights_digest

log = get_logger(__name__)


class PriorCheckConfig(ConfigBase):
    """Which export to compare with the shipped prior."""

    export: str | None = None  # an exported prior (.safetensors), e.g. runs/small/prior.safetensors


CLI = Command("prior check", "Compare an exported prior's weights with the shipped prior's (reproduction check).",
              config_cls=PriorCheckConfig,
              example="synshot prior check runs/small/prior.safetensors   # after make prior")
CLI.option("export", key="export", nargs="?", help="exported prior (.safetensors)")


def main(argv: Sequence[str] | None = None) -> int:
    return CLI.main(argv, run)


def run(args, cfg: PriorCheckConfig) -> int:
    if not cfg.export:
        raise UsageError("name the export to check: synshot prior check runs/small/prior.safetensors")
    mine, shipped = weights_digest(cfg.export), weights_digest(SHIPPED_PRIOR)
    log.info("%s: weights sha256 %s", cfg.export, mine)
    log.info("%s: weights sha256 %s", SHIPPED_PRIOR, shipped)
    if mine == shipped:
        log.info("identical weights: the shipped prior is reproduced")
        return 0
    log.warning("the weights differ from the shipped prior's")
    return 1


if __name__ == "__main__":
    raise SystemExit(main())
