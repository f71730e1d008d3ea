"""Advantage estimators as worked examples: the arithmetic is in the comments.

eps = 1e-4 is added to every std, so "x / std" below reads x / (std + 1e-4).
"""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.testing import assert_close

from aapo.algorithms import (
    aapo,
    as_groups,
    combine_rewards,
    compute_advantages,
    dr_grpo,
    gpg,
    group_stats,
    grpo,
)

EPS = 1e-4
nan = float("nan")


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32)


# --- combine_rewards, as_groups, group_stats ---------------------------------------------------


def test_combine_rewards_weighted_nan_sum():
    per_function = t([1.0, nan, 0.0, nan], [0.5, 2.0, nan, nan])  # [K=2, N=4]
    rewards, valid = combine_rewards(per_function, [1.0, 2.0])
    # completion 0: 1·1 + 2·0.5 = 2; 1: 2·2 = 4; 2: 1·0 = 0; 3: every function None → 0, invalid
    assert_close(rewards, torch.tensor([2.0, 4.0, 0.0, 0.0]))
    assert valid.tolist() == [True, True, True, False]


def test_combine_rewards_zero_weight_keeps_the_completion_valid():
    rewards, valid = combine_rewards(t([1.0, nan]), [0.0])
    assert_close(rewards, torch.tensor([0.0, 0.0]))
    assert valid.tolist() == [True, False]


def test_combine_rewards_rejects_inf_naming_function_and_completion():
    with pytest.raises(ValueError, match=r"reward function 1 .*completion 2"):
        combine_rewards(t([0.0, 0.0, 0.0], [0.0, 1.0, float("inf")]), [1.0, 1.0])


def test_combine_rewards_overflowing_sum_names_the_functions():
    # 3e38 + 3e38 = 6e38 exceeds float32's max (3.4e38): an error, not an inf reward
    per_function = t([0.0, 3e38], [1.0, 3e38])  # [K=2, N=2]
    with pytest.raises(ValueError, match=r"completion 1 overflows.*'format': 3e\+38.*'cosine'"):
        combine_rewards(per_function, [1.0, 1.0], names=["format", "cosine"])
    # float64 summation: large rewards that fit are exact enough, and returned as float32
    rewards, _ = combine_rewards(t([1e30, 2e30]), [2.0])
    assert rewards.dtype == torch.float32
    assert_close(rewards, torch.tensor([2e30, 4e30]))


def test_combine_rewards_names_an_infinite_score_by_name():
    with pytest.raises(ValueError, match=r"reward function 'accuracy' returned inf"):
        combine_rewards(t([0.0], [float("inf")]), [1.0, 1.0], names=["format", "accuracy"])


@pytest.mark.parametrize(
    ("per_function", "weights", "match"),
    [
        (torch.zeros(3), [1.0], r"\[K, N\]"),
        (torch.zeros(2, 3), [1.0], "2 reward functions"),
        (torch.zeros(1, 3), [float("nan")], "finite"),
    ],
)
def test_combine_rewards_bad_input(per_function, weights, match):
    with pytest.raises(ValueError, match=match):
        combine_rewards(per_function, weights)


def test_as_groups_is_prompt_major():
    assert as_groups(torch.arange(6), 3).tolist() == [[0, 1, 2], [3, 4, 5]]


@pytest.mark.parametrize(
    ("flat", "size", "match"),
    [
        (torch.arange(7), 3, "does not divide"),
        (torch.arange(6), 0, "at least 1"),
        (torch.zeros(2, 3), 3, "flat"),
    ],
)
def test_as_groups_bad_input(flat, size, match):
    with pytest.raises(ValueError, match=match):
        as_groups(flat, size)


def test_group_stats_unbiased_and_ties():
    stats = group_stats(t([1.0, 2.0, 3.0], [4.0, 4.0, 4.0]))
    # [1, 2, 3]: mean 2, squared deviations 1 + 0 + 1 = 2, / (3 - 1) → std 1
    assert_close(stats.mean, t([2.0], [4.0]))
    assert_close(stats.std, t([1.0], [0.0]))
    assert stats.tied.tolist() == [False, True]


def test_group_stats_ignore_invalid():
    valid = torch.tensor([[True, True, True, False], [False, False, False, False]])
    stats = group_stats(t([1.0, 2.0, 3.0, 100.0], [5.0, 6.0, 7.0, 8.0]), valid)
    # row 0 as [1, 2, 3]; row 1 has nothing valid: mean 0, std 0, counted as tied
    assert_close(stats.mean, t([2.0], [0.0]))
    assert_close(stats.std, t([1.0], [0.0]))
    assert stats.tied.tolist() == [False, True]


