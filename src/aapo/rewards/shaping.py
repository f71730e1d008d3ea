"""DAPO's overlong reward shaping: a soft length penalty over the last tokens before the cap.

With L_max the completion cap and L_cache the buffer (DAPO eq. 13), a completion of l tokens
gets 0 while l <= L_max − L_cache, then a penalty falling linearly to −1 at l = L_max:
((L_max − L_cache) − l) / L_cache, times `factor`. It is a reward function like any other
(`reward_funcs: [accuracy, overlong]`, `reward_kwargs: {overlong: {buffer: 16}}`), so it is
weighted, logged (`rewards/overlong/mean`) and cached like the others. l counts the
completion's tokens, its EOS included.

Left out: DAPO's alternative of masking truncated completions (`mask_truncated_completions`).
"""

from __future__ import annotations

from typing import Any


class OverlongPenalty:
    """0 up to `max_length − buffer` tokens, then linearly down to −`factor` at `max_length`."""

    def __init__(self, max_length: int | None = None, buffer: int = 0, factor: float = 1.0):
        if max_length is None or max_length < 1:
            raise ValueError("overlong needs max_length >= 1: the completion length cap")
        if not 0 < buffer <= max_length:
            raise ValueError(
                f"overlong needs 0 < buffer <= max_length ({max_length}), got buffer={buffer}"
            )
        self.__name__ = "overlong"
        self.max_length, self.buffer, self.factor = int(max_length), int(buffer), float(factor)

    def __call__(
        self, prompts: list[Any], completions: list[Any], completion_ids: list[list[int]], **_: Any
    ) -> list[float]:
        return [self.value(len(ids)) for ids in completion_ids]

    def value(self, length: int) -> float:
        start = self.max_length - self.buffer
        if length <= start:
            return 0.0
        return self.factor * (start - min(length, self.max_length)) / self.buffer
