"""The comparison statistics against values worked by hand (arithmetic in the comments)."""

import math

import numpy as np
import pytest

from aapo.compare import stats


def test_t_quantiles_match_the_printed_table():
    # two-sided 95% critical values from any t table
    assert stats.t_quantile(0.975, 1) == pytest.approx(12.7062, abs=1e-4)
    assert stats.t_quantile(0.975, 2) == pytest.approx(4.3027, abs=1e-4)
    assert stats.t_quantile(0.975, 4) == pytest.approx(2.7764, abs=1e-4)
    assert stats.t_quantile(0.975, 30) == pytest.approx(2.0423, abs=1e-4)
    with pytest.raises(ValueError, match="df >= 1"):
        stats.t_quantile(0.975, 0)


def test_mean_ci_of_three_seeds():
    # mean 2; s² = (1 + 0 + 1) / 2 = 1; se = 1/√3 = 0.577350
    # half-width = t(0.975, 2) · se = 4.302653 · 0.577350 = 2.484138
    interval = stats.mean_ci([1.0, 2.0, 3.0])
    assert interval.mean == 2.0
    assert interval.low == pytest.approx(2 - 2.484138, abs=1e-6)
    assert interval.high == pytest.approx(2 + 2.484138, abs=1e-6)
    assert interval.n == 3
    assert interval.half_width == pytest.approx(2.484138, abs=1e-6)


def test_mean_ci_without_enough_seeds_has_no_interval():
    one = stats.mean_ci([0.5])
    assert (one.mean, one.n) == (0.5, 1)
    assert math.isnan(one.low) and math.isnan(one.high)
    assert not one.excludes_zero()
    assert stats.mean_ci([]).n == 0


def test_paired_difference_uses_only_shared_seeds():
    # seed 4 has no baseline run and is left out; differences 0.1, 0.1, -0.1
    # mean 0.033333; deviations 0.066667, 0.066667, -0.133333
    # s² = (0.0044444 + 0.0044444 + 0.0177778) / 2 = 0.0133333; s = 0.1154701
    # se = s/√3 = 0.0666667; half = 4.302653 · 0.0666667 = 0.2868435
    diff = stats.paired_difference({1: 0.6, 2: 0.7, 3: 0.8, 4: 0.9}, {1: 0.5, 2: 0.6, 3: 0.9})
    assert diff.n == 3
    assert diff.mean == pytest.approx(0.0333333, abs=1e-6)
    assert diff.low == pytest.approx(0.0333333 - 0.2868435, abs=1e-6)
    assert diff.high == pytest.approx(0.0333333 + 0.2868435, abs=1e-6)
    assert not diff.excludes_zero()


def test_paired_difference_ignores_the_spread_shared_by_seeds():
    # seeds differ a lot (0.2 .. 0.8) but the variant is 0.05 above its baseline on every
    # one, then 0.07: differences 0.05, 0.05, 0.07, mean 0.056667, s = 0.011547,
    # se = 0.0066667, half = 4.302653 · 0.0066667 = 0.028684 → [0.027982, 0.085351]
    diff = stats.paired_difference({1: 0.25, 2: 0.55, 3: 0.87}, {1: 0.2, 2: 0.5, 3: 0.8})
    assert diff.low == pytest.approx(0.056667 - 0.028684, abs=1e-5)
    assert diff.excludes_zero()
    # unpaired, the same numbers give an interval far wider than the effect
    assert stats.mean_ci([0.25, 0.55, 0.87]).half_width > 0.5


def test_steps_to_target_is_the_first_step_at_or_above_it():
    steps, values = [0, 10, 20, 30], [0.4, 0.55, 0.6, 0.7]
    assert stats.steps_to_target(steps, values, 0.6) == 20
    assert stats.steps_to_target(steps, values, 0.4) == 0
    assert stats.steps_to_target(steps, values, 0.8) is None


def test_trailing_mean():
    # window 2: 1, (1+2)/2, (2+3)/2, (3+4)/2; window 3: 1, 1.5, (1+2+3)/3, (2+3+4)/3
    assert stats.trailing_mean([1.0, 2.0, 3.0, 4.0], 2) == [1.0, 1.5, 2.5, 3.5]
    assert stats.trailing_mean([1.0, 2.0, 3.0, 4.0], 3) == [1.0, 1.5, 2.0, 3.0]
    assert stats.trailing_mean([1.0, 2.0], 1) == [1.0, 2.0]
    with pytest.raises(ValueError, match="window"):
        stats.trailing_mean([1.0], 0)


def test_loss_variance_is_the_sample_variance():
    # mean 0.005; each squared deviation 2.5e-5; sum 1e-4; / (4 - 1) = 3.3333e-5
    assert stats.sample_variance([0.0, 0.01, 0.0, 0.01]) == pytest.approx(3.33333e-5, rel=1e-5)
    assert math.isnan(stats.sample_variance([0.3]))


def test_tie_fraction_is_the_plain_mean():
    # (0.5 + 0.25 + 0.0 + 0.25) / 4 = 0.25
    assert stats.mean([0.5, 0.25, 0.0, 0.25]) == 0.25
    assert math.isnan(stats.mean([]))