def test_group_stats_are_float64_inside_so_huge_rewards_do_not_overflow():
    # [1e30, -1e30]: mean 0, squared deviations 2e60 (beyond float32's 3.4e38), / 1 → std 1.414e30
    stats = group_stats(t([1e30, -1e30]))
    assert stats.mean.dtype == torch.float32
    assert_close(stats.std, t([math.sqrt(2.0) * 1e30]))


@pytest.mark.parametrize("estimator", ["grpo", "aapo", "gpg"])
def test_huge_rewards_give_finite_correct_advantages(estimator):
    # (±1e30 - 0) / (1.414e30 + 1e-4) = ±0.7071 (float32 statistics gave std inf → all zero)
    rewards = t([1e30, -1e30], [1.0, 0.0])
    options = {"gpg_norm": "std"} if estimator == "gpg" else {}
    result = compute_advantages(estimator, rewards, ref_rewards=rewards.clone(), **options)
    half = 0.5 / (math.sqrt(0.5) + EPS)  # second group: [1, 0], std √0.5
    assert result.advantages.dtype == torch.float32
    assert_close(result.advantages, t([1 / math.sqrt(2.0), -1 / math.sqrt(2.0)], [half, -half]))


# --- GRPO ----------------------------------------------------------------------------------------


def test_grpo_single_outlier():
    # mean 0.25; deviations .75, -.25 ×3; squares .5625 + 3·.0625 = .75; /3 = .25 → std .5
    advantages = grpo(t([1.0, 0.0, 0.0, 0.0])).advantages
    assert_close(advantages, t([0.75 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001, -0.25 / 0.5001]))


def test_grpo_ties_give_exact_zero():
    # 0.1 has no exact float: a computed mean could be an ulp off, and ulp / (0 + eps) ≠ 0
    advantages = grpo(t([1.0, 1.0, 1.0], [0.1, 0.1, 0.1])).advantages
    assert torch.equal(advantages, torch.zeros(2, 3))


def test_grpo_mixed_signs():
    # mean 0; squares 4 + 1 + 0 + 1 = 6; / 3 = 2 → std √2
    advantages = grpo(t([2.0, -1.0, 0.0, -1.0])).advantages
    std = math.sqrt(2) + EPS
    assert_close(advantages, t([2 / std, -1 / std, 0.0, -1 / std]))


def test_grpo_scale_rewards_batch_and_none():
    rewards = t([1.0, 0.0], [3.0, 3.0])
    # group means .5 and 3 → centred [[.5, -.5], [0, 0]]
    # batch [1, 0, 3, 3]: mean 1.75, squares .5625 + 3.0625 + 1.5625 + 1.5625 = 6.75, /3 → std 1.5
    assert_close(
        grpo(rewards, scale_rewards="batch").advantages, t([0.5 / 1.5001, -0.5 / 1.5001], [0, 0])
    )
    assert_close(grpo(rewards, scale_rewards="none").advantages, t([0.5, -0.5], [0.0, 0.0]))


def test_grpo_invalid_completion_gets_zero_and_is_left_out():
    valid = torch.tensor([[True, True, False, True]])
    # stats over [1, 0, 0]: mean 1/3; squares 4/9 + 1/9 + 1/9 = 2/3, / 2 = 1/3 → std 1/√3
    advantages = grpo(t([1.0, 0.0, 5.0, 0.0]), valid=valid).advantages
    std = 1 / math.sqrt(3) + EPS
    assert_close(advantages, t([(2 / 3) / std, (-1 / 3) / std, 0.0, (-1 / 3) / std]))


def test_grpo_eps_zero_on_a_tie_is_not_nan():
    assert torch.equal(grpo(t([2.0, 2.0]), eps=0.0).advantages, torch.zeros(1, 2))


# --- Dr. GRPO ------------------------------------------------------------------------------------


def test_dr_grpo_subtracts_the_mean_only():
    assert_close(dr_grpo(t([3.0, 1.0, 2.0])).advantages, t([1.0, -1.0, 0.0]))
    # the invalid 9 is out of the mean: mean(3, 1) = 2
    valid = torch.tensor([[True, True, False]])
    assert_close(dr_grpo(t([3.0, 1.0, 9.0]), valid=valid).advantages, t([1.0, -1.0, 0.0]))


