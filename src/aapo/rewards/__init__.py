"""Reward functions with TRL's signature, a registry by name, and the shared grader.

    from aapo.rewards import get_reward_function
    fmt = get_reward_function("format")
    cosine = get_reward_function("cosine", max_length=3584)
    rewards = cosine(prompts, completions, answer=golds, completion_ids=ids)

Importing this package is cheap: sympy and math-verify are imported only by the grading
worker processes (`grading_worker.py`).
"""

from aapo.rewards.answers import ExtractedAnswer, completion_text, extract_answer, gold_text
from aapo.rewards.errors import GoldAnswerError
from aapo.rewards.functions import (
    AUTHORS_CODE_WRONG_VALUES,
    AccuracyReward,
    CosineReward,
    FormatReward,
    cosine_value,
)
from aapo.rewards.grading import (
    Grader,
    Verdict,
    check_gold,
    configure_default_grader,
    get_grader,
)
from aapo.rewards.registry import (
    RewardFunction,
    get_reward_function,
    register_reward,
    registered_rewards,
    reward_parameters,
)
from aapo.rewards.shaping import OverlongPenalty

register_reward("format", FormatReward)
register_reward("accuracy", AccuracyReward)
register_reward("cosine", CosineReward)
register_reward("overlong", OverlongPenalty)

__all__ = [
    "AUTHORS_CODE_WRONG_VALUES",
    "AccuracyReward",
    "CosineReward",
    "ExtractedAnswer",
    "FormatReward",
    "GoldAnswerError",
    "Grader",
    "OverlongPenalty",
    "RewardFunction",
    "Verdict",
    "check_gold",
    "completion_text",
    "configure_default_grader",
    "cosine_value",
    "extract_answer",
    "get_grader",
    "get_reward_function",
    "gold_text",
    "register_reward",
    "registered_rewards",
    "reward_parameters",
]
