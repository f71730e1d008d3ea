"""The study's stopping rule, worked by hand (compare/stopping.py)."""

import math

import pytest

from aapo.compare.stopping import decide, seeds_needed

T3 = 3.1824463  # t(0.975, 3 degrees of freedom)


def test_stops_when_the_interval_is_narrow_enough():
    # d = 0.03, 0.01, 0.02, 0.04: mean 0.025, deviations ±0.005, ±0.015:
    # s² = 2 (0.000025 + 0.000225) / 3 = 1.6667e-4, s = 0.0129099, se = s / 2 = 0.0064550,
    # half-width = 3.1824463 · 0.0064550 = 0.0205426 <= 0.025
    decision = decide([0.03, 0.01, 0.02, 0.04], half_width=0.025, batch=2, min_seeds=4,
                      max_seeds=20)  # fmt: skip
    assert decision.stop and decision.seeds == decision.next_seeds == 4
    assert decision.interval.mean == pytest.approx(0.025)
    assert decision.interval.half_width == pytest.approx(T3 * math.sqrt(0.0005 / 3) / 2)
    assert decision.reason == "stop: half-width ±0.0205 <= ±0.0250 at 4 seeds"
    # the same spread with a larger target width and more seeds required: not yet
    early = decide([0.03, 0.01, 0.02, 0.04], half_width=0.025, batch=2, min_seeds=6,
                   max_seeds=20)  # fmt: skip
    assert not early.stop and early.next_seeds == 6
    assert early.reason.startswith("continue to 6 seeds: 4 seeds, fewer than the 6 required")


def test_continues_in_batches_with_a_forecast_then_stops_at_the_budget():
    # d = 0.10, -0.02, 0.05, 0.03: mean 0.04, deviations 0.06, -0.06, 0.01, -0.01:
    # s² = 0.0074 / 3, s = 0.0496655, half-width = 3.1824463 · s / 2 = 0.0790290 > 0.025
    d = [0.10, -0.02, 0.05, 0.03]
    decision = decide(d, half_width=0.025, batch=2, min_seeds=4, max_seeds=20)
    assert not decision.stop and decision.next_seeds == 6
    assert decision.interval.half_width == pytest.approx(T3 * math.sqrt(0.0074 / 3) / 2)
    # forecast: t(16) · s / √17 = 2.1199 · 0.0496655 / 4.1231 = 0.02554 > 0.025;
    # t(17) · s / √18 = 2.1098 · 0.0496655 / 4.2426 = 0.02470 <= 0.025 → 18 seeds
    assert decision.projected == 18
    assert decision.reason == (
        "continue to 6 seeds: half-width ±0.0790 > ±0.0250; the current spread projects 18 seeds"
    )
    assert decide(d, half_width=0.025, batch=4, min_seeds=4, max_seeds=6).next_seeds == 6
    budget = decide(d, half_width=0.025, batch=2, min_seeds=4, max_seeds=4)
    assert budget.stop and budget.reason == (
        "stop: the maximum of 4 seeds, half-width ±0.0790 > ±0.0250"
    )


def test_a_lucky_small_spread_does_not_stop_before_min_seeds():
    # two equal differences: s = 0, half-width 0, yet 2 seeds say little about the spread
    decision = decide([0.02, 0.02], half_width=0.025, batch=2, min_seeds=4, max_seeds=20)
    assert not decision.stop and decision.next_seeds == 4 and decision.projected == 2
    single = decide([0.02], half_width=0.025, batch=2, min_seeds=4, max_seeds=20)
    assert not single.stop and single.projected is None and "half-width" not in single.reason
    with pytest.raises(ValueError, match="min_seeds <= max_seeds"):
        decide([0.02], half_width=0.025, batch=2, min_seeds=5, max_seeds=4)


def test_seeds_needed():
    assert seeds_needed(0.0, 0.025) == 2
    assert seeds_needed(0.0496655, 0.025) == 18
    # s = 0.03: t(7) · 0.03 / √8 = 2.3646 · 0.010607 = 0.02508 > 0.025; t(8) · 0.01 = 0.02306
    assert seeds_needed(0.03, 0.025) == 9
    assert seeds_needed(math.nan, 0.025) is None
