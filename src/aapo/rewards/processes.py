"""Worker processes that end with everything they started.

Both kinds of worker (the grader's pool, `workers.py`; a user's reward function,
`reward_process.py`) are started by `start` in a session of their own, so each worker leads a
process group that also holds whatever it starts: a reward that runs a checker with
`subprocess`, a pool, a shell pipeline. `kill_group` SIGKILLs that whole group, at a deadline
and at close, so nothing a reward started outlives the run. A Ctrl-C in the terminal goes to
the terminal's foreground group, which is no longer the workers': they are ended by the
process that started them, which already closes them on every way out.

Only the standard library is imported here (the reward worker imports this module too).
Left out: a descendant that starts a session of its own (`setsid`, a daemon) leaves the group
and is not found; when the training process itself is SIGKILLed, a reward worker dies with it
(`reward_process` sets PR_SET_PDEATHSIG) but what the worker started is orphaned, not killed.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess


def start(argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    """A worker speaking on pipes, leading a new session (and process group) of its own."""
    return subprocess.Popen(
        argv,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
        close_fds=True,
        start_new_session=True,
    )


def kill_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGKILL the worker and every process of its group, reap the worker, close its pipes.

    The group is killed whether or not the worker itself has already exited: its children
    keep the group (and its id) alive after the worker is gone."""
    with contextlib.suppress(ProcessLookupError, PermissionError):  # no member left
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        proc.kill()  # the worker, had it left its group
    proc.wait()
    for stream in (proc.stdin, proc.stdout):
        with contextlib.suppress(OSError):  # a request still buffered for the dead process
            if stream is not None:
                stream.close()
