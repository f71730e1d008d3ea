"""DAPO's overlong shaping, against hand values: L_max = 20, L_cache = 8 → free up to 12 tokens."""

import pytest

from aapo.rewards import get_reward_function


@pytest.mark.parametrize(
    ("length", "expected"),
    [
        (0, 0.0),
        (12, 0.0),  # l = L_max − L_cache: still free
        (13, -0.125),  # (12 − 13) / 8
        (16, -0.5),  # (12 − 16) / 8
        (20, -1.0),  # at the cap
        (25, -1.0),  # past it (cannot happen when sampling respects the cap): clamped
    ],
)
def test_overlong_hand_values(length, expected):
    reward = get_reward_function("overlong", max_length=20, buffer=8)
    assert reward(["p"], ["c"], completion_ids=[[7] * length]) == [expected]


def test_factor_scales_and_bad_buffer_is_named():
    reward = get_reward_function("overlong", max_length=20, buffer=8, factor=0.5)
    assert reward(["p"], ["c"], completion_ids=[[1] * 16]) == [-0.25]
    with pytest.raises(ValueError, match="buffer <= max_length"):
        get_reward_function("overlong", max_length=20, buffer=0)
