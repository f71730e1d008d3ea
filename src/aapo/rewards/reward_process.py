"""A user's reward function in its own process, so a call that hangs can be killed.

`ProcessReward(spec, kwargs)` starts `python -m aapo.rewards.reward_process`, which rebuilds
the function with `aapo.rewards.get_reward_function(spec, **kwargs)` (no pickled callables)
and serves calls. `call(timeout, **columns)` sends one call and waits at most `timeout`
seconds; a worker that misses it is killed with every process it started (SIGKILL to its
process group: nothing it does can delay that, `processes.py`) and a fresh one is started for
the next call, so an abandoned call never keeps running and never keeps the training process
from exiting; `close()` kills the group the same way. The worker runs torch/OpenMP with one thread.

Protocol on the worker's stdin and a private copy of its stdout (fd 1 itself is pointed at
stderr, so a print in the user's code cannot corrupt it): frames of an 8-byte length and a
pickle. Pickle is used both ways because columns and scores may be numpy or torch values;
both ends run the same user's code, so it crosses no trust boundary. First frame in:
{"spec", "kwargs", "imports", "sys_path"}; reply {"ready": True} or {"error": text}. Then one
frame per call (the call's keyword arguments); reply {"ok": scores, "metrics": dict} (metrics
from the function's `pop_metrics()`, if any), {"error": text} or {"bad": text} (unpicklable).

Only the standard library (and `processes.py`, which imports nothing else) is imported here,
so the worker starts fast.
Left out: Windows (select.poll); keeping a reward's in-memory state across a killed worker.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import pickle
import select
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, BinaryIO

from aapo.messages import shown
from aapo.rewards import processes

STARTUP_TIMEOUT = 180.0  # a reward module importing torch on a loaded machine can be slow
_HEADER = struct.Struct(">Q")
_ONE_THREAD = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")


class RewardWorkerError(RuntimeError):
    """The worker could not be started or could not build the reward function."""


class ProcessReward:
    """The reward `spec` (an import path or a plug-in's registered name) in a worker process."""

    def __init__(
        self,
        spec: str,
        kwargs: dict[str, Any] | None = None,
        imports: list[str] | tuple[str, ...] = (),
        startup_timeout: float = STARTUP_TIMEOUT,
    ) -> None:
        self.spec = spec
        self.kwargs = dict(kwargs or {})
        self.imports = list(imports)
        self.startup_timeout = startup_timeout
        self.__name__ = spec.replace(":", ".").rsplit(".", 1)[-1]
        self._proc: subprocess.Popen[bytes] | None = None
        self._ready = False
        self._start()
        self._wait_ready()  # a mistyped path or a failing import is reported now, not at step 1

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def call(self, timeout: float, **call_kwargs: Any) -> tuple[str, Any, dict[str, float]]:
        """→ (status, value, metrics): ("ok", scores), ("error" | "timeout", why) or
        ("bad", why) for a result that cannot be sent back (a programming error)."""
        if self._proc is None:
            self._start()
        if not self._ready:
            self._wait_ready()
        try:
            _write_frame(self._stdin(), call_kwargs)
        except (BrokenPipeError, OSError):
            return "error", self._died("before the call"), {}
        try:
            reply = self._read(timeout)
        except EOFError:
            return "error", self._died("during the call"), {}
        if reply is None:
            self._kill()
            self._start()  # the next call's worker starts while training goes on
            return "timeout", f"took longer than {timeout}s; its worker was killed", {}
        metrics = reply.get("metrics") or {}
        for status in ("ok", "error", "bad"):
            if status in reply:
                return status, reply[status], metrics
        return "error", f"unreadable reply {shown(reply)}", {}

    def close(self) -> None:
        """Kill the worker (a later call starts a new one)."""
        self._kill()

    def _start(self) -> None:
        env = dict(os.environ, **dict.fromkeys(_ONE_THREAD, "1"), TOKENIZERS_PARALLELISM="false")
        package_root = str(Path(__file__).resolve().parents[2])
        env["PYTHONPATH"] = os.pathsep.join(
            [package_root, *filter(None, env.get("PYTHONPATH", "").split(os.pathsep))]
        )
        self._proc = processes.start([sys.executable, "-m", "aapo.rewards.reward_process"], env)
        self._buffer = b""
        self._ready = False
        init = {"spec": self.spec, "kwargs": self.kwargs, "imports": self.imports,
                "sys_path": list(sys.path)}  # fmt: skip
        _write_frame(self._stdin(), init)

    def _wait_ready(self) -> None:
        try:
            reply = self._read(self.startup_timeout)
        except EOFError:
            reply = {"error": f"its worker exited with code {self._exit_code()} while starting"}
        if reply is None:
            reply = {"error": f"its worker did not start within {self.startup_timeout}s"}
        if "error" in reply:
            self._kill()
            raise RewardWorkerError(f"reward {shown(self.spec)}: {reply['error']}")
        self._ready = True

    def _stdin(self) -> BinaryIO:
        assert self._proc is not None and self._proc.stdin is not None
        return self._proc.stdin  # type: ignore[return-value]

    def _read(self, timeout: float) -> dict[str, Any] | None:
        """The next frame, None when `timeout` passed first; EOFError when the worker exited."""
        assert self._proc is not None and self._proc.stdout is not None
        fd = self._proc.stdout.fileno()
        deadline = time.monotonic() + timeout
        poller = select.poll()
        poller.register(fd, select.POLLIN | select.POLLHUP | select.POLLERR)
        while True:
            if len(self._buffer) >= _HEADER.size:
                size = _HEADER.unpack_from(self._buffer)[0]
                end = _HEADER.size + size
                if len(self._buffer) >= end:
                    frame, self._buffer = self._buffer[_HEADER.size : end], self._buffer[end:]
                    return pickle.loads(frame)
            left = deadline - time.monotonic()
            if left <= 0 or not poller.poll(left * 1000):
                return None
            chunk = os.read(fd, 1 << 20)
            if not chunk:
                raise EOFError
            self._buffer += chunk

    def _died(self, when: str) -> str:
        code = self._exit_code()
        self._kill()
        return f"its worker died {when} (exit code {code}); a new one is started"

    def _exit_code(self) -> int | None:
        assert self._proc is not None
        with contextlib.suppress(subprocess.TimeoutExpired):
            return self._proc.wait(timeout=5)
        return None

    def _kill(self) -> None:
        proc, self._proc, self._ready = self._proc, None, False
        if proc is not None:
            processes.kill_group(proc)  # with whatever the user's function started


def _write_frame(stream: BinaryIO, obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    stream.write(_HEADER.pack(len(data)) + data)
    stream.flush()


def _read_frame(stream: BinaryIO) -> Any:
    header = stream.read(_HEADER.size)
    if len(header) < _HEADER.size:
        return None
    return pickle.loads(stream.read(_HEADER.unpack(header)[0]))


def _die_with_parent() -> None:
    """Linux: SIGKILL this worker when the training process dies, even mid-call. (The kernel
    sends it when the thread that started the worker ends: RewardScorer starts workers from
    the thread that builds or calls it, the training loop's.) Elsewhere, an idle worker still
    exits when its stdin closes."""
    with contextlib.suppress(Exception):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG


def _build(init: dict[str, Any]) -> Any:
    sys.path[:0] = [p for p in init["sys_path"] if p not in sys.path]
    for module in init["imports"]:  # plug-ins that register rewards by name
        importlib.import_module(module)
    from aapo.rewards import get_reward_function

    function = get_reward_function(init["spec"], **init["kwargs"])
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(1)
    return function


def _reply(function: Any, request: dict[str, Any]) -> bytes:
    try:
        reply: dict[str, Any] = {"ok": function(**request)}
    except Exception as err:  # a user's function may raise anything; the parent counts it
        reply = {"error": f"raised {type(err).__name__}: {err}"}
    pop = getattr(function, "pop_metrics", None)
    if callable(pop):
        with contextlib.suppress(Exception):
            reply["metrics"] = dict(pop())
    try:
        return pickle.dumps(reply, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception as err:
        bad = f"returned a value that cannot be sent back ({type(err).__name__}: {err})"
        return pickle.dumps({"bad": bad})


def main() -> int:
    replies = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # the user's prints go to stderr
    requests = sys.stdin.buffer
    _die_with_parent()
    init = _read_frame(requests)
    if init is None:
        return 0
    try:
        function = _build(init)
    except Exception as err:
        _write_frame(replies, {"error": f"{type(err).__name__}: {err}"})
        return 1
    _write_frame(replies, {"ready": True})
    while (request := _read_frame(requests)) is not None:
        data = _reply(function, request)
        try:
            replies.write(_HEADER.pack(len(data)) + data)
            replies.flush()
        except BrokenPipeError:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
