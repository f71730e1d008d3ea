"""When to stop adding seeds: a comparison grown in batches of seeds until the paired
difference of two variants is known to a chosen precision.

After each batch, the per-seed differences dₛ = Xₛ − Yₛ (final held-out accuracy of the variant
minus the baseline, same seed) give the Student-t 95% interval of their mean (stats.mean_ci).
The rule looks only at the interval's **width**, never at where it lies, so stopping does not
pick a moment when the difference happens to look large or small:

- stop, precise: at least `min_seeds` seeds and half-width ≤ `half_width`;
- stop, budget: `max_seeds` seeds reached, the interval still wider (said so);
- else continue with `batch` more seeds (capped at `max_seeds`).

`min_seeds` guards against a sample standard deviation that is small by luck at 2-3 seeds,
which would stop the study with an interval narrower than the truth (the width is itself
estimated; the rule is a fixed-width sequential interval in the manner of Stein, Chow and
Robbins, and like them covers slightly less than 95% when it stops early). `seeds_needed`
projects, from the current spread, the seed count at which the width would be reached; it
is a forecast printed beside the decision, not part of the rule.

Left out: running the seeds (benchmarks/aapo_vs_grpo_study.py drives `aapo compare`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from aapo.compare.stats import LEVEL, Interval, mean_ci, sample_variance, t_quantile

MOST_SEEDS = 10_000  # seeds_needed's search bound: beyond it the width is out of reach


@dataclass(frozen=True)
class Decision:
    """What to do after a batch, and why."""

    stop: bool
    reason: str
    interval: Interval  # the paired difference's mean and Student-t interval
    seeds: int  # seeds the decision is based on
    next_seeds: int  # seeds to have after the next batch; `seeds` when stopping
    projected: int | None  # seeds_needed from the current spread; None with < 2 seeds


def seeds_needed(sd: float, half_width: float, level: float = LEVEL) -> int | None:
    """The least n ≥ 2 with t_{(1+level)/2, n-1} · sd / √n ≤ half_width; None when no n up to
    `MOST_SEEDS` reaches it (or sd is not finite)."""
    if not math.isfinite(sd) or half_width <= 0:
        return None
    if sd == 0:
        return 2
    for n in range(2, MOST_SEEDS + 1):
        if t_quantile((1 + level) / 2, n - 1) * sd / math.sqrt(n) <= half_width:
            return n
    return None


def decide(
    differences: Sequence[float],
    half_width: float,
    batch: int,
    min_seeds: int,
    max_seeds: int,
) -> Decision:
    """The stopping rule of the module docstring for the per-seed `differences` so far."""
    if not (half_width > 0 and batch >= 1 and 2 <= min_seeds <= max_seeds):
        raise ValueError(
            f"need half_width > 0, batch >= 1 and 2 <= min_seeds <= max_seeds; got half_width "
            f"{half_width}, batch {batch}, min_seeds {min_seeds}, max_seeds {max_seeds}"
        )
    n = len(differences)
    interval = mean_ci(list(differences))
    projected = seeds_needed(math.sqrt(sample_variance(differences)), half_width) if n > 1 else None
    width = f"±{interval.half_width:.4f}" if n > 1 else "undefined"
    if n >= min_seeds and interval.half_width <= half_width:
        reason = f"half-width {width} <= ±{half_width:.4f} at {n} seeds"
        return Decision(True, f"stop: {reason}", interval, n, n, projected)
    if n >= max_seeds:
        reason = f"the maximum of {max_seeds} seeds, half-width {width} > ±{half_width:.4f}"
        return Decision(True, f"stop: {reason}", interval, n, n, projected)
    target = min(max(n + batch, min_seeds), max_seeds)
    why = (
        f"{n} seeds, fewer than the {min_seeds} required before stopping"
        if n < min_seeds
        else f"half-width {width} > ±{half_width:.4f}"
    )
    forecast = f"; the current spread projects {projected} seeds" if projected else ""
    return Decision(
        False, f"continue to {target} seeds: {why}{forecast}", interval, n, target, projected
    )
