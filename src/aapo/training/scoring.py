"""Scoring completions with several reward functions, robustly.

Each function gets TRL's call (`prompts, completions, completion_ids=..., **dataset_columns`).
A function that raises, hangs past `timeout`, or returns None for a completion does not stop
training: its scores become NaN ("not applicable", dropped by the weighted nan-sum), the event
is counted in the metrics (`rewards/<name>/errors`, `.../timeouts`) and logged once with its
cause. A function that returns the wrong number of scores or a non-number is a programming
error and raises, naming the function.
"""

from __future__ import annotations

import concurrent.futures as cf
import logging
import math
from collections.abc import Callable, Sequence
from typing import Any

import torch

log = logging.getLogger(__name__)


def reward_name(spec: str) -> str:
    """Short metric name of a reward: `format`, or the last part of an import path."""
    return spec.replace(":", ".").rsplit(".", 1)[-1]


class RewardScorer:
    def __init__(
        self,
        names: Sequence[str],
        functions: Sequence[Callable[..., list]],
        weights: Sequence[float] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.names = list(names)
        self.functions = list(functions)
        self.weights = torch.tensor(list(weights) if weights else [1.0] * len(names))
        self.timeout = timeout
        self._counts: dict[str, float] = {}
        self._warned: set[tuple[str, str]] = set()

    def score(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]],
        columns: dict[str, list[Any]],
    ) -> torch.Tensor:
        """→ [K, N] float32, NaN where a function returned None, raised or timed out."""
        out = torch.full((len(self.functions), len(completions)), math.nan)
        for k, (name, fn) in enumerate(zip(self.names, self.functions, strict=True)):
            values = self._call(name, fn, prompts, completions, completion_ids, columns)
            if values is not None:
                # None (and NaN, which TRL treats alike) means "does not apply here"
                out[k] = torch.tensor([math.nan if v is None else float(v) for v in values])
            pop = getattr(fn, "pop_metrics", None)
            for key, value in (pop() if callable(pop) else {}).items():
                self._count(f"rewards/{name}/{key}", value)
        return out

    def _call(self, name, fn, prompts, completions, completion_ids, columns) -> list | None:
        pool = cf.ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"reward-{name}")
        future = pool.submit(
            fn, prompts=prompts, completions=completions, completion_ids=completion_ids, **columns
        )
        try:
            values = future.result(timeout=self.timeout)
        except cf.TimeoutError:
            self._skip(name, "timeouts", f"took longer than {self.timeout}s; scores skipped")
            return None
        except Exception as err:  # a user's function may raise anything; training goes on
            self._skip(name, "errors", f"raised {type(err).__name__}: {err}")
            return None
        finally:
            pool.shutdown(wait=False)  # a hung call is abandoned, not waited for
        return _check(name, values, len(completions))

    def _skip(self, name: str, kind: str, why: str) -> None:
        self._count(f"rewards/{name}/{kind}", 1)
        if (name, kind) not in self._warned:
            log.warning("reward function %r %s (counted in rewards/%s/%s)", name, why, name, kind)
            self._warned.add((name, kind))

    def _count(self, key: str, value: float) -> None:
        self._counts[key] = self._counts.get(key, 0.0) + value

    def pop_metrics(self) -> dict[str, float]:
        counts, self._counts = self._counts, {}
        return counts


def _check(name: str, values: Any, expected: int) -> list:
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"reward function {name!r} must return a list, got {type(values).__name__}")
    if len(values) != expected:
        raise ValueError(
            f"reward function {name!r} returned {len(values)} scores for {expected} completions"
        )
    for v in values:
        if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float))):
            raise TypeError(
                f"reward function {name!r} returned {v!r}; scores must be numbers or None"
            )
        if v is not None and math.isinf(v):
            raise ValueError(f"reward function {name!r} returned a non-finite score {v!r}")
    return list(values)