# --- GPG -----------------------------------------------------------------------------------------


def test_gpg_alpha_counts_tied_groups():
    rewards = t([1.0, 0.0], [1.0, 1.0], [0.0, 0.0], [1.0, 0.0])
    # B = 4, M = 2 tied groups → alpha = 4 / (4 - 2) = 2; centred ±.5 → ±1
    result = gpg(rewards)
    assert_close(result.advantages, t([1.0, -1.0], [0.0, 0.0], [0.0, 0.0], [1.0, -1.0]))
    assert result.metrics == {"gpg/alpha": 2.0}
    # disabled → alpha 1
    off = gpg(rewards, gpg_alpha=False)
    assert_close(off.advantages, t([0.5, -0.5], [0.0, 0.0], [0.0, 0.0], [0.5, -0.5]))
    assert off.metrics == {"gpg/alpha": 1.0}


def test_gpg_alpha_is_one_when_every_group_ties():
    # B = M: B / (B - M) is undefined; every advantage is 0 whatever alpha is
    result = gpg(t([1.0, 1.0], [0.0, 0.0]))
    assert result.metrics == {"gpg/alpha": 1.0}
    assert torch.equal(result.advantages, torch.zeros(2, 2))


def test_gpg_group_with_no_valid_completion_counts_as_tied():
    valid = torch.tensor([[True, True], [False, False]])
    # M = 1 → alpha = 2 / 1 = 2
    result = gpg(t([1.0, 0.0], [5.0, 7.0]), valid=valid)
    assert_close(result.advantages, t([1.0, -1.0], [0.0, 0.0]))


def test_gpg_norm_std():
    # [1, 0]: std = √.5; one of two groups tied → alpha 2
    advantages = gpg(t([1.0, 0.0], [3.0, 3.0]), gpg_norm="std").advantages
    a = 2 * 0.5 / (math.sqrt(0.5) + EPS)
    assert_close(advantages, t([a, -a], [0.0, 0.0]))


def test_gpg_norm_accepts_the_int_yaml_gives():
    assert_close(gpg(t([1.0, 0.0]), gpg_norm=1).advantages, t([0.5, -0.5]))


# --- AAPO ----------------------------------------------------------------------------------------


def test_aapo_momentum_beyond_both_bounds():
    rewards, ref = t([1.0, 0.0, 0.0, 0.0]), t([0.0, 0.0, 1.0, 0.0])
    # group term as in test_grpo_single_outlier: [1.4997, -.4999, -.4999, -.4999]
    # raw momentum r - r_ref = [1, 0, -1, 0] → clip to [-.2, .28] → [.28, 0, -.2, 0]
    result = aapo(rewards, ref_rewards=ref)
    hi, lo = 0.75 / 0.5001, -0.25 / 0.5001
    assert_close(result.advantages, t([hi + 0.28, lo, lo - 0.2, lo]))
    # mean momentum (.28 - .2) / 4 = .02; one of four below, one above
    assert result.metrics["momentum/mean"] == pytest.approx(0.02)
    assert result.metrics["momentum/clip_low_frac"] == 0.25
    assert result.metrics["momentum/clip_high_frac"] == 0.25


def test_aapo_without_clip():
    rewards, ref = t([1.0, 0.0, 0.0, 0.0]), t([0.0, 0.0, 1.0, 0.0])
    result = aapo(rewards, ref_rewards=ref, momentum_clip=False)
    hi, lo = 0.75 / 0.5001, -0.25 / 0.5001
    assert_close(result.advantages, t([hi + 1.0, lo, lo - 1.0, lo]))
    # the raw momentum is added whole (mean 0); the fractions say where a clip would have acted
    assert result.metrics["momentum/mean"] == pytest.approx(0.0)
    assert result.metrics["momentum/clip_low_frac"] == 0.25
    assert result.metrics["momentum/clip_high_frac"] == 0.25


def test_aapo_tied_group_still_has_signal():
    # group term 0; momentum [0, clip(1) = .28, 0, 1 - 1.1 = -.1]
    result = aapo(t([1.0, 1.0, 1.0, 1.0]), ref_rewards=t([1.0, 0.0, 1.0, 1.1]))
    assert_close(result.advantages, t([0.0, 0.28, 0.0, -0.1]))


def test_aapo_custom_bounds_and_no_scaling():
    # centred [1, -1]; momentum [2 - 0 → clip .5, 0 - 3 → clip -1]
    result = aapo(
        t([2.0, 0.0]),
        ref_rewards=t([0.0, 3.0]),
        delta_low=-1.0,
        delta_high=0.5,
        scale_rewards="none",
    )
    assert_close(result.advantages, t([1.5, -2.0]))