def test_band_averages_at_the_steps_every_seed_has():
    # step 3 exists in one curve only and is dropped; at step 1 the values are 1 and 3:
    # mean 2, s² = 2, se = √2/√2 = 1, half = t(0.975, 1) = 12.7062
    steps, intervals = stats.band([([1, 2, 3], [1.0, 2.0, 3.0]), ([1, 2], [3.0, 4.0])])
    assert steps == [1, 2]
    assert [i.mean for i in intervals] == [2.0, 3.0]
    assert intervals[0].low == pytest.approx(2 - 12.7062, abs=1e-4)
    assert intervals[1].high == pytest.approx(3 + 12.7062, abs=1e-4)
    assert stats.band([]) == ([], [])


# The worked example of docs/ALGORITHMS.md §10.1-10.3: four seeds, three of them alike.
# Final accuracy of the variant and of the baseline per seed; seed 4 is the odd one out.
VARIANT = {1: 0.6, 2: 0.6, 3: 0.6, 4: 0.4}
BASELINE = {1: 0.5, 2: 0.5, 3: 0.5, 4: 0.6}
# A resample of the 4 seeds draws seed 4 b times, b ~ Binomial(4, 1/4):
# P(b) = C(4, b) 3^(4-b) / 256 = 81, 108, 54, 12, 1 (/256) for b = 0..4;
# P(b >= 3) = 13/256 = 0.0508 and P(b >= 2) = 67/256 = 0.262; P(b = 0) = 81/256 = 0.316.


def test_all_resamples_count_every_ordered_draw():
    # 3 seeds: C(5, 3) = 10 multisets covering the 3^3 = 27 ordered draws
    rows, ways = stats.all_resamples(3)
    assert rows.shape == (10, 3) and ways.sum() == 27
    count = {tuple(row): w for row, w in zip(rows.tolist(), ways.tolist(), strict=True)}
    assert count[(0, 0, 0)] == 1  # one way: 0, 0, 0
    assert count[(0, 0, 1)] == 3  # 3! / (2! 1!): the 1 drawn first, second or third
    assert count[(0, 1, 2)] == 6  # 3!


def test_paired_bootstrap_of_the_worked_example():
    # differences 0.1, 0.1, 0.1, -0.2: mean 0.025
    # resample mean (0.1 (4 - b) - 0.2 b) / 4 = 0.1 - 0.075 b:
    # b = 4: -0.2 (cumulative 1/256 = 0.004 < 0.025); b = 3: -0.125 (13/256 = 0.051) → low
    # from above: b = 0 gives 0.1 with P 0.316 > 0.025, so the 97.5% quantile is 0.1 → high
    diff = stats.paired_bootstrap(VARIANT, BASELINE)
    assert diff.n == 4
    assert diff.mean == pytest.approx(0.025, abs=1e-12)
    assert diff.low == pytest.approx(-0.125, abs=1e-12)
    assert diff.high == pytest.approx(0.1, abs=1e-12)
    # the Student-t interval of the same differences: deviations 0.075 (x3), -0.225,
    # s² = (3 · 0.005625 + 0.050625) / 3 = 0.0225, s = 0.15, se = 0.075,
    # half = t(0.975, 3) · se = 3.182446 · 0.075 = 0.238683 → [-0.214, +0.264], wider
    t = stats.paired_difference(VARIANT, BASELINE)
    assert t.low == pytest.approx(0.025 - 0.238683, abs=1e-6)
    assert t.high == pytest.approx(0.025 + 0.238683, abs=1e-6)


def test_bootstrap_with_two_or_three_seeds_spans_their_range():
    # every resample has probability >= 1/27 > 2.5%, so the interval is [smallest, largest]
    # resample mean = [min difference, max difference]
    two = stats.paired_bootstrap({1: 0.3, 2: 0.6}, {1: 0.2, 2: 0.3})  # differences 0.1, 0.3
    assert (two.mean, two.low, two.high) == pytest.approx((0.2, 0.1, 0.3), abs=1e-12)
    three = stats.paired_bootstrap({1: 0.5, 2: 0.5, 3: 0.5}, {1: 0.6, 2: 0.4, 3: 0.3})
    # differences -0.1, 0.1, 0.2: mean 0.066667
    assert three.mean == pytest.approx(0.2 / 3, abs=1e-12)
    assert (three.low, three.high) == pytest.approx((-0.1, 0.2), abs=1e-12)


def test_bootstrap_beyond_the_exact_limit_draws_seeded_resamples():
    # 10 seeds > EXACT_MAX_N: Monte Carlo. Nine differences 0 and one 1: the resample mean is
    # b/10, b ~ Binomial(10, 0.1): P(b <= 0, 1, 2, 3) = 0.349, 0.736, 0.930, 0.987, so the
    # exact interval is [0, 0.3]; 10,000 draws estimate 0.930 and 0.987 to ±0.003 (1 s.e.),
    # far from 0.975 either way, so the drawn interval is the same
    assert stats.EXACT_MAX_N < 10
    zeros = dict.fromkeys(range(10), 0.0)
    diff = stats.paired_bootstrap({**zeros, 9: 1.0}, zeros)
    assert (diff.n, diff.mean, diff.low, diff.high) == (10, 0.1, 0.0, pytest.approx(0.3))
    # and a skewed statistic gives the same interval on every call (a fixed generator seed)
    values = [0.1 * i**2 for i in range(12)]
    assert stats.iqm(values) == stats.iqm(values)


