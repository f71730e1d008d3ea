"""Error messages quote a user's value cut to a readable length, with its full length said,
whichever part of aapo raises them (one helper: aapo.messages.shown)."""

import pytest

from aapo.messages import SHOWN_CHARS, shown

LONG = "x" * 5000


def test_shown_cuts_and_says_how_long():
    assert shown("short") == "'short'"
    text = shown(LONG)
    assert text == f"'{'x' * (SHOWN_CHARS - 1)}... (5000 characters)"
    assert shown(list(range(3000))).endswith("characters)")


def _model_path():
    from aapo.models import resolve_model_path

    resolve_model_path("/no/such/" + "/".join(["x" * 100] * 14))  # a long path, not too long


def _template():
    from aapo.data.prompts import resolve_user_template

    resolve_user_template(LONG)


def _reward():
    from aapo.rewards import get_reward_function

    get_reward_function(LONG)


def _literal():
    from aapo.rewards.safe_math import number_literal

    number_literal("1" * 5000 + "e99999", exact=True)


def _resume_differences():
    from aapo.training.checkpoint import trajectory_config_differences

    (line,) = trajectory_config_differences({"prompt_template": LONG}, {"prompt_template": "x"})
    raise ValueError(line)


def _cache_differences():
    from aapo.training.reference.cache import fingerprint_differences

    (line,) = fingerprint_differences({"system_prompt": LONG}, {"system_prompt": "x"})
    raise ValueError(line)


def _eval_fingerprint():
    from pathlib import Path

    from aapo.evaluation.store import _check_fingerprint

    _check_fingerprint({"model": LONG}, {"model": "m"}, Path("out"))


def _seeds():
    from aapo.compare.runner import parse_seeds

    parse_seeds("1," * 2500)


def _algorithms():
    from aapo.compare.variants import parse_variants

    parse_variants(LONG)


def _benchmark():
    from aapo.evaluation.benchmarks import load_benchmark

    load_benchmark(LONG, None, None, False, None)


def _eval_backend():
    from aapo.evaluation import EvalConfig

    EvalConfig(backend=LONG)


def _split():
    from aapo.data.datasets import load_problems

    load_problems("synthetic", LONG, 0)


@pytest.mark.parametrize(
    "raise_it",
    [
        _model_path, _template, _reward, _literal, _resume_differences, _cache_differences,
        _eval_fingerprint, _seeds, _algorithms, _benchmark, _eval_backend, _split,
    ],
)  # fmt: skip
def test_a_long_value_is_quoted_cut_wherever_the_error_comes_from(raise_it):
    with pytest.raises(Exception) as info:
        raise_it()
    message = str(info.value)
    assert "characters)" in message, message[:300]
    assert len(message) < 4 * SHOWN_CHARS + 300, message[:300]
