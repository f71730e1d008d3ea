"""Registries: built-in names, option filtering, presets, and adding an estimator by name."""

import doctest

import pytest
import torch
from torch.testing import assert_close

from aapo.algorithms import (
    ADVANTAGE_NAMES,
    ALGORITHM_NAMES,
    AdvantageResult,
    Algorithm,
    compute_advantages,
    get_advantage,
    get_algorithm,
    get_policy_loss,
    grpo,
    register_advantage,
    register_algorithm,
    register_policy_loss,
    registry,
)

# every knob in one dict, as the trainer hands it over
CONFIG = {
    "scale_rewards": "group",
    "gpg_norm": "1",
    "gpg_alpha": True,
    "delta_low": -0.2,
    "delta_high": 0.28,
    "momentum_clip": True,
    "epsilon": 0.2,
    "epsilon_high": 0.28,
    "beta": 0.0,
}


@pytest.fixture
def scratch_names():
    """Names registered by a test are removed afterwards, so tests stay independent."""
    tables = [registry._ADVANTAGES, registry._ALGORITHMS, registry._POLICY_LOSSES]
    saved = [dict(table) for table in tables]
    yield
    for table, entries in zip(tables, saved, strict=True):
        table.clear()  # in place: ADVANTAGE_NAMES and friends are views of these dicts
        table.update(entries)


def test_builtin_estimators():
    assert {"grpo", "dr_grpo", "gpg", "aapo"} <= set(ADVANTAGE_NAMES)
    assert get_advantage("aapo").needs_reference
    assert not any(get_advantage(n).needs_reference for n in ["grpo", "dr_grpo", "gpg"])
    assert get_advantage("grpo").fn is grpo


def test_presets():
    table = {
        name: (a.advantage, a.policy_loss, a.aggregation, dict(a.defaults), a.needs_reference)
        for name in ALGORITHM_NAMES
        for a in [get_algorithm(name)]
    }
    assert table == {
        "aapo": ("aapo", "nll", "token_mean", {}, True),
        "gpg": ("gpg", "nll", "token_mean", {}, False),
        "grpo": ("grpo", "clipped", "sequence_mean", {}, False),
        "dapo": (
            "grpo",
            "clipped",
            "token_mean",
            {"epsilon_high": 0.28, "dynamic_sampling": True},  # DAPO samples until untied
            False,
        ),
        "dr_grpo": ("dr_grpo", "clipped", "constant", {}, False),
    }


def test_preset_defaults_are_read_only():
    with pytest.raises(TypeError):
        get_algorithm("dapo").defaults["epsilon_high"] = 0.5


@pytest.mark.parametrize("name", ["grpo", "dr_grpo", "gpg", "aapo"])
def test_one_config_serves_every_estimator(name):
    rewards = torch.tensor([[1.0, 0.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]])
    result = compute_advantages(name, rewards, ref_rewards=torch.zeros(2, 4), **CONFIG)
    assert result.advantages.shape == (2, 4)


def test_options_reach_the_estimator():
    rewards = torch.tensor([[2.0, 0.0]])
    # scale_rewards none: centred [1, -1]; the momentum clip is ignored by grpo
    result = compute_advantages("grpo", rewards, scale_rewards="none", delta_low=-1.0)
    assert_close(result.advantages, torch.tensor([[1.0, -1.0]]))
    result = compute_advantages(
        "aapo",
        rewards,
        ref_rewards=torch.tensor([[0.0, 0.0]]),
        scale_rewards="none",
        delta_high=0.5,
    )
    assert_close(result.advantages, torch.tensor([[1.5, -1.0]]))


def test_reference_estimator_without_reference_rewards():
    with pytest.raises(ValueError, match="ref_rewards"):
        compute_advantages("aapo", torch.tensor([[1.0, 0.0]]))


