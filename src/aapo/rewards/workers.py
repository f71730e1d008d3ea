"""A pool of grading worker processes with a hard deadline per request.

`WorkerPool.run(tasks)` hands each request to an idle worker (one request per worker at a time)
and collects the replies. A worker that misses a request's deadline (stuck inside one C call,
where its own signal-based deadline cannot fire) is killed and replaced, and the request's
reply is `{"status": "timeout"}`; a worker that dies on a request gives `{"status": "error"}`.
A worker is killed with its whole process group (`processes.py`), at a deadline and at close.
Nothing here uses signals, so it works off the main thread.

Workers are fresh interpreters (`sys.executable -m aapo.rewards.grading_worker`) rather than
multiprocessing children: no fork of a process holding torch threads or CUDA state, and no
re-import of the user's `__main__` (spawn and forkserver do that). The protocol is JSON lines.

Left out: Windows (waiting on pipes uses `select`); retrying a request whose worker crashed.
"""

from __future__ import annotations

import json
import os
import select
import sys
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

from aapo.rewards import processes

Key = tuple[str, ...]
_STARTUP_TIMEOUT = 180.0  # importing sympy on a loaded machine can take a while
_MAX_FAILED_STARTS = 3


class _Worker:
    """One worker process and the request it is working on."""

    def __init__(self, argv: list[str], env: dict[str, str]) -> None:
        self.proc = processes.start(argv, env)
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.fd = self.proc.stdout.fileno()
        os.set_blocking(self.fd, False)
        self.pending = b""
        self.ready = False
        self.started = time.monotonic()
        self.key: Key | None = None
        self.deadline = float("inf")

    def send(self, key: Key, message: dict[str, Any], timeout: float) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(message).encode("utf-8") + b"\n")
        self.proc.stdin.flush()
        self.key, self.deadline = key, time.monotonic() + timeout

    def read_replies(self) -> list[dict[str, Any]] | None:
        """Complete reply lines available now; None once the worker has exited."""
        try:
            chunk = os.read(self.fd, 1 << 16)
        except BlockingIOError:
            return []
        if not chunk:
            return None
        lines = (self.pending + chunk).split(b"\n")
        self.pending = lines.pop()
        return [_decode(line) for line in lines if line.strip()]

    def kill(self) -> None:
        processes.kill_group(self.proc)  # with anything it started


def _decode(line: bytes) -> dict[str, Any]:
    try:
        reply = json.loads(line)
    except ValueError:
        reply = None
    if not isinstance(reply, dict):
        return {"status": "error", "kind": "grader", "detail": "unreadable reply"}
    return reply


class WorkerPool:
    """`size` worker processes started lazily; `timeout` seconds per request."""

    def __init__(self, size: int, timeout: float, worker_args: list[str]) -> None:
        self.size = size
        self.timeout = timeout
        self.counts: Counter[str] = Counter()
        self.workers: list[_Worker] = []
        self._argv = [sys.executable, "-m", "aapo.rewards.grading_worker", *worker_args]
        self._failed_starts = 0

    def close(self) -> None:
        for worker in self.workers:
            worker.kill()
        self.workers = []

    def _spawn(self) -> _Worker:
        env = dict(os.environ)
        package_root = str(Path(__file__).resolve().parents[2])
        paths = env.get("PYTHONPATH", "").split(os.pathsep) if env.get("PYTHONPATH") else []
        env["PYTHONPATH"] = os.pathsep.join([package_root, *paths])
        return _Worker(self._argv, env)

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self.counts["restarts"] += 1
        self.workers[self.workers.index(worker)] = self._spawn()

    def run(
        self, tasks: list[tuple[Key, dict[str, Any]]], budget: float | None = None
    ) -> dict[Key, dict[str, Any]]:
        """Send every task to a free worker; collect replies; enforce the deadlines. Tasks
        not yet sent when `budget` seconds have passed are answered `timeout` unsent."""
        self.counts["requests"] += len(tasks)
        while len(self.workers) < self.size:
            self.workers.append(self._spawn())
        queue: deque[tuple[Key, dict[str, Any]]] = deque(tasks)
        replies: dict[Key, dict[str, Any]] = {}
        give_up = time.monotonic() + budget if budget is not None else float("inf")
        while queue or any(w.key is not None for w in self.workers):
            while queue and time.monotonic() >= give_up:
                replies[queue.popleft()[0]] = {"status": "timeout", "detail": "not started"}
            for worker in self.workers:
                if worker.ready and worker.key is None and queue:
                    key, message = queue.popleft()
                    try:
                        worker.send(key, message, self.timeout)
                    except (OSError, ValueError):  # died while idle: retry on a successor
                        queue.appendleft((key, message))
                        self._replace(worker)
            self._wait(replies)
        return replies

    def _wait(self, replies: dict[Key, dict[str, Any]]) -> None:
        now = time.monotonic()
        busy = [w for w in self.workers if w.key is not None or not w.ready]
        deadlines = [w.deadline if w.ready else w.started + _STARTUP_TIMEOUT for w in busy]
        wait = max(0.0, min(deadlines, default=now) - now)
        # poll, not select: a training process may hold more than FD_SETSIZE (1024) files
        poller = select.poll()
        for worker in busy:
            poller.register(worker.fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        readable = {fd for fd, _ in poller.poll(wait * 1000)}
        for worker in [w for w in busy if w.fd in readable]:
            lines = worker.read_replies()
            if lines is None:  # the worker exited: a crash on this input, or at startup
                self._on_exit(worker, replies)
                continue
            for line in lines:
                if line.get("ready"):
                    worker.ready, self._failed_starts = True, 0
                elif worker.key is not None:
                    replies[worker.key], worker.key = line, None
        now = time.monotonic()
        for worker in list(self.workers):
            if worker.key is not None and now >= worker.deadline:
                replies[worker.key] = {"status": "timeout"}
                self._replace(worker)
            elif not worker.ready and now >= worker.started + _STARTUP_TIMEOUT:
                worker.kill()
                self.workers.remove(worker)
                raise RuntimeError(f"grading worker did not start within {_STARTUP_TIMEOUT}s")

    def _on_exit(self, worker: _Worker, replies: dict[Key, dict[str, Any]]) -> None:
        if worker.key is not None:
            replies[worker.key] = {"status": "error", "kind": "grader", "detail": "crashed"}
        elif not worker.ready:
            self._failed_starts += 1
            if self._failed_starts >= _MAX_FAILED_STARTS:
                worker.kill()
                self.workers.remove(worker)
                raise RuntimeError(
                    "grading worker exited during startup (see its stderr above); "
                    f"command: {' '.join(self._argv)}"
                )
        self._replace(worker)