def test_aapo_invalid_on_either_side():
    valid = torch.tensor([[True, True, False]])
    ref_valid = torch.tensor([[True, False, True]])
    result = aapo(
        t([1.0, 0.0, 0.0]), ref_rewards=t([0.0, 0.0, 0.0]), valid=valid, ref_valid=ref_valid
    )
    # group over [1, 0]: mean .5, std √.5 → ±.5 / (√.5 + eps)
    # momentum: pair 0 both valid → clip(1) = .28; pair 1 reference invalid → 0;
    # completion 2 invalid → advantage 0
    g = 0.5 / (math.sqrt(0.5) + EPS)
    assert_close(result.advantages, t([g + 0.28, -g, 0.0]))
    # over the 2 valid completions: mean .28 / 2, one of two above the bound
    assert result.metrics["momentum/mean"] == pytest.approx(0.14)
    assert result.metrics["momentum/clip_high_frac"] == 0.5
    assert result.metrics["momentum/clip_low_frac"] == 0.0


def test_aapo_momentum_mass_worked_example():
    """docs/ALGORITHMS.md §3.6 and §3.7: B = 2, G = 4, defaults."""
    rewards = t([1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0])
    ref = t([0.0, 0.9, 1.0, 0.0], [0.0, 1.0, 0.0, 1.0])
    result = aapo(rewards, ref_rewards=ref)
    # prompt 0: group term ±0.5 / (sqrt(1/3) + 1e-4) = ±0.8658754, four of them:
    #   Σ|group| = 3.4635017; momentum (.28, .1, -.2, 0): Σ|m| = .58
    # prompt 1 ties: group term 0; momentum (.28, 0, .28, 0): Σ|m| = .56, all in a tied group
    group_mass, momentum_mass = 4 * 0.5 / (math.sqrt(1 / 3) + EPS), 0.58 + 0.56
    share = momentum_mass / (group_mass + momentum_mass)  # 1.14 / 4.6035017 = 0.2476376
    assert share == pytest.approx(0.2476376, abs=1e-7)
    assert result.metrics["momentum/mass_share"] == pytest.approx(share)
    assert result.metrics["momentum/tied_mass_share"] == pytest.approx(0.56 / 1.14)  # 28/57
    # without the clip the raw differences count: (1 + .1 + 1 + 0) + (1 + 0 + 1 + 0) = 4.1
    noclip = aapo(rewards, ref_rewards=ref, momentum_clip=False)
    assert noclip.metrics["momentum/mass_share"] == pytest.approx(4.1 / (group_mass + 4.1))
    assert noclip.metrics["momentum/tied_mass_share"] == pytest.approx(2 / 4.1)


def test_aapo_momentum_mass_edges():
    # a tied group carries only momentum mass: the share is 1, all of it tied
    tied = aapo(t([1.0, 1.0, 1.0, 1.0]), ref_rewards=t([1.0, 0.0, 1.0, 1.1]))
    assert tied.metrics["momentum/mass_share"] == pytest.approx(1.0)
    assert tied.metrics["momentum/tied_mass_share"] == pytest.approx(1.0)
    # policy equals reference: no momentum mass, so no tied share to speak of
    same = aapo(t([1.0, 0.0], [1.0, 1.0]), ref_rewards=t([1.0, 0.0], [1.0, 1.0]))
    assert same.metrics["momentum/mass_share"] == 0.0
    assert math.isnan(same.metrics["momentum/tied_mass_share"])
    # no mass at all (tied and equal to the reference): both undefined, not 0
    none = aapo(t([1.0, 1.0]), ref_rewards=t([1.0, 1.0]))
    assert math.isnan(none.metrics["momentum/mass_share"])
    # an invalid completion's momentum and group term are left out of the mass
    valid = torch.tensor([[True, True, False]])
    part = aapo(t([1.0, 1.0, 0.0]), ref_rewards=t([0.0, 1.0, 1.0]), valid=valid)
    assert part.metrics["momentum/mass_share"] == pytest.approx(1.0)  # 1 and 1 tie: m = .28
    assert part.metrics["momentum/tied_mass_share"] == pytest.approx(1.0)


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_aapo_equals_grpo_when_reference_rewards_match(scale_rewards):
    rewards = t([1.0, 0.0, 0.5], [2.0, 2.0, 2.0], [-1.0, 3.0, 0.0])
    expected = grpo(rewards, scale_rewards=scale_rewards).advantages
    got = aapo(rewards, ref_rewards=rewards.clone(), scale_rewards=scale_rewards).advantages
    assert_close(got, expected)