@pytest.mark.parametrize(
    ("lookup", "match"),
    [
        (get_advantage, r"unknown advantage estimator 'ppo'; known: aapo, dr_grpo, gpg, grpo"),
        (get_policy_loss, r"unknown policy loss 'ppo'; known: clipped, nll"),
        (get_algorithm, r"unknown algorithm 'ppo'; known: .*dapo.*"),
        (lambda name: compute_advantages(name, torch.zeros(1, 2)), "unknown advantage"),
    ],
)
def test_unknown_names_list_the_known_ones(lookup, match):
    with pytest.raises(ValueError, match=match):
        lookup("ppo")


def test_registry_docstring_example(scratch_names):
    # registers "rloo" with one function and one line, then picks it by name
    result = doctest.testmod(registry)
    assert result.failed == 0 and result.attempted > 0
    assert get_algorithm("rloo").advantage == "rloo"


def test_user_estimator_picked_by_name(scratch_names):
    @register_advantage("best_of_group")
    def best_of_group(rewards, *, valid=None):
        return AdvantageResult(rewards - rewards.amax(dim=1, keepdim=True), {"custom": 1.0})

    register_algorithm("bog", Algorithm("best_of_group", "nll", "token_mean"))
    algorithm = get_algorithm("bog")
    valid = torch.tensor([[True, True, False]])
    result = compute_advantages(algorithm.advantage, torch.tensor([[3.0, 1.0, 0.0]]), valid=valid)
    # 3 - 3 = 0, 1 - 3 = -2; the invalid completion is zeroed for the estimator
    assert_close(result.advantages, torch.tensor([[0.0, -2.0, 0.0]]))
    assert result.metrics == {"custom": 1.0}


def test_estimator_with_kwargs_receives_everything(scratch_names):
    seen = {}

    @register_advantage("spy")
    def spy(rewards, **options):
        seen.update(options)
        return AdvantageResult(torch.zeros_like(rewards))

    compute_advantages("spy", torch.zeros(1, 2), scale_rewards="none")
    assert set(seen) == {"valid", "ref_rewards", "ref_valid", "scale_rewards"}


def test_user_policy_loss(scratch_names):
    @register_policy_loss("half_nll")
    def half_nll(logps, *, advantages, old_logps, epsilon_low, epsilon_high):
        return -0.5 * advantages[:, None] * logps, {}

    register_algorithm("half", Algorithm("grpo", "half_nll", "token_mean"))
    per_token, _ = get_policy_loss(get_algorithm("half").policy_loss)(
        torch.tensor([[-2.0]]),
        advantages=torch.tensor([1.0]),
        old_logps=None,
        epsilon_low=0.2,
        epsilon_high=None,
    )
    assert_close(per_token, torch.tensor([[1.0]]))


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda: register_advantage("grpo")(grpo), "already registered"),
        (lambda: register_advantage("")(grpo), "non-empty"),
        (lambda: register_algorithm("x", Algorithm("nope", "nll", "token_mean")), "unknown adv"),
        (lambda: register_algorithm("x", Algorithm("grpo", "nope", "token_mean")), "unknown pol"),
        (lambda: register_algorithm("x", Algorithm("grpo", "nll", "mean")), "aggregation"),
        (lambda: register_algorithm("aapo", get_algorithm("aapo")), "already registered"),
    ],
)
def test_registration_errors(call, match, scratch_names):
    with pytest.raises(ValueError, match=match):
        call()


@pytest.mark.parametrize(
    ("returned", "error", "match"),
    [
        (torch.zeros(2), ValueError, "shape"),
        (torch.full((1, 2), float("nan")), ValueError, "NaN"),
        (None, TypeError, "AdvantageResult"),
    ],
)
def test_broken_user_estimator_is_caught(returned, error, match, scratch_names):
    @register_advantage("broken")
    def broken(rewards):
        return returned if returned is None else AdvantageResult(returned)

    with pytest.raises(error, match=match):
        compute_advantages("broken", torch.zeros(1, 2))
