"""Subject splits: validation subjects choose every hyper-parameter, test subjects are only reported.

Held-out subjects are rendered by ``data_tools.subject --seed S`` and carry their seed in
``meta.json``. The two splits come from disjoint seed ranges, and both lie above every training
identity index (``DatasetPlan`` numbers training identities ``0 .. num_identities-1``; the paper
preset has 2,000), so no subject can share an identity seed with the training data. The seeds
1001-1003 are retired: earlier defaults were tuned on them.
"""

from __future__ import annotations

import json
from pathlib import Path

from synshot.cli import UsageError

VALIDATION_SEEDS: tuple[int, ...] = tuple(range(2001, 2011))
# identities the settings of the tracker for head-model renders (configs/track/predictor.yaml) were chosen
# on; the landmark calibration tools (seeds 101-500 by default) may not train on them
TRACKER_TUNING_SEEDS: tuple[int, ...] = tuple(range(501, 561))
TEST_SEEDS: tuple[int, ...] = tuple(range(3001, 3021))
RETIRED_SEEDS: tuple[int, ...] = (1001, 1002, 1003)
SPLITS: dict[str, tuple[int, ...]] = {"validation": VALIDATION_SEEDS, "test": TEST_SEEDS}


class SplitError(UsageError):
    """A subject used in the wrong split (or in two), or one that overlaps the training identities."""


def subject_seed(folder: str | Path) -> int:
    """The identity seed a subject folder was rendered with (``meta.json`` of data_tools.subject)."""
    meta = Path(folder) / "meta.json"
    try:
        return int(json.loads(meta.read_text())["seed"])
    except FileNotFoundError:
        raise SplitError(f"{meta}: missing; evaluation subjects must be rendered by "
                         f"`synshot data subject --seed S` so their split can be checked") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError):
        raise SplitError(f"{meta}: no integer 'seed'; re-render the subject with data_tools.subject") from None


def check_seeds(split: str, seeds: list[int], train_identities: int = 0, other: list[int] = ()) -> None:
    """Refuse seeds outside ``split``'s range, retired ones, ones also in ``other`` (the other split's
    subjects) and ones below ``train_identities`` (identity indices the training data uses)."""
    if split not in SPLITS:
        raise SplitError(f"split '{split}': expected one of {sorted(SPLITS)}")
    allowed = SPLITS[split]
    both = sorted(set(seeds) & set(other))
    if both:
        raise SplitError(f"subject seeds {both} are in both the validation and the test split; a subject used "
                         f"for tuning cannot be reported (validation {VALIDATION_SEEDS[0]}-{VALIDATION_SEEDS[-1]}, "
                         f"test {TEST_SEEDS[0]}-{TEST_SEEDS[-1]})")
    for s in seeds:
        if s in RETIRED_SEEDS:
            raise SplitError(f"subject seed {s} is retired (earlier defaults were tuned on it); use the {split} "
                             f"seeds {allowed[0]}-{allowed[-1]}")
        if s < train_identities:
            raise SplitError(f"subject seed {s} overlaps the training identities 0-{train_identities - 1}; held-out "
                             f"subjects must use seeds from {allowed[0]}-{allowed[-1]}")
        if s not in allowed:
            raise SplitError(f"subject seed {s} is not a {split} subject (seeds {allowed[0]}-{allowed[-1]}); "
                             f"render it with one of those seeds or evaluate it as the split it belongs to")


def check_subjects(split: str, folders: list[Path], train_identities: int = 0) -> list[int]:
    """Seeds of ``folders`` after :func:`check_seeds` (also refusing one seed twice)."""
    seeds = [subject_seed(f) for f in folders]
    dup = sorted({s for s in seeds if seeds.count(s) > 1})
    if dup:
        raise SplitError(f"subject seeds {dup} appear in more than one folder of {[str(f) for f in folders]}")
    other = [s for name, rng in SPLITS.items() if name != split for s in rng if s in seeds]
    if other:
        raise SplitError(f"subjects with seeds {other} belong to the other split, not to '{split}'; "
                         f"a subject used for tuning cannot be reported")
    check_seeds(split, seeds, train_identities)
    return seeds