# --- bad input -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: grpo(t([1.0], [0.0])), "groups of one"),
        (lambda: grpo(t([1.0], [0.0]), scale_rewards="batch"), "groups of one"),
        (lambda: gpg(t([1.0], [0.0]), gpg_norm="std"), "groups of one"),
        (lambda: aapo(t([1.0], [0.0]), ref_rewards=t([0.0], [0.0])), "groups of one"),
        (lambda: grpo(t([1.0, 0.0]), scale_rewards="std"), "scale_rewards"),
        (lambda: gpg(t([1.0, 0.0]), gpg_norm="l2"), "gpg_norm"),
        (lambda: grpo(t([1.0, nan])), "NaN or inf"),
        (lambda: dr_grpo(t([1.0, float("inf")])), "NaN or inf"),
        (lambda: grpo(torch.tensor([1.0, 0.0])), r"\[B, G\]"),
        (lambda: grpo(t([1.0, 0.0]), valid=torch.tensor([True, True])), "valid has shape"),
        (lambda: grpo(t([1.0, 0.0]), valid=torch.ones(1, 2)), "bool"),
        (lambda: grpo(t([1.0, 0.0]), eps=-1.0), "eps"),
        (lambda: aapo(t([1.0, 0.0]), ref_rewards=t([1.0, 0.0, 0.0])), "ref_rewards has shape"),
        (lambda: aapo(t([1.0, 0.0]), ref_rewards=t([1.0, nan])), "ref_rewards contain NaN"),
        (lambda: aapo(t([1.0, 0.0]), ref_rewards=t([1.0, 0.0]), delta_low=0.3), "delta_low"),
    ],
)
def test_bad_input_raises(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_g_equal_one_without_std_is_allowed():
    # no division: the group term is 0 and AAPO's momentum alone remains
    assert torch.equal(dr_grpo(t([1.0], [0.0])).advantages, torch.zeros(2, 1))
    result = aapo(t([1.0], [0.0]), ref_rewards=t([0.9], [0.0]), scale_rewards="none")
    assert_close(result.advantages, t([0.1], [0.0]))


# --- properties ----------------------------------------------------------------------------------

# few distinct values so whole groups tie often, plus arbitrary ones
reward_values = st.one_of(st.sampled_from([0.0, 1.0, -0.5]), st.floats(-1e4, 1e4, width=32))


@st.composite
def batches(draw):
    b, g = draw(st.integers(1, 4)), draw(st.integers(2, 6))
    cells = st.lists(reward_values, min_size=b * g, max_size=b * g)
    flags = st.lists(st.booleans(), min_size=b * g, max_size=b * g)
    shape = (b, g)
    return (
        torch.tensor(draw(cells)).reshape(shape),
        torch.tensor(draw(flags)).reshape(shape),
        torch.tensor(draw(cells)).reshape(shape),
        torch.tensor(draw(flags)).reshape(shape),
    )


@settings(max_examples=60, deadline=None)
@given(batch=batches(), scale_rewards=st.sampled_from(["group", "batch", "none"]))
def test_every_estimator_is_finite_and_zero_where_invalid(batch, scale_rewards):
    rewards, valid, ref_rewards, ref_valid = batch
    options = {"scale_rewards": scale_rewards, "gpg_norm": "std"}
    for name in ["grpo", "dr_grpo", "gpg", "aapo"]:
        advantages = compute_advantages(
            name, rewards, valid=valid, ref_rewards=ref_rewards, ref_valid=ref_valid, **options
        ).advantages
        assert torch.isfinite(advantages).all(), name
        assert torch.equal(advantages[~valid], torch.zeros_like(advantages[~valid])), name


@settings(max_examples=30, deadline=None)
@given(batch=batches(), scale_rewards=st.sampled_from(["group", "batch", "none"]))
def test_aapo_with_itself_as_reference_is_grpo(batch, scale_rewards):
    rewards, valid, _, _ = batch
    expected = grpo(rewards, valid=valid, scale_rewards=scale_rewards).advantages
    got = aapo(
        rewards, ref_rewards=rewards, valid=valid, ref_valid=valid, scale_rewards=scale_rewards
    ).advantages
    assert torch.equal(got, expected)
