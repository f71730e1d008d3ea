"""The accuracy reward on hand-made completions; None handling; metrics."""

from __future__ import annotations

import pytest

from aapo.rewards import AccuracyReward, Grader, get_reward_function


def wrap(answer: str) -> str:
    return f"<think>working...</think> <answer> The answer is $\\boxed{{{answer}}}$. </answer>"


# (completion, gold, expected reward)
CASES = [
    (wrap("42"), "42", 1.0),
    (wrap("41"), "42", 0.0),
    (wrap("\\frac{1}{2}"), "\\frac{1}{2}", 1.0),
    (wrap("1/2"), "\\frac{1}{2}", 1.0),
    (wrap("0.5"), "\\frac{1}{2}", 1.0),
    (wrap("\\dfrac12"), "0.5", 1.0),
    (wrap("0.51"), "\\frac{1}{2}", 0.0),
    (wrap("[1, 3)"), "[1,3)", 1.0),  # intervals
    (wrap("(1, 3)"), "[1,3)", 0.0),
    (wrap("(-\\infty, 2] \\cup [5, \\infty)"), "(-\\infty,2]\\cup[5,\\infty)", 1.0),
    (wrap("(3, \\frac{\\pi}{2})"), "\\left( 3, \\frac{\\pi}{2} \\right)", 1.0),  # tuples
    (wrap("(\\frac{\\pi}{2}, 3)"), "\\left( 3, \\frac{\\pi}{2} \\right)", 0.0),
    (wrap("25\\%"), "25\\%", 1.0),  # percentages
    (wrap("25"), "25\\%", 1.0),
    (wrap("0.25"), "25\\%", 1.0),  # math-verify: a percent gold accepts 25 and 0.25
    (wrap("2.5"), "25\\%", 0.0),
    (wrap("5\\text{ cm}"), "5", 1.0),  # units
    (wrap("12 \\text{ meters}"), "12", 1.0),
    (wrap("2\\sqrt{2}"), "\\sqrt{8}", 1.0),
    (wrap("x^2+2x+1"), "(x+1)^2", 1.0),
    (wrap("3.83 \\times 10^{35}"), "3.83e35", 1.0),  # e-notation golds (Minerva)
    (wrap("3.83e35"), "3.83e35", 1.0),
    (wrap("-\\frac{1}{3}"), "-1./3", 1.0),  # programming-style gold
    (wrap("\\text{Evelyn}"), "\\text{Evelyn}", 1.0),
    ("\\boxed{1} so far, but finally \\boxed{2}", "2", 1.0),  # the last box is the answer
    ("\\boxed{2} so far, but finally \\boxed{1}", "2", 0.0),
    ("<think>r</think><answer>7</answer>", "7", 1.0),  # no box: the <answer> content
    ("<think>r</think><answer>The value is $\\frac{3}{4}$.</answer>", "0.75", 1.0),
    ("The answer is 7", "7", 0.0),  # no box, no tags: no answer
    ("<think>r</think><answer>7", "7", 0.0),  # unclosed tag
    ("", "7", 0.0),
]


@pytest.mark.parametrize(("completion", "gold", "expected"), CASES)
def test_accuracy_cases(grader: Grader, completion: str, gold: str, expected: float) -> None:
    reward = AccuracyReward(grader=grader)
    assert reward(prompts=["q"], completions=[completion], answer=[gold]) == [expected]


def test_batch_with_messages_and_missing_golds(grader: Grader) -> None:
    reward = get_reward_function("accuracy", grader=grader)
    completions = [
        [{"role": "assistant", "content": wrap("3")}],
        [{"role": "assistant", "content": wrap("4")}],
        [{"role": "assistant", "content": "no answer at all"}],
        [{"role": "assistant", "content": wrap("5")}],
        [{"role": "assistant", "content": wrap("6")}],
    ]
    values = reward(prompts=["q"] * 5, completions=completions, answer=["3", "3", "3", None, ""])
    assert values == [1.0, 0.0, 0.0, None, None]
    assert reward.pop_metrics() == {"timeouts": 0, "errors": 0, "no_answer": 1, "no_gold": 2}
    assert reward.pop_metrics()["no_answer"] == 0  # counts since the last call


