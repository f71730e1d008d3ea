"""Grading completions against gold answers in worker processes, with a hard timeout.

`Grader.grade(completions, golds)` finds each final answer here (`answers.py`: bounded string
scanning, safe on untrusted text) and sends each distinct (answer, gold) pair to a worker
process that decides mathematical equality (`equivalence.py`: math-verify behind guards that
keep model output away from eval). Training rewards and `aapo eval` share one grader, so they
give the same verdicts; verdicts are cached by (answer, gold), so `accuracy` and `cosine`
scoring the same batch grade it once.

Hard timeout: each pair gets `timeout` seconds from the moment it is sent. The worker gives up
by itself at `soft_timeout` (a signal inside the worker); if it has not answered by the
deadline it is killed and replaced (`workers.py`), and the pair is a `timeout`. No signals are
used in the calling process, so grading works off the main thread and in every process of an
accelerate launch (each process owns its grader; `get_grader()` gives the process-wide one).

A batch of n distinct pathological answers can take up to n * timeout / num_workers seconds;
`batch_timeout` caps a whole `grade` call. Left out: sharing workers between processes.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
from collections import Counter, OrderedDict
from dataclasses import dataclass
from typing import Any, Literal

from aapo.rewards.answers import completion_text, extract_answer, gold_text
from aapo.rewards.errors import GoldAnswerError
from aapo.rewards.workers import Key, WorkerPool

logger = logging.getLogger(__name__)

Status = Literal["ok", "no_answer", "timeout", "error"]


@dataclass(frozen=True)
class Verdict:
    """One graded completion. `extracted` is the answer text found (for audit files)."""

    correct: bool
    extracted: str | None
    status: Status


class Grader:
    """Worker processes that grade (answer, gold) pairs; see the module docstring.

    timeout: hard limit in seconds for one pair. num_workers: processes grading in parallel.
    soft_timeout: when the worker gives up by itself (default 0.8 * timeout), which spares a
    restart. batch_timeout: pairs of one `grade` call not started within this many seconds
    are timeouts (None: no limit); set it below any timeout the caller puts around a reward
    call, so a batch of pathological answers cannot outlast it. memory_mb: address-space cap
    of each worker (0: none). cache_size: verdicts kept. audit: arm the worker's audit hook
    against compile/exec of model output.
    `counts` accumulates verdict statuses, `requests` sent to workers and worker `restarts`.
    """

    def __init__(
        self,
        timeout: float = 5.0,
        num_workers: int = 1,
        *,
        soft_timeout: float | None = None,
        batch_timeout: float | None = None,
        memory_mb: int = 4096,
        cache_size: int = 65536,
        audit: bool = True,
    ) -> None:
        if timeout <= 0 or num_workers < 1:
            raise ValueError("timeout must be > 0 and num_workers >= 1")
        soft_timeout = 0.8 * timeout if soft_timeout is None else soft_timeout
        self.timeout = float(timeout)
        self.num_workers = int(num_workers)
        self.batch_timeout = batch_timeout
        self.counts: Counter[str] = Counter()
        self._cache: OrderedDict[Key, tuple[bool, Status]] = OrderedDict()
        self._cache_size = cache_size
        worker_args = ["--soft-timeout", str(soft_timeout), "--memory-mb", str(memory_mb)]
        self._pool = WorkerPool(
            self.num_workers, self.timeout, worker_args + ([] if audit else ["--no-audit"])
        )
        self._lock = threading.RLock()
        self._pid = os.getpid()
        self._warned_golds: set[str] = set()

    def __enter__(self) -> Grader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def grade(self, completions: list[Any], golds: list[Any]) -> list[Verdict]:
        """One verdict per completion; completions are strings or chat messages."""
        if len(completions) != len(golds):
            raise ValueError(f"{len(completions)} completions but {len(golds)} gold answers")
        with self._lock:
            return self._grade(completions, golds)

    def _grade(self, completions: list[Any], golds: list[Any]) -> list[Verdict]:
        verdicts: list[Verdict | None] = [None] * len(completions)
        todo: dict[Key, list[int]] = {}
        extracted: list[str | None] = []
        for i, (completion, raw_gold) in enumerate(zip(completions, golds, strict=True)):
            answer = extract_answer(completion_text(completion))
            extracted.append(answer.text if answer else None)
            gold = gold_text(raw_gold)
            if answer is None or gold is None:
                verdicts[i] = Verdict(False, extracted[i], "no_answer" if gold else "error")
                continue
            key = ("grade", answer.source, answer.text, gold)
            cached = self._cache.get(key)
            if cached is not None:
                verdicts[i] = Verdict(cached[0], answer.text, cached[1])
            else:
                todo.setdefault(key, []).append(i)
        replies = self._run([(k, _grade_message(k)) for k in todo], self.batch_timeout)
        for key, indices in todo.items():
            correct, status = self._interpret(key, replies[key])
            if replies[key].get("detail") != "not started":  # out of batch time: try next call
                self._remember(key, (correct, status))
            for i in indices:
                verdicts[i] = Verdict(correct, extracted[i], status)
        done = [v for v in verdicts if v is not None]
        self.counts.update(v.status for v in done)
        return done

    def check_golds(self, golds: list[Any]) -> list[GoldAnswerError | None]:
        """For each gold: None when it parses and matches itself boxed, else the error."""
        texts = [gold_text(g) for g in golds]
        keys = {("check", t): {"op": "check_gold", "gold": t} for t in texts if t is not None}
        with self._lock:
            replies = self._run(list(keys.items()))
        errors: list[GoldAnswerError | None] = []
        for raw, text in zip(golds, texts, strict=True):
            reply = replies.get(("check", text)) if text is not None else None
            if reply is None:
                errors.append(GoldAnswerError(raw, "empty"))
            elif reply["status"] == "ok":
                errors.append(None)
            elif reply["status"] == "timeout":
                errors.append(GoldAnswerError(raw, f"parsing took over {self.timeout:g}s"))
            else:
                errors.append(GoldAnswerError(raw, reply.get("detail", "error")))
        return errors

    def check_gold(self, gold: Any) -> None:
        """Raise GoldAnswerError when `gold` cannot be parsed or does not match itself."""
        error = self.check_golds([gold])[0]
        if error is not None:
            raise error

    def close(self) -> None:
        """Stop the workers (a later call starts new ones)."""
        with self._lock:
            if os.getpid() == self._pid:  # after fork the workers belong to the parent
                self._pool.close()

    def _interpret(self, key: Key, reply: dict[str, Any]) -> tuple[bool, Status]:
        status = reply.get("status")
        if status == "ok":
            return bool(reply.get("correct")), "ok"
        if status == "timeout":
            return False, "timeout"
        if reply.get("kind") == "gold" and key[3] not in self._warned_golds:
            self._warned_golds.add(key[3])
            logger.warning(
                "gold answer %r cannot be parsed (%s): graded as an error. "
                "Dataset loaders should call check_gold() on every row.",
                key[3],
                reply.get("detail"),
            )
        return False, "error"

    def _run(
        self, tasks: list[tuple[Key, dict[str, Any]]], budget: float | None = None
    ) -> dict[Key, dict[str, Any]]:
        if not tasks:
            return {}
        if os.getpid() != self._pid:
            raise RuntimeError("a Grader cannot be used after fork; call get_grader() again")
        with self._lock:
            replies = self._pool.run(tasks, budget)
            self.counts["requests"] = self._pool.counts["requests"]
            self.counts["restarts"] = self._pool.counts["restarts"]
            return replies

    def _remember(self, key: Key, value: tuple[bool, Status]) -> None:
        self._cache[key] = value
        if len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)


def _grade_message(key: Key) -> dict[str, Any]:
    _, source, answer, gold = key
    return {"op": "grade", "answer": answer, "source": source, "gold": gold}


_default: dict[str, Any] = {"grader": None, "settings": {}}
_default_lock = threading.Lock()


def configure_default_grader(**settings: Any) -> None:
    """Settings (Grader's keyword arguments) for the process-wide grader; restarts it."""
    Grader(**settings)  # validate now, start nothing
    with _default_lock:
        if _default["grader"] is not None:
            _default["grader"].close()
        _default["grader"], _default["settings"] = None, dict(settings)


def get_grader() -> Grader:
    """The process-wide grader, started lazily and closed at exit (a new one after fork)."""
    with _default_lock:
        grader = _default["grader"]
        if grader is None or grader._pid != os.getpid():
            grader = _default["grader"] = Grader(**_default["settings"])
        return grader


def check_gold(answer: Any) -> None:
    """Raise GoldAnswerError (a ValueError naming the value) when a gold answer cannot be
    parsed or does not match itself; dataset loaders call this once per row at load time."""
    get_grader().check_gold(answer)


@atexit.register
def _close_default() -> None:
    grader = _default["grader"]
    if grader is not None and grader._pid == os.getpid():
        grader.close()
