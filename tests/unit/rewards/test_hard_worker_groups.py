"""Worker processes end with everything they started: a reward's or a grader's child process
is killed with its worker, at the worker's deadline and at close."""

import os
import signal
import sys
import time
from pathlib import Path

import pytest

from aapo.rewards.reward_process import ProcessReward
from aapo.rewards.workers import WorkerPool

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "integration"))  # rewards_for_tests

# A stand-in grading worker: starts a long sleep, says ready, then never answers.
SILENT_WORKER = """
import json, os, subprocess, sys
child = subprocess.Popen(["sleep", "300"], stdin=subprocess.DEVNULL,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
with open(sys.argv[1], "a") as handle:
    handle.write(f"{child.pid}\\n")
print(json.dumps({"ready": True}), flush=True)
for line in sys.stdin:
    pass
"""


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as handle:
            state = handle.read().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return False
    return state not in ("Z", "X")


def gone(pid: int, within: float = 10.0) -> bool:
    deadline = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def pids(path: Path) -> list[int]:
    return [int(line) for line in path.read_text().split()] if path.exists() else []


@pytest.fixture
def sleepers(tmp_path, monkeypatch):
    """The file the children's pids go to; any child still running at the end is killed."""
    path = tmp_path / "sleepers"
    monkeypatch.setenv("AAPO_SLEEPER_PIDS", str(path))
    yield path
    for pid in pids(path):
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


def test_a_rewards_child_is_killed_when_the_worker_is_closed(sleepers):
    reward = ProcessReward("rewards_for_tests:start_sleeper")
    try:
        status, value, _ = reward.call(60.0, prompts=["p"], completions=["c"])
        assert (status, value) == ("ok", [0.0])
        (child,) = pids(sleepers)
        assert alive(child)  # it outlives the call: only the worker's end can stop it
    finally:
        reward.close()
    assert gone(child)


def test_a_rewards_child_is_killed_with_a_worker_killed_at_its_timeout(sleepers, monkeypatch):
    monkeypatch.setenv("AAPO_SLEEPER_HANG", "1")
    reward = ProcessReward("rewards_for_tests:start_sleeper")
    try:
        deadline = time.monotonic() + 60
        while not pids(sleepers) and time.monotonic() < deadline:  # a slow start is no timeout
            status, _, _ = reward.call(5.0, prompts=["p"], completions=["c"])
        assert status == "timeout"
        (child,) = pids(sleepers)
        assert gone(child)
    finally:
        reward.close()


def test_a_grading_workers_child_is_killed_at_the_deadline_and_at_close(sleepers):
    pool = WorkerPool(1, timeout=2.0, worker_args=[])
    pool._argv = [sys.executable, "-c", SILENT_WORKER, str(sleepers)]
    try:
        replies = pool.run([(("k",), {"answer": "1"})])
        assert replies[("k",)]["status"] == "timeout"
        first = pids(sleepers)[0]
        assert gone(first)  # killed with the worker that missed its deadline
        deadline = time.monotonic() + 60
        while len(pids(sleepers)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)  # the replacement worker starts its own child
        second = pids(sleepers)[1]
        assert alive(second)
    finally:
        pool.close()
    assert gone(second)
