"""Scoring completions with several reward functions, robustly.

Each function gets TRL's call (`prompts, completions, completion_ids=..., **dataset_columns`;
every column is passed through). A function that raises, hangs past `timeout`, or returns
None (or NaN) for a completion does not stop training: its scores become NaN ("not
applicable", dropped by the weighted nan-sum), the event is counted in the metrics
(`rewards/<name>/errors`, `.../timeouts`) and logged once with its cause. A function that
returns the wrong number of scores or a non-number is a programming error and raises, naming
the function. Scores may be Python numbers, numpy scalars, or 1-D numpy arrays / torch tensors.

Where each function runs (`RewardScorer.from_specs`): the built-ins (`format`, `accuracy`,
`cosine`) run here, since their grading already happens in sandboxed worker processes with
hard deadlines; a user's reward (an import path, or a name a plug-in registered) runs in its
own worker process (`reward_process.ProcessReward`), killed when a call times out (a name
registered only in this process, which a worker cannot rebuild, runs here). Callables
passed in directly (as tests do) run here on a daemon thread: a timed-out call is abandoned
and keeps running, but never delays the process's exit.

TRL's call on a step's prompt rows (columns repeated per completion) is built in
training/scored.py.

Left out: running several reward functions concurrently.
"""

from __future__ import annotations

import logging
import math
import threading
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from aapo.rewards.reward_process import ProcessReward, RewardWorkerError

log = logging.getLogger(__name__)
IN_PROCESS = frozenset({"format", "accuracy", "cosine"})  # graded in sandboxed workers already


def reward_name(spec: str) -> str:
    """Short metric name of a reward: `format`, or the last part of an import path."""
    return spec.replace(":", ".").rsplit(".", 1)[-1]


class RewardScorer:
    """Scores with `functions` (callables or ProcessRewards); `close()` stops their workers."""

    def __init__(
        self,
        names: Sequence[str],
        functions: Sequence[Callable[..., Any] | ProcessReward],
        weights: Sequence[float] | None = None,
        timeout: float = 30.0,
    ) -> None:
        self.names = list(names)
        self.functions = list(functions)
        self.weights = torch.tensor(list(weights) if weights else [1.0] * len(names))
        self.timeout = timeout
        self._counts: dict[str, float] = {}
        self._warned: set[tuple[str, str]] = set()

    @classmethod
    def from_specs(
        cls,
        specs: Sequence[str],
        kwargs_per_spec: Mapping[str, Mapping[str, Any]] | None = None,
        weights: Sequence[float] | None = None,
        timeout: float = 30.0,
        imports: Sequence[str] = (),
    ) -> RewardScorer:
        """Build every reward of a run by name (see the module doc for where each runs).
        `imports` are the run's plug-in modules, imported again inside each worker."""
        from aapo.rewards import get_reward_function, registered_rewards

        functions: list[Callable[..., Any] | ProcessReward] = []
        try:
            for spec in specs:
                kwargs = dict((kwargs_per_spec or {}).get(spec, {}))
                if spec in IN_PROCESS:
                    functions.append(get_reward_function(spec, **kwargs))
                elif spec in registered_rewards():
                    functions.append(_plug_in(spec, kwargs, imports))
                else:
                    functions.append(ProcessReward(spec, kwargs, list(imports)))
        except BaseException:
            for function in functions:
                if isinstance(function, ProcessReward):
                    function.close()
            raise
        return cls([reward_name(s) for s in specs], functions, weights, timeout)

    def score(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]],
        columns: dict[str, list[Any]],
    ) -> torch.Tensor:
        """→ [K, N] float32, NaN where a function returned None/NaN, raised or timed out."""
        out = torch.full((len(self.functions), len(completions)), math.nan)
        call = {"prompts": prompts, "completions": completions,
                "completion_ids": completion_ids, **columns}  # fmt: skip
        for k, (name, fn) in enumerate(zip(self.names, self.functions, strict=True)):
            if isinstance(fn, ProcessReward):
                status, value, metrics = fn.call(self.timeout, **call)
            else:
                status, value = _call_on_thread(fn, self.timeout, call, name)
                pop = getattr(fn, "pop_metrics", None)
                metrics = pop() if callable(pop) and status != "timeout" else {}
            for key, count in metrics.items():
                self._count(f"rewards/{name}/{key}", count)
            if status == "ok":
                out[k] = torch.tensor(as_scores(name, value, len(completions)))
            elif status == "bad":
                raise TypeError(f"reward function {name!r} {value}")
            else:
                self._skip(name, f"{status}s", value)
        return out

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

    def close(self) -> None:
        """Kill the reward workers; a stuck call cannot outlive the run."""
        for function in self.functions:
            if isinstance(function, ProcessReward):
                function.close()

    def __enter__(self) -> RewardScorer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _plug_in(
    spec: str, kwargs: dict[str, Any], imports: Sequence[str]
) -> Callable[..., Any] | ProcessReward:
    """A name registered by a plug-in runs in a worker when the worker can rebuild it (the
    plug-in is in `imports`); one registered only here (a script's `__main__`, a notebook)
    runs on a thread, with a warning that a hung call cannot be killed."""
    from aapo.rewards import get_reward_function

    try:
        return ProcessReward(spec, kwargs, list(imports))
    except RewardWorkerError as err:
        log.warning(
            "reward %r runs in this process, where a hung call cannot be killed: its worker "
            "could not rebuild it (%s). Register it in a module listed in `imports`.",
            spec,
            err,
        )
        return get_reward_function(spec, **kwargs)


def _call_on_thread(
    fn: Callable[..., Any], timeout: float, call: dict[str, Any], name: str
) -> tuple[str, Any]:
    """Run `fn(**call)` on a daemon thread (never joined, so a hung call cannot block exit)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def run() -> None:
        try:
            box["ok"] = fn(**call)
        except Exception as err:  # a user's function may raise anything; training goes on
            box["error"] = f"raised {type(err).__name__}: {err}"
        finally:
            done.set()

    threading.Thread(target=run, name=f"reward-{name}", daemon=True).start()
    if not done.wait(timeout):
        return "timeout", f"took longer than {timeout}s; scores skipped"
    return ("ok", box["ok"]) if "ok" in box else ("error", box["error"])


def as_scores(name: str, values: Any, expected: int) -> list[float]:
    """`values` as `expected` floats (NaN for None/NaN); a wrong shape or type raises."""
    if isinstance(values, (np.ndarray, torch.Tensor)):
        if values.ndim != 1:
            raise ValueError(
                f"reward function {name!r} returned an array of shape {tuple(values.shape)}; "
                "it must be 1-D, one score per completion"
            )
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        raise TypeError(f"reward function {name!r} must return a list, got {type(values).__name__}")
    if len(values) != expected:
        raise ValueError(
            f"reward function {name!r} returned {len(values)} scores for {expected} completions"
        )
    return [_as_score(name, v) for v in values]


def _as_score(name: str, value: Any) -> float:
    if value is None:
        return math.nan
    scalar_array = isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0
    if scalar_array or isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(
            f"reward function {name!r} returned {value!r}; scores must be numbers or None"
        )
    if math.isinf(value):
        raise ValueError(f"reward function {name!r} returned a non-finite score {value!r}")
    return float(value)
