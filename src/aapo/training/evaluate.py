"""The trainer's quick held-out check: greedy accuracy on problems it never trains on.

It uses the same grader as the accuracy reward and `aapo eval`, overall and per difficulty
level when the rows carry a `level` column. The full evaluation (k samples, confidence
intervals, audit files) is `aapo eval`.
"""

from __future__ import annotations

from collections import defaultdict

from aapo.data.rows import PromptRow
from aapo.rewards.grading import get_grader
from aapo.rollout import Sampler, SamplingParams


def held_out_accuracy(sampler: Sampler, rows: list[PromptRow], max_new_tokens: int) -> float:
    """Fraction of `rows` (with an `answer` column) answered right, greedy decoding."""
    return held_out_metrics(sampler, rows, max_new_tokens)["eval/accuracy"]


def held_out_metrics(
    sampler: Sampler, rows: list[PromptRow], max_new_tokens: int
) -> dict[str, float]:
    """`eval/accuracy` and, for rows with a `level`, `eval/accuracy/level_<L>`."""
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=max_new_tokens)
    samples = sampler.generate([row.prompt_ids for row in rows], params)
    verdicts = get_grader().grade(
        [group[0].text for group in samples], [row.columns["answer"] for row in rows]
    )
    by_level: dict[object, list[bool]] = defaultdict(list)
    for row, verdict in zip(rows, verdicts, strict=True):
        if row.columns.get("level") is not None:
            by_level[row.columns["level"]].append(verdict.correct)
    out = {"eval/accuracy": sum(v.correct for v in verdicts) / len(rows)}
    for level in sorted(by_level, key=str):
        right = by_level[level]
        out[f"eval/accuracy/level_{level}"] = sum(right) / len(right)
    return out
