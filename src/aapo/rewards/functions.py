"""The built-in rewards of the paper (Appendix C.1): `format`, `accuracy`, `cosine`.

Each is a callable with TRL's signature, `f(prompts, completions, **columns) -> list[float |
None]`: completions are strings or chat messages; `columns` hold the dataset row as lists
(the gold in `answer`, or in `solution` as in TRL / open-r1 data, where the last `\\boxed{}`
of a worked solution is the gold), `completion_ids` (token ids, unpadded, ending with the EOS
that stopped the completion) and `rendered_prompt` (each prompt as text exactly as the model
saw it, chat template and generation prompt included; `prompts` stays the TRL-style input).
A reward that needs a gold returns None for a row without one. Grading goes through the shared
grader (`grading.get_grader()` unless one is passed), so `accuracy` and `cosine` on the same
batch grade it once. A timeout or grader error scores 0.0; `pop_metrics()` returns the counts
(`timeouts`, `errors`, `no_answer`, `no_gold`) since its last call.

Left out: the authors' character-length, unclamped cosine (a bug: docs/ALGORITHMS.md §8.3).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from typing import Any

from aapo.messages import shown
from aapo.rewards.answers import FALLBACKS, answer_with_fallback, completion_text, gold_text
from aapo.rewards.grading import Grader, Verdict, get_grader

# docs/ALGORITHMS.md §8.6: the authors' code scored wrong answers (0.0 at l = 0, -0.5 at l >= L)
# instead of the paper's (-1.0, -0.5). `get_reward_function("cosine", max_length=L,
# **AUTHORS_CODE_WRONG_VALUES)` reproduces it.
AUTHORS_CODE_WRONG_VALUES = {"min_value_wrong": 0.0, "max_value_wrong": -0.5}

_TEMPLATE = re.compile(r"\s*<think>(.*?)</think>\s*<answer>(.*?)</answer>\s*", re.DOTALL)
_TAGS = ("<think>", "</think>", "<answer>", "</answer>")


def _prompt_text(prompt: Any) -> str:
    if isinstance(prompt, (list, tuple)):  # chat messages: the template's tail is not visible
        return ""
    return prompt if isinstance(prompt, str) else ""


class FormatReward:
    """1.0 when a completion follows `<think> … </think> <answer> … </answer>`, else 0.0.

    The exact rule: the whole completion, with leading and trailing whitespace ignored, is
    `<think>`, any text (may be empty), `</think>`, optional whitespace, `<answer>`, text with
    at least one non-whitespace character, `</answer>`; each of the four tags occurs exactly
    once, and nothing comes before `<think>` or after `</answer>`. Whitespace inside and
    between the blocks is free (no newlines required). Tags are case-sensitive.

    think_in_prompt: when the chat template already opened `<think>` at the end of the prompt
    (R1-distilled models: their generation prompt ends `<｜Assistant｜><think>\n`), the
    completion starts inside the think block. None (default): detect it from the prompt the
    model saw, the `rendered_prompt` column (else a string prompt), ending in `<think>`;
    True/False: force it.
    """

    def __init__(self, think_in_prompt: bool | None = None) -> None:
        self.__name__ = "format"  # TRL names a reward by its __name__
        self.think_in_prompt = think_in_prompt

    def __call__(self, prompts: list[Any], completions: list[Any], **kwargs: Any) -> list[float]:
        seen = kwargs.get("rendered_prompt")
        if seen is None:  # called without it (TRL, a user): the prompts may be rendered text
            seen = list(prompts) if prompts is not None else [None] * len(completions)
        return [self.score(p, c) for p, c in zip(seen, completions, strict=True)]

    def score(self, prompt: Any, completion: Any) -> float:
        text = completion_text(completion)
        opened = self.think_in_prompt
        if opened is None:
            opened = _prompt_text(prompt).rstrip().endswith("<think>")
        if opened:
            text = "<think>" + text
        if any(text.count(tag) != 1 for tag in _TAGS):
            return 0.0
        match = _TEMPLATE.fullmatch(text)
        return 1.0 if match is not None and match.group(2).strip() else 0.0


def _gold_column(kwargs: dict[str, Any], n: int, reward: str) -> list[Any]:
    """Per row: the `answer` value, else the `solution` value (None when neither is set)."""
    answers, solutions = kwargs.get("answer"), kwargs.get("solution")
    if answers is None and solutions is None:
        columns = sorted(k for k in kwargs if k not in ("completion_ids", "rendered_prompt"))
        raise ValueError(f"{reward} needs a gold column `answer` or `solution`; got {columns}")
    golds = []
    for i in range(n):
        candidates = [col[i] for col in (answers, solutions) if col is not None]
        golds.append(next((g for g in candidates if gold_text(g) is not None), None))
    return golds


_COUNTED = {"timeout": "timeouts", "error": "errors", "no_answer": "no_answer"}


class _GradedRows:
    """What `accuracy` and `cosine` share: gold column, grading, counters (held, not inherited)."""

    def __init__(self, name: str, grader: Grader | None, fallback: str | None = None) -> None:
        if fallback is not None and fallback not in FALLBACKS:
            raise ValueError(
                f"{name}: fallback must be null or one of {FALLBACKS}, got {shown(fallback)}"
            )
        self.name = name
        self.grader = grader
        self.fallback = fallback
        self.counts: Counter[str] = Counter()

    def pop_metrics(self) -> dict[str, float]:
        keys = ("timeouts", "errors", "no_answer", "no_gold")
        metrics = {key: float(self.counts[key]) for key in keys}
        self.counts.clear()
        return metrics

    def verdicts(self, completions: list[Any], kwargs: dict[str, Any]) -> list[Verdict | None]:
        """One verdict per completion; None where the row has no gold."""
        golds = _gold_column(kwargs, len(completions), self.name)
        rows = [i for i, gold in enumerate(golds) if gold is not None]
        grader = self.grader or get_grader()
        texts = [answer_with_fallback(completion_text(completions[i]), self.fallback) for i in rows]
        graded = grader.grade(texts, [golds[i] for i in rows])
        verdicts: list[Verdict | None] = [None] * len(completions)
        for i, verdict in zip(rows, graded, strict=True):
            verdicts[i] = verdict
        self.counts["no_gold"] += len(completions) - len(rows)
        self.counts.update(_COUNTED[v.status] for v in graded if v.status in _COUNTED)
        return verdicts


class AccuracyReward:
    """1.0 when the final answer (last `\\boxed{}`, else `<answer>` content) equals the gold
    mathematically (math-verify), 0.0 otherwise (also on timeout or grader error).

    fallback: None (default, the paper's rule) or `last_number`: a completion with neither a
    box nor an `<answer>` tag is answered by its last plain number (`answers.py`).
    """

    def __init__(self, grader: Grader | None = None, fallback: str | None = None) -> None:
        self.__name__ = "accuracy"
        self._rows = _GradedRows("accuracy", grader, fallback)

    def pop_metrics(self) -> dict[str, float]:
        """Counts since the last call; the trainer logs them as rewards/<name>/<key>."""
        return self._rows.pop_metrics()

    def __call__(
        self, prompts: list[Any], completions: list[Any], **kwargs: Any
    ) -> list[float | None]:
        return [
            None if v is None else (1.0 if v.correct else 0.0)
            for v in self._rows.verdicts(completions, kwargs)
        ]


def cosine_value(length: int, max_length: int, at_zero: float, at_cap: float) -> float:
    """at_cap + ½(at_zero − at_cap)(1 + cos(π·min(l, L)/L)): at_zero at l = 0, at_cap for l ≥ L."""
    progress = min(length, max_length) / max_length
    return at_cap + 0.5 * (at_zero - at_cap) * (1.0 + math.cos(math.pi * progress))


class CosineReward:
    """The paper's length-aware correctness reward (eq. 9-10), l in tokens, clamped at L.

    correct: min_value_correct + ½(max_value_correct − min_value_correct)(1 + cos(π·min(l,L)/L))
      (max_value_correct at l = 0, falling to min_value_correct at l ≥ L: shorter is better);
    wrong:   max_value_wrong + ½(min_value_wrong − max_value_wrong)(1 + cos(π·min(l,L)/L))
      (min_value_wrong at l = 0, rising to max_value_wrong at l ≥ L: a short wrong answer is
      penalised most). A completion with no answer is wrong; a timeout or grader error scores
      0.0. Defaults are the paper's; the authors' code used min_value_wrong=0.0,
      max_value_wrong=-0.5 (`AUTHORS_CODE_WRONG_VALUES`).

    max_length: the cap L in tokens (the run's max completion length). l is
    `len(completion_ids[i])`, so `completion_ids` must be passed (TRL does); it counts the EOS
    a completion stopped on, as TRL's completion mask does. fallback: as for `accuracy`.
    """

    def __init__(
        self,
        max_length: int | None = None,
        min_value_correct: float = 0.5,
        max_value_correct: float = 1.0,
        min_value_wrong: float = -1.0,
        max_value_wrong: float = -0.5,
        grader: Grader | None = None,
        fallback: str | None = None,
    ) -> None:
        if max_length is None or int(max_length) <= 0:
            raise ValueError("cosine needs max_length > 0: the completion length cap L in tokens")
        self.__name__ = "cosine"
        self._rows = _GradedRows("cosine", grader, fallback)
        self.max_length = int(max_length)
        self.correct = (max_value_correct, min_value_correct)  # (at l = 0, at l >= L)
        self.wrong = (min_value_wrong, max_value_wrong)

    def pop_metrics(self) -> dict[str, float]:
        """Counts since the last call; the trainer logs them as rewards/<name>/<key>."""
        return self._rows.pop_metrics()

    def __call__(
        self, prompts: list[Any], completions: list[Any], **kwargs: Any
    ) -> list[float | None]:
        completion_ids = kwargs.get("completion_ids")
        if completion_ids is None or len(completion_ids) != len(completions):
            raise ValueError("cosine needs `completion_ids` (token ids, one list per completion)")
        rewards: list[float | None] = []
        for ids, verdict in zip(
            completion_ids, self._rows.verdicts(completions, kwargs), strict=True
        ):
            if verdict is None:
                rewards.append(None)
            elif verdict.status in ("timeout", "error"):
                rewards.append(0.0)
            else:
                at_zero, at_cap = self.correct if verdict.correct else self.wrong
                rewards.append(cosine_value(len(ids), self.max_length, at_zero, at_cap))
        return rewards
