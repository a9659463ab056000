"""Means with 95 % bootstrap intervals over subjects x frames, and paired differences between methods.

Two-level (hierarchical) bootstrap: each replicate draws subjects with replacement, then frames
with replacement within each drawn subject, and takes the mean of the drawn values. This respects
that frames of one subject are correlated (a plain frame bootstrap would be too narrow when
there are few subjects). A paired difference resamples the per-frame differences full - baseline
on the very same frames, so subject difficulty cancels. Percentile intervals, fixed seed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DEFAULT_REPLICATES = 2000


@dataclass(frozen=True)
class Interval:
    mean: float
    low: float
    high: float
    n_subjects: int
    n_frames: int

    def excludes_zero(self) -> bool:
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict:
        return {"mean": self.mean, "low": self.low, "high": self.high, "n_subjects": self.n_subjects,
                "n_frames": self.n_frames}


def bootstrap(values: dict[str, list[float]], replicates: int = DEFAULT_REPLICATES, seed: int = 0,
              level: float = 0.95) -> Interval:
    """Mean of all (subject, frame) values and its two-level bootstrap interval.

    ``values``: subject -> per-frame values (frames may differ in number between subjects).
    """
    groups = [np.asarray(v, dtype=np.float64) for v in values.values() if len(v)]
    if not groups:
        raise ValueError("bootstrap: no values")
    flat = np.concatenate(groups)
    if not np.isfinite(flat).all():
        raise ValueError("bootstrap: non-finite values")
    rng = np.random.default_rng(seed)
    n = len(groups)
    stats = np.empty(replicates)
    for b in range(replicates):
        picked = rng.integers(n, size=n)
        draws = [groups[i][rng.integers(len(groups[i]), size=len(groups[i]))] for i in picked]
        stats[b] = np.concatenate(draws).mean()
    alpha = (1 - level) / 2
    low, high = np.quantile(stats, [alpha, 1 - alpha])
    return Interval(float(flat.mean()), float(low), float(high), n, int(flat.size))


def paired_difference(a: dict[str, list[float]], b: dict[str, list[float]], **kwargs) -> Interval:
    """Interval of mean(a - b) over the subjects and frames both have (frame i of a with frame i of b)."""
    common = [s for s in a if s in b]
    if not common:
        raise ValueError("paired_difference: the two methods share no subject")
    diffs = {}
    for s in common:
        if len(a[s]) != len(b[s]):
            raise ValueError(f"paired_difference: subject {s} has {len(a[s])} vs {len(b[s])} frames")
        diffs[s] = [x - y for x, y in zip(a[s], b[s])]
    return bootstrap(diffs, **kwargs)


def verdict_word(diff: Interval, higher_is_better: bool) -> str:
    """'beats' only when the paired interval excludes 0 in the good direction; 'loses to' when it
    excludes 0 in the bad one; otherwise 'ties with'."""
    if not diff.excludes_zero():
        return "ties with"
    better = diff.low > 0 if higher_is_better else diff.high < 0
    return "beats" if better else "loses to"
