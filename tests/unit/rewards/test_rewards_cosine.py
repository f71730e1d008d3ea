"""The cosine reward (eq. 9-10): values at l = 0, L/2, L and beyond; the authors' variant."""

from __future__ import annotations

import math

import pytest

from aapo.rewards import AUTHORS_CODE_WRONG_VALUES, CosineReward, Grader, cosine_value

L = 100
RIGHT = "<think>r</think><answer>\\boxed{4}</answer>"
WRONG = "<think>r</think><answer>\\boxed{5}</answer>"


def score(reward: CosineReward, completion: str, length: int, gold: str | None = "4") -> float:
    return reward(
        prompts=["q"], completions=[completion], answer=[gold], completion_ids=[[0] * length]
    )[0]


@pytest.mark.parametrize(
    ("length", "correct", "wrong"),
    [
        # cos(0) = 1: the first value of each pair; cos(π/2) = 0: the midpoint; cos(π) = -1
        (0, 1.0, -1.0),
        (L // 2, 0.75, -0.75),  # 0.5 + ½·0.5·(1 + 0) and -0.5 + ½·(-0.5)·(1 + 0)
        (L, 0.5, -0.5),
        (L + 1, 0.5, -0.5),  # clamped: no wrap-around past the cap (docs/ALGORITHMS.md §8.3)
        (3 * L, 0.5, -0.5),
    ],
)
def test_paper_defaults(grader: Grader, length: int, correct: float, wrong: float) -> None:
    reward = CosineReward(max_length=L, grader=grader)
    assert score(reward, RIGHT, length) == pytest.approx(correct)
    assert score(reward, WRONG, length) == pytest.approx(wrong)


def test_quarter_length_by_hand(grader: Grader) -> None:
    # l = L/4: cos(π/4) = √2/2, so correct = 0.5 + 0.25·(1 + √2/2) ≈ 0.9268
    reward = CosineReward(max_length=L, grader=grader)
    expected = 0.5 + 0.25 * (1 + math.sqrt(2) / 2)
    assert score(reward, RIGHT, L // 4) == pytest.approx(expected)


def test_authors_code_variant(grader: Grader) -> None:
    reward = CosineReward(max_length=L, grader=grader, **AUTHORS_CODE_WRONG_VALUES)
    assert score(reward, WRONG, 0) == pytest.approx(0.0)
    assert score(reward, WRONG, L // 2) == pytest.approx(-0.25)
    assert score(reward, WRONG, 2 * L) == pytest.approx(-0.5)
    assert score(reward, RIGHT, 0) == pytest.approx(1.0)  # correct side unchanged


def test_no_answer_is_wrong_and_missing_gold_is_none(grader: Grader) -> None:
    reward = CosineReward(max_length=L, grader=grader)
    assert score(reward, "I give up", 0) == pytest.approx(-1.0)
    assert score(reward, RIGHT, 0, gold=None) is None
    assert reward.pop_metrics() == {"timeouts": 0, "errors": 0, "no_answer": 1, "no_gold": 1}


def test_timeout_scores_zero(fast_grader: Grader) -> None:
    reward = CosineReward(max_length=L, grader=fast_grader)
    tower = "<answer>\\boxed{9^{9^{9^{9^{9}}}}}</answer>"
    assert score(reward, tower, 10, gold="1") == 0.0
    assert reward.pop_metrics()["timeouts"] == 1


def test_requires_cap_and_token_ids(grader: Grader) -> None:
    with pytest.raises(ValueError, match="max_length"):
        CosineReward(grader=grader)
    with pytest.raises(ValueError, match="completion_ids"):
        CosineReward(max_length=L, grader=grader)(prompts=["q"], completions=[RIGHT], answer=["4"])


def test_cosine_value_endpoints() -> None:
    assert cosine_value(0, 10, at_zero=2.0, at_cap=-3.0) == pytest.approx(2.0)
    assert cosine_value(10, 10, at_zero=2.0, at_cap=-3.0) == pytest.approx(-3.0)
    assert cosine_value(5, 10, at_zero=2.0, at_cap=-3.0) == pytest.approx(-0.5)


def test_accuracy_and_cosine_grade_a_batch_once(grader: Grader) -> None:
    from aapo.rewards import AccuracyReward

    completions = [f"<answer>\\boxed{{{n}/7}}</answer>" for n in range(5)]
    columns = {"answer": ["3/7"] * 5, "completion_ids": [[1] * 10] * 5}
    before = grader.counts["requests"]
    accuracy = AccuracyReward(grader=grader)(prompts=[""] * 5, completions=completions, **columns)
    after_accuracy = grader.counts["requests"]
    cosine = CosineReward(max_length=L, grader=grader)(
        prompts=[""] * 5, completions=completions, **columns
    )
    assert after_accuracy - before == 5
    assert grader.counts["requests"] == after_accuracy  # cosine reused the verdicts
    assert accuracy == [0.0, 0.0, 0.0, 1.0, 0.0]
    assert [c > 0 for c in cosine] == [False, False, False, True, False]