def test_probability_of_improvement_of_the_worked_example():
    # pairs (variant seed i, baseline seed j), 16 in all; seeds 1-3 ("A") alike, seed 4 ("B"):
    # variant A 0.6 vs baseline A 0.5: 9 pairs won; variant A 0.6 vs baseline B 0.6: 3 ties (1.5)
    # variant B 0.4 vs baseline A 0.5 or B 0.6: 4 pairs lost → (9 + 1.5) / 16 = 0.65625
    # (the variant is better on 3 of the 4 seeds paired: 0.75)
    poi = stats.probability_of_improvement(VARIANT, BASELINE)
    assert poi.n == 4 and poi.mean == 0.65625
    # a resample with b draws of seed 4: [(4 - b)² wins + (4 - b) b ties / 2] / 16
    # b = 4: 0 (cumulative 1/256); b = 3: (1 + 1.5) / 16 = 0.15625 (13/256 = 0.051) → low
    # b = 0: 1 with P 0.316 → high 1
    assert (poi.low, poi.high) == (0.15625, 1.0)


def test_probability_of_improvement_pairs_only_shared_seeds_and_halves_ties():
    # seed 3 has no baseline run; seeds 1, 2: variant 0.5, 0.7 vs baseline 0.5, 0.6
    # pairs: 0.5-0.5 tie (0.5), 0.5-0.6 lost, 0.7-0.5 won, 0.7-0.6 won → 2.5 / 4 = 0.625
    poi = stats.probability_of_improvement({1: 0.5, 2: 0.7, 3: 0.9}, {1: 0.5, 2: 0.6})
    assert (poi.n, poi.mean) == (2, 0.625)
    # two seeds: [smallest, largest] over resamples; seed 1 twice: tie → 0.5; seed 2 twice: 1
    assert (poi.low, poi.high) == (0.5, 1.0)
    assert stats.probability_of_improvement({1: 0.5}, {2: 0.5}).n == 0


def test_iqm_of_the_worked_example():
    # variant 0.6, 0.6, 0.6, 0.4 sorted 0.4 | 0.6, 0.6 | 0.6: cut 1 each end → IQM 0.6
    # (the mean is 0.55). A resample with b draws of the 0.4 keeps sorted places 2 and 3:
    # b <= 1: 0.6, 0.6; b = 2: 0.4, 0.6 → 0.5; b >= 3: 0.4, 0.4 → 0.4 with P 13/256 = 0.051
    # → low 0.4 (its cumulative share already passes 0.025), high 0.6
    variant = stats.iqm(list(VARIANT.values()))
    assert (variant.mean, variant.low, variant.high, variant.n) == (0.6, 0.4, 0.6, 4)
    # baseline 0.5, 0.5, 0.5, 0.6 → IQM 0.5; b draws of the 0.6: b <= 1 → 0.5 (P 189/256),
    # b = 2 → 0.55 (cumulative 243/256 = 0.949 < 0.975), b >= 3 → 0.6 → [0.5, 0.6]
    baseline = stats.iqm(list(BASELINE.values()))
    assert (baseline.mean, baseline.low) == (0.5, 0.5)
    assert baseline.high == pytest.approx(0.6, abs=1e-12)


def test_iqm_cuts_a_quarter_of_the_runs_from_each_end_rounded_down():
    # 5 runs: floor(5/4) = 1 cut each end → (0.5 + 0.6 + 0.7) / 3 = 0.6 (the mean is 0.56)
    assert stats.iqm([0.9, 0.1, 0.6, 0.5, 0.7]).mean == pytest.approx(0.6, abs=1e-12)
    # 8 runs: 2 each end → (3 + 4 + 5 + 6) / 4 = 4.5; 3 runs: nothing cut → the mean, 2
    assert stats.iqm([8.0, 1.0, 7.0, 2.0, 6.0, 3.0, 5.0, 4.0]).mean == 4.5
    assert stats.iqm([1.0, 2.0, 3.0]).mean == 2.0
    one = stats.iqm([0.7])
    assert (one.mean, one.n) == (0.7, 1) and math.isnan(one.low) and math.isnan(one.high)
    assert stats.iqm([]).n == 0


def test_win_fraction_counts_ties_as_half():
    # row 1: 0.5 vs 0.5 tie; row 2: pairs (1, 0) won, (1, 2) lost, (3, 0), (3, 2) won → 3/4
    x = np.array([[0.5, 0.5], [1.0, 3.0]])
    y = np.array([[0.5, 0.5], [0.0, 2.0]])
    assert stats.win_fraction(x, y).tolist() == [0.5, 0.75]
