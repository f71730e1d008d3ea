"""Exceptions shared by the calling process and the grading workers (no heavy imports)."""

from __future__ import annotations

from typing import Any


class GoldAnswerError(ValueError):
    """A gold answer that cannot be parsed (or does not match itself); `.answer` holds it."""

    def __init__(self, answer: Any, reason: str = "no parse") -> None:
        super().__init__(f"cannot parse gold answer {answer!r}: {reason}")
        self.answer = answer
        self.reason = reason

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.answer, self.reason))


class RewardReturnError(ValueError):
    """A reward function returned something that is not one score (or None) per completion:
    a programming error, refused with the function's name, what it returned and what is
    expected."""
