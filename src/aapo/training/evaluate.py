"""The trainer's quick held-out check: greedy accuracy on problems it never trains on.

It uses the same grader as the accuracy reward and `aapo eval`; the full evaluation (k samples,
confidence intervals, audit files) is `aapo eval`.
"""

from __future__ import annotations

from aapo.data.rows import PromptRow
from aapo.rewards.grading import get_grader
from aapo.rollout import Sampler, SamplingParams


def held_out_accuracy(sampler: Sampler, rows: list[PromptRow], max_new_tokens: int) -> float:
    """Fraction of `rows` (with an `answer` column) answered right, greedy decoding."""
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    samples = sampler.generate([row.prompt_ids for row in rows], params)
    verdicts = get_grader().grade(
        [group[0].text for group in samples], [row.columns["answer"] for row in rows]
    )
    return sum(v.correct for v in verdicts) / len(rows)
