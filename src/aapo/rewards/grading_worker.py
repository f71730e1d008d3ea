"""The grading worker process: `python -m aapo.rewards.grading_worker`.

Started and owned by `grading.Grader`. It reads one JSON request per line on stdin and writes
one JSON reply per line on a private copy of stdout (fd 1 itself is pointed at stderr, so a
stray print from a library cannot corrupt the protocol):

    {"op": "grade", "answer": str, "source": "boxed" | "answer_tag", "gold": str}
        -> {"status": "ok", "correct": bool} | {"status": "timeout"}
           | {"status": "error", "kind": "gold" | "grader", "detail": str}
    {"op": "check_gold", "gold": str} -> {"status": "ok"} | the same failures

Each request runs under a soft deadline (SIGALRM via `setitimer`, raised as a BaseException
so that the broad `except Exception` blocks in sympy and math-verify cannot swallow it). Work
stuck inside one C call (a huge integer power) cannot be interrupted that way: the parent
kills the process at the hard deadline and starts another. The worker also caps its own
address space, so a runaway expression fails with MemoryError instead of swapping the host.
It exits when stdin closes, which is also what happens when the parent dies.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from typing import Any, BinaryIO


class _Deadline(BaseException):
    """The soft deadline of one request passed."""


def _on_alarm(signum: int, frame: Any) -> None:
    raise _Deadline


def _handle(request: dict[str, Any]) -> dict[str, Any]:
    from aapo.rewards import equivalence
    from aapo.rewards.errors import GoldAnswerError

    try:
        if request["op"] == "check_gold":
            equivalence.check_gold(request["gold"])
            return {"status": "ok"}
        correct = equivalence.is_equivalent(request["answer"], request["source"], request["gold"])
        return {"status": "ok", "correct": bool(correct)}
    except GoldAnswerError as error:
        return {"status": "error", "kind": "gold", "detail": error.reason}
    except Exception as error:  # RecursionError, MemoryError, sympy's own failures
        return {"status": "error", "kind": "grader", "detail": type(error).__name__}


def _serve(requests: BinaryIO, replies: BinaryIO, soft_timeout: float) -> None:
    for line in requests:
        try:
            request = json.loads(line)
        except ValueError:
            reply: dict[str, Any] = {"status": "error", "kind": "grader", "detail": "bad request"}
        else:
            try:
                signal.setitimer(signal.ITIMER_REAL, soft_timeout)
                try:
                    reply = _handle(request)
                finally:
                    signal.setitimer(signal.ITIMER_REAL, 0)
            except _Deadline:
                reply = {"status": "timeout"}
        replies.write(json.dumps(reply).encode("utf-8") + b"\n")
        replies.flush()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--soft-timeout", type=float, required=True)
    parser.add_argument("--memory-mb", type=int, default=0, help="address-space cap; 0 = none")
    parser.add_argument("--no-audit", action="store_true", help="skip the audit hook (tests)")
    args = parser.parse_args(argv)

    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    # Ctrl-C belongs to the trainer; the worker ends when its stdin closes.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGALRM, _on_alarm)
    if args.memory_mb > 0:
        import resource

        limit = args.memory_mb * 1024 * 1024
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    from aapo.rewards import equivalence

    equivalence.install_guards(audit=not args.no_audit)
    replies.write(json.dumps({"ready": True, "pid": os.getpid()}).encode("utf-8") + b"\n")
    replies.flush()
    _serve(sys.stdin.buffer, replies, args.soft_timeout)


if __name__ == "__main__":
    main()
