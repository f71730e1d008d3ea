"""The registry: names, import paths, parameters, and a TRL-style reward plugged in by path."""

from __future__ import annotations

import pytest

from aapo.rewards import (
    AccuracyReward,
    CosineReward,
    FormatReward,
    RewardFunction,
    get_reward_function,
    register_reward,
    registered_rewards,
)


def trl_length_reward(completions, **kwargs):
    """Written for TRL: keyword call, conversational completions, extra columns in kwargs."""
    return [float(len(c[0]["content"])) for c in completions]


def trl_scaled_reward(completions, scale: float = 1.0, **kwargs):
    return [scale * len(c) for c in completions]


def test_builtin_names() -> None:
    assert {"format", "accuracy", "cosine"} <= set(registered_rewards())
    assert isinstance(get_reward_function("format"), FormatReward)
    assert isinstance(get_reward_function("accuracy"), AccuracyReward)
    cosine = get_reward_function("cosine", max_length=100, min_value_wrong=0.0)
    assert isinstance(cosine, CosineReward)
    assert isinstance(cosine, RewardFunction)
    assert cosine.__name__ == "cosine"


def test_unknown_name_lists_the_registered_ones() -> None:
    with pytest.raises(ValueError, match="format") as error:
        get_reward_function("fromat")
    assert "accuracy" in str(error.value) and "cosine" in str(error.value)


@pytest.mark.parametrize(
    "path", ["no.such.module:func", "aapo.rewards:nothing_here", "os.path.nope"]
)
def test_bad_import_path_is_named(path: str) -> None:
    with pytest.raises(ValueError, match=path.replace(".", r"\.")):
        get_reward_function(path)


def test_bad_parameters_name_the_reward() -> None:
    with pytest.raises(ValueError, match="cosine"):
        get_reward_function("cosine")  # no max_length
    with pytest.raises(ValueError, match="format"):
        get_reward_function("format", no_such_option=1)


@pytest.mark.parametrize("separator", [":", "."])
def test_trl_style_function_by_import_path(separator: str) -> None:
    reward = get_reward_function(f"{__name__}{separator}trl_length_reward")
    assert reward is trl_length_reward
    completions = [
        [{"role": "assistant", "content": "abc"}],
        [{"role": "assistant", "content": ""}],
    ]
    # called the way TRL (and our trainer) call reward functions: keywords and dataset columns
    values = reward(
        prompts=["p", "q"], completions=completions, answer=["1", "2"], completion_ids=[[1], [2]]
    )
    assert values == [3.0, 0.0]


def test_params_bind_to_a_plain_function() -> None:
    reward = get_reward_function(f"{__name__}:trl_scaled_reward", scale=2.0)
    assert reward(prompts=["p"], completions=["abcd"]) == [8.0]
    assert reward.__name__ == "trl_scaled_reward"


def test_register_reward_as_decorator() -> None:
    @register_reward("test_constant_reward")
    def constant(prompts, completions, **kwargs):
        return [0.5] * len(completions)

    assert get_reward_function("test_constant_reward")(prompts=[""], completions=["x"]) == [0.5]
    with pytest.raises(ValueError, match="already registered"):
        register_reward("test_constant_reward", lambda prompts, completions, **kw: [])
