"""Every gold of the five benchmark files parses, and scores 1.0 against itself boxed.

Skips cleanly when shared/data/benchmarks (beside the repository) is absent.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aapo.rewards import AccuracyReward, Grader

BENCHMARKS = Path(__file__).resolve().parents[3] / ".." / "shared" / "data" / "benchmarks"
FILES = ("math500", "aime24", "amc23", "minerva_math", "olympiadbench")


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    if not BENCHMARKS.is_dir():
        pytest.skip(f"benchmark data not found at {BENCHMARKS}")
    found = []
    for name in FILES:
        path = BENCHMARKS / f"{name}.jsonl"
        if path.exists():
            found += [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    if not found:
        pytest.skip(f"no benchmark files in {BENCHMARKS}")
    return found


def test_every_gold_parses_and_matches_itself(grader: Grader, rows: list[dict]) -> None:
    errors = grader.check_golds([row["answer"] for row in rows])
    bad = {row["id"]: str(e) for row, e in zip(rows, errors, strict=True) if e is not None}
    assert bad == {}


def test_every_gold_scores_one_against_itself_boxed(grader: Grader, rows: list[dict]) -> None:
    completions = [
        f"<think>\nLet me work it out.\n</think>\n<answer> \\boxed{{{row['answer']}}} </answer>"
        for row in rows
    ]
    reward = AccuracyReward(grader=grader)
    values = reward(
        prompts=[row["problem"] for row in rows],
        completions=completions,
        answer=[row["answer"] for row in rows],
    )
    below = {row["id"]: row["answer"] for row, v in zip(rows, values, strict=True) if v != 1.0}
    assert below == {}
    assert reward.pop_metrics() == {"timeouts": 0, "errors": 0, "no_answer": 0, "no_gold": 0}