def test_none_completions_score_zero(grader: Grader) -> None:
    reward = AccuracyReward(grader=grader)
    assert reward(prompts=[None, None], completions=[None, []], answer=["1", "1"]) == [0.0, 0.0]


def test_solution_column_is_accepted(grader: Grader) -> None:
    reward = AccuracyReward(grader=grader)
    solutions = ["Adding gives $\\boxed{10}$.", "Plain gold 11", None]
    values = reward(
        prompts=["q"] * 3, completions=[wrap("10"), wrap("11"), wrap("12")], solution=solutions
    )
    assert values == [1.0, 0.0, None]  # "Plain gold 11" is not a number; row 3 has no gold
    # `answer` wins over `solution`; a row falls back to `solution` when its answer is empty
    values = reward(
        prompts=["q"] * 2,
        completions=[wrap("1"), wrap("2")],
        answer=["1", None],
        solution=["\\boxed{9}", "\\boxed{2}"],
    )
    assert values == [1.0, 1.0]


def test_missing_gold_column_is_an_error(grader: Grader) -> None:
    with pytest.raises(ValueError, match="answer"):
        AccuracyReward(grader=grader)(prompts=["q"], completions=[wrap("1")], problem=["q"])


# --- opt-in fallback: the last plain number (instruct models answer `9 + 7 = 16`) ---------------

FALLBACK_CASES = [
    ("9 + 7 = 16", "16", 1.0),
    ("9 + 7 = 16.", "16", 1.0),
    ("16? No: 9 + 8 = 17", "16", 0.0),  # the LAST number is the answer
    ("23 - 9 = 14", "14", 1.0),  # `-` between terms is an operator, not a sign
    ("3 - 5 = -2", "-2", 1.0),
    ("Total: 1,250 apples", "1250", 1.0),
    ("It is 2.5 metres", "2.5", 1.0),
    ("\\boxed{15} ... or maybe 16", "16", 0.0),  # a box still wins: the fallback only fills gaps
    ("<think>r</think><answer>15</answer> 16", "16", 0.0),
    ("no digits here", "16", 0.0),
]


@pytest.mark.parametrize(("completion", "gold", "expected"), FALLBACK_CASES)
def test_last_number_fallback_is_opt_in(grader, completion, gold, expected):
    default = AccuracyReward(grader=grader)
    opted = get_reward_function("accuracy", grader=grader, fallback="last_number")
    has_rule_answer = "boxed" in completion or "<answer>" in completion
    assert default(prompts=["q"], completions=[completion], answer=[gold]) == [
        expected if has_rule_answer else 0.0
    ]
    assert opted(prompts=["q"], completions=[completion], answer=[gold]) == [expected]


def test_fallback_counts_no_answer_only_without_any_number(grader):
    reward = AccuracyReward(grader=grader, fallback="last_number")
    reward(prompts=["q"] * 2, completions=["9 + 7 = 16", "sixteen"], answer=["16", "16"])
    assert reward.pop_metrics()["no_answer"] == 1


def test_cosine_takes_the_same_fallback(grader):
    cosine = get_reward_function("cosine", max_length=10, grader=grader, fallback="last_number")
    plain = get_reward_function("cosine", max_length=10, grader=grader)
    kwargs = {"answer": ["16"], "completion_ids": [[1] * 10]}
    assert cosine(prompts=["q"], completions=["9 + 7 = 16"], **kwargs) == [0.5]  # correct at L
    assert plain(prompts=["q"], completions=["9 + 7 = 16"], **kwargs) == [-0.5]  # wrong at L


def test_unknown_fallback_is_refused():
    with pytest.raises(ValueError, match=r"fallback must be null or one of \('last_number',\)"):
        AccuracyReward(fallback="first_number")
