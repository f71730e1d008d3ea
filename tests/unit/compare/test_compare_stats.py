"""The comparison statistics against values worked by hand (arithmetic in the comments)."""

import math

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
