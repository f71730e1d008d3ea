"""Scoring completions with several reward functions, robustly.

Each function gets TRL's call (`prompts, completions, completion_ids=..., **dataset_columns`;
every column is passed through). A function that raises, hangs past `timeout`, or returns
None (or NaN) for a completion does not stop training: its scores become NaN ("not
applicable", dropped by the weighted nan-sum), the event is counted in the metrics
(`rewards/<name>/errors`, `.../timeouts`) and logged once with its cause. A function that
returns the wrong number of scores, a non-number, a bool, an infinite score or one beyond
float32 is a programming error: RewardReturnError, naming the function, what it returned and
what is expected. Scores may be Python numbers, numpy scalars, or 1-D numpy arrays / torch
tensors. `probe` calls every function once before any model loads, so such an error (and a
reward that raises on real rows) shows before the weights load, not at the first step.

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

from aapo.messages import shown
from aapo.rewards.errors import RewardReturnError
from aapo.rewards.reward_process import ProcessReward, RewardWorkerError

log = logging.getLogger(__name__)
IN_PROCESS = frozenset({"format", "accuracy", "cosine"})  # graded in sandboxed workers already
FLOAT32_MAX = float(torch.finfo(torch.float32).max)  # scores are kept in float32


def reward_name(spec: str) -> str:
    """Short metric name of a reward: `format`, or the last part of an import path."""
    return spec.replace(":", ".").rsplit(".", 1)[-1]


def metric_names(specs: Sequence[str]) -> list[str]:
    """One distinct metric name per reward (`rewards/<name>/mean`): the short name, with `_2`,
    `_3`, ... for a later reward whose short name is taken (`accuracy` and
    `mine:accuracy` → `accuracy`, `accuracy_2`), so two rewards never share a metric key."""
    names: list[str] = []
    for spec in specs:
        name, count = reward_name(spec), 1
        while name in names or (count > 1 and name in map(reward_name, specs)):
            count += 1
            name = f"{reward_name(spec)}_{count}"
        names.append(name)
    return names


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
        return cls(metric_names(specs), functions, weights, timeout)

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
            status, value, metrics = self._call(name, fn, call)
            for key, count in metrics.items():
                self._count(f"rewards/{name}/{key}", count)
            if status == "ok":
                out[k] = torch.tensor(as_scores(name, value, len(completions)))
            elif status == "bad":  # from a worker: a value pickle cannot carry (a generator)
                raise _wrong(name, len(completions), value.removeprefix("returned "))
            else:
                self._skip(name, f"{status}s", value)
        return out

    def probe(
        self,
        prompts: list[Any],
        completions: list[Any],
        completion_ids: list[list[int]],
        columns: dict[str, list[Any]],
    ) -> list[str]:
        """Call every function once as `score` does and check what it returns (a
        RewardReturnError now rather than at the first step); → what else went wrong (a
        raise, a timeout), for the caller to report. Nothing is counted in the metrics."""
        call = {"prompts": prompts, "completions": completions,
                "completion_ids": completion_ids, **columns}  # fmt: skip
        problems = []
        for name, fn in zip(self.names, self.functions, strict=True):
            status, value, _ = self._call(name, fn, call)
            if status == "ok":
                as_scores(name, value, len(completions))
            elif status == "bad":
                raise _wrong(name, len(completions), value.removeprefix("returned "))
            else:
                problems.append(f"reward function {name!r} {value}")
        return problems

    def _call(
        self, name: str, fn: Callable[..., Any] | ProcessReward, call: dict[str, Any]
    ) -> tuple[str, Any, dict[str, float]]:
        """→ (status, value, metrics) as `ProcessReward.call` gives them, wherever fn runs."""
        if isinstance(fn, ProcessReward):
            return fn.call(self.timeout, **call)
        status, value = _call_on_thread(fn, self.timeout, call, name)
        pop = getattr(fn, "pop_metrics", None)
        return status, value, pop() if callable(pop) and status != "timeout" else {}

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
    """`values` as `expected` floats (NaN for None/NaN); anything else is a RewardReturnError
    naming the function, what it returned (as given: a finite 1e308 is shown as 1e+308, not
    as the inf it would become in float32) and what is expected."""
    if isinstance(values, (np.ndarray, torch.Tensor)):
        if values.ndim != 1:
            raise _wrong(name, expected, f"an array of shape {tuple(values.shape)}")
        values = values.tolist()
    if not isinstance(values, (list, tuple)):
        shown_value = "None" if values is None else f"a {type(values).__name__} {shown(values)}"
        raise _wrong(name, expected, shown_value)
    if len(values) != expected:
        what = f"{len(values)} scores for {expected} completions: {shown(values)}"
        raise _wrong(name, expected, what)
    return [_as_score(name, expected, n, v) for n, v in enumerate(values)]


def _as_score(name: str, expected: int, n: int, value: Any) -> float:
    if value is None:
        return math.nan
    scalar_array = isinstance(value, (np.ndarray, torch.Tensor)) and value.ndim == 0
    if scalar_array or isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        what = f"{shown(value)} ({type(value).__name__}) for completion {n}"
        raise _wrong(name, expected, what)
    try:
        score = float(value)
    except OverflowError:  # an int beyond any float
        score = math.inf
    if math.isnan(score):
        return score
    if not abs(score) <= FLOAT32_MAX:  # scores are kept in float32, where this is inf
        raise _wrong(name, expected, f"{shown(value)} for completion {n}")
    return score


def _wrong(name: str, expected: int, what: str) -> RewardReturnError:
    return RewardReturnError(
        f"reward function {name!r} returned {what}; expected a list of {expected} numbers or "
        f"None, one per completion (finite, within float32's ±{FLOAT32_MAX:.1e}; None: not "
        "applicable)"
    )
