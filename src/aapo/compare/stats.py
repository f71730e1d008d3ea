"""The statistics of a comparison over seeds (docs/ALGORITHMS.md §10), as pure functions on numbers.

Seeds are the unit of replication: a quantity is computed per run, then summarised over seeds as
a mean with a Student-t 95% confidence interval (`mean_ci`). Two variants run with the same seed
see the same prompts in the same order and the same held-out set, so they are compared by the
per-seed difference (`paired_difference`). The t quantile comes from scipy.

Beside these, the statistics reviewers ask for (as rliable reports them), each with a percentile
bootstrap interval over seeds (`bootstrap`): the paired difference again (`paired_bootstrap`),
the probability of improvement (`probability_of_improvement`) and the interquartile mean
(`iqm`). The bootstrap is exact, a sum over every resample with its probability, up to
`EXACT_MAX_N` seeds (comparisons rarely run more), so its intervals are hand-checkable; beyond
that it draws `RESAMPLES` resamples from a generator seeded with `RESAMPLE_SEED`, so a report is
the same every time it is written.

Left out: reading runs (runs.py) and presenting the numbers (report.py, plots.py); bias-
corrected (BCa) and studentised bootstraps, which need more seeds than comparisons run to help.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from itertools import combinations_with_replacement

import numpy as np
from scipy.stats import t as student_t
from scipy.stats import trim_mean

LEVEL = 0.95
EXACT_MAX_N = 8  # C(15, 8) = 6,435 distinct resamples of 8 seeds: exact enumeration is cheap
RESAMPLES = 10_000  # beyond EXACT_MAX_N; a 2.5% tail's share is then within ±0.16 points (1 s.e.)
RESAMPLE_SEED = 0
IQM_CUT = 0.25  # the share of the sorted values cut from each end for the interquartile mean
CHUNK = 1_000  # resamples evaluated at once, bounding the memory of all-pairs statistics

# A statistic for the bootstrap: resamples as rows of unit indices [R, n] → one value per row [R]
Statistic = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class Interval:
    """A point estimate over `n` values (a mean unless its maker says otherwise) and its
    confidence interval (NaN bounds when n < 2)."""

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


def all_resamples(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Every distinct resample of n units with replacement, as sorted index rows [R, n], and the
    number of the n^n ordered draws that give each [R] (n! / Π count!, summing to n^n).

    Listing multisets rather than ordered draws is what makes exact enumeration cheap: the
    statistics here do not depend on the order of the units."""
    rows = list(combinations_with_replacement(range(n), n))
    ways = [
        math.factorial(n) // math.prod(math.factorial(c) for c in Counter(row).values())
        for row in rows
    ]
    return np.array(rows, dtype=np.intp).reshape(len(rows), n), np.array(ways, dtype=float)


def bootstrap(
    n: int,
    statistic: Statistic,
    level: float = LEVEL,
    resamples: int = RESAMPLES,
    seed: int = RESAMPLE_SEED,
) -> Interval:
    """The statistic on all n units, with the percentile bootstrap interval of level `level`
    over resamples of the units (seeds) with replacement.

    The bounds are the (1 ∓ level)/2 quantiles of the resampled statistic's distribution, read
    as the smallest value whose cumulative probability reaches the quantile (numpy's
    "inverted_cdf"), so each bound is a value some resample gives. Up to `EXACT_MAX_N` units the
    distribution is exact (every resample weighted by its probability); beyond, it is the
    empirical distribution of `resamples` draws seeded with `seed`. With 2 or 3 units every
    resample has probability >= 1/27 > 2.5%, so the interval runs from the smallest to the
    largest value any resample gives: the bootstrap cannot see past the seeds it has."""
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, 0)
    point = float(statistic(np.arange(n)[None, :])[0])
    if n == 1:
        return Interval(point, math.nan, math.nan, 1)
    if n <= EXACT_MAX_N:
        rows, weights = all_resamples(n)
    else:
        rows, weights = np.random.default_rng(seed).integers(0, n, size=(resamples, n)), None
    values = np.concatenate([statistic(rows[i : i + CHUNK]) for i in range(0, len(rows), CHUNK)])
    low, high = np.quantile(
        values, [(1 - level) / 2, (1 + level) / 2], weights=weights, method="inverted_cdf"
    )
    return Interval(point, float(low), float(high), n)


def shared_seeds(
    values: Mapping[int, float], baseline: Mapping[int, float]
) -> tuple[np.ndarray, np.ndarray]:
    """values and baseline at the seeds both have, in seed order: the pairs [n], [n]."""
    seeds = sorted(set(values) & set(baseline))
    return np.array([values[s] for s in seeds]), np.array([baseline[s] for s in seeds])


def paired_bootstrap(
    values: Mapping[int, float], baseline: Mapping[int, float], level: float = LEVEL
) -> Interval:
    """Mean of values[seed] - baseline[seed] over the shared seeds, with a bootstrap interval
    that resamples seeds: the paired difference without assuming the differences normal."""
    x, y = shared_seeds(values, baseline)
    diff = x - y  # [n]
    return bootstrap(len(diff), lambda rows: diff[rows].mean(axis=1), level)


def probability_of_improvement(
    values: Mapping[int, float], baseline: Mapping[int, float], level: float = LEVEL
) -> Interval:
    """P(X > Y): the fraction of all (variant seed i, baseline seed j) pairs in which the
    variant's value is the higher, a tie counting 1/2 (the Mann-Whitney U over n²), with a
    bootstrap interval.

    All pairs, not only i = j, because the question is whether a run of the variant beats a run
    of the baseline; the fraction of seeds on which it does is the report's "seeds better".
    Only the shared seeds enter, and the bootstrap resamples seeds keeping each seed's two runs
    together, so the resamples keep what pairing by seed shares (prompts, held-out problems)."""
    x, y = shared_seeds(values, baseline)
    return bootstrap(len(x), lambda rows: win_fraction(x[rows], y[rows]), level)


def win_fraction(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Per row, the fraction of pairs (x[r, i], y[r, j]) with x above y, ties 1/2: [R, n] → [R]."""
    above = x[:, :, None] > y[:, None, :]  # [R, n, n]
    tied = x[:, :, None] == y[:, None, :]
    return (above + 0.5 * tied).mean(axis=(1, 2))


def iqm(values: Sequence[float], level: float = LEVEL) -> Interval:
    """The interquartile mean over runs with a bootstrap interval: the mean of the sorted values
    after cutting floor(n/4) from each end (scipy's `trim_mean` at 0.25, which rliable uses), so
    one seed that diverged or stalled moves it less than the mean. n − 2·floor(n/4) values
    remain: all of them below 4 runs (the IQM is then the mean), the middle 3 of 5."""
    x = np.asarray(values, dtype=float)  # [n]
    return bootstrap(len(x), lambda rows: trim_mean(x[rows], IQM_CUT, axis=1), level)
