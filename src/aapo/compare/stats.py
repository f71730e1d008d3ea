"""The statistics of a comparison over seeds (docs/ALGORITHMS.md §10), as pure functions on numbers.

Seeds are the unit of replication: a quantity is computed per run, then summarised over seeds as
a mean with a Student-t 95% confidence interval (`mean_ci`). Two variants run with the same seed
see the same prompts in the same order and the same held-out set, so they are compared by the
per-seed difference (`paired_difference`). The t quantile comes from scipy.

Left out: reading runs (runs.py) and presenting the numbers (report.py, plots.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy.stats import t as student_t

LEVEL = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean over `n` values and its confidence interval (NaN bounds when n < 2)."""

    mean: float
    low: float
    high: float
    n: int

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def excludes_zero(self) -> bool:
        """Whether the interval lies wholly on one side of 0 (False when it is undefined)."""
        return self.low > 0 or self.high < 0


def t_quantile(p: float, df: int) -> float:
    """The p-quantile of Student's t with `df` degrees of freedom."""
    if df < 1:
        raise ValueError(f"t quantile needs df >= 1, got {df}")
    return float(student_t.ppf(p, df))


def sample_variance(values: Sequence[float]) -> float:
    """Σ (x - mean)² / (n - 1); NaN for fewer than two values."""
    n = len(values)
    if n < 2:
        return math.nan
    mean = sum(values) / n
    return sum((x - mean) ** 2 for x in values) / (n - 1)


def mean_ci(values: Sequence[float], level: float = LEVEL) -> Interval:
    """Mean ± t_{(1+level)/2, n-1} · s / √n over `values` (one per seed)."""
    n = len(values)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    mean = sum(values) / n
    if n == 1:
        return Interval(mean, math.nan, math.nan, 1)
    half = t_quantile((1 + level) / 2, n - 1) * math.sqrt(sample_variance(values) / n)
    return Interval(mean, mean - half, mean + half, n)


def paired_difference(
    values: Mapping[int, float], baseline: Mapping[int, float], level: float = LEVEL
) -> Interval:
    """Mean and CI of values[seed] - baseline[seed] over the seeds both have."""
    seeds = sorted(set(values) & set(baseline))
    return mean_ci([values[s] - baseline[s] for s in seeds], level)


def steps_to_target(steps: Sequence[int], values: Sequence[float], target: float) -> int | None:
    """The first step whose value reaches `target`; None when the run never does."""
    for step, value in zip(steps, values, strict=True):
        if value >= target:
            return step
    return None


def trailing_mean(values: Sequence[float], window: int) -> list[float]:
    """Mean of each value and the up to `window - 1` before it (a causal moving average)."""
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def mean(values: Sequence[float]) -> float:
    """Plain mean; NaN when empty (e.g. the tie fraction of a run with no logged step)."""
    return sum(values) / len(values) if values else math.nan


def band(
    curves: Sequence[tuple[Sequence[int], Sequence[float]]], level: float = LEVEL
) -> tuple[list[int], list[Interval]]:
    """Mean and CI over curves (one per seed) at the steps every curve has, so the mean is
    always over the same seeds (a shorter, interrupted run cuts the band where it stops)."""
    if not curves:
        return [], []
    tables = [dict(zip(steps, values, strict=True)) for steps, values in curves]
    common = sorted(set.intersection(*(set(table) for table in tables)))
    return common, [mean_ci([table[s] for table in tables], level) for s in common]
