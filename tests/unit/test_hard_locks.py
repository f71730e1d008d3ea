"""The output-folder lock between real processes: one holder at a time, a refusal naming it,
a lock left by a killed holder taken over, nothing left behind."""

import fcntl
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from aapo.locks import LOCK_FILE, DirectoryInUseError, DirectoryLock

HOLD = """
import sys, time
from aapo.locks import DirectoryInUseError, DirectoryLock
try:
    lock = DirectoryLock(sys.argv[1], "holder").acquire()
except DirectoryInUseError:
    print("refused", flush=True)
    sys.exit(0)
print("held", flush=True)
time.sleep(float(sys.argv[2]))
lock.release()
"""


def _holder(folder: Path, seconds: float = 300) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(folder), str(seconds)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
    )
    return proc


def test_a_second_process_is_refused_naming_the_holder_until_it_ends(tmp_path):
    folder = tmp_path / "run"
    holder = _holder(folder)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(DirectoryInUseError) as info:
            DirectoryLock(folder, "second").acquire()
        assert f"pid {holder.pid} on host" in str(info.value) and "(holder, started" in str(
            info.value
        )
        assert f"kill {holder.pid}" in str(info.value)
    finally:
        holder.kill()
        holder.wait()
    with DirectoryLock(folder, "second"):  # SIGKILL left the file behind: taken over
        pass
    assert not (folder / LOCK_FILE).exists()


def test_a_lock_left_by_a_killed_holder_is_taken_over_and_named(tmp_path, caplog):
    folder = tmp_path / "run"
    holder = _holder(folder)
    assert holder.stdout.readline().strip() == "held"
    holder.kill()
    holder.wait()
    assert (folder / LOCK_FILE).exists()  # a kill leaves the file; the kernel dropped the lock
    with caplog.at_level(logging.WARNING, logger="aapo"):
        lock = DirectoryLock(folder, "next").acquire()
    assert f"taking over the lock of pid {holder.pid}" in caplog.text
    lock.release()


def test_of_processes_starting_together_exactly_one_holds_it(tmp_path):
    folder = tmp_path / "run"
    procs = [_holder(folder, seconds=5) for _ in range(4)]
    try:
        answers = sorted(p.stdout.readline().strip() for p in procs)
    finally:
        for p in procs:
            p.kill()
            p.wait()
    assert answers == ["held", "refused", "refused", "refused"]


def test_a_second_lock_in_the_same_process_is_refused_too(tmp_path):
    first = DirectoryLock(tmp_path, "first").acquire()
    with pytest.raises(DirectoryInUseError, match=rf"pid {os.getpid()} .*\(first, started"):
        DirectoryLock(tmp_path, "second").acquire()
    first.release()


def test_a_holder_that_has_not_written_its_name_yet_is_still_a_holder(tmp_path):
    fd = os.open(tmp_path / LOCK_FILE, os.O_RDWR | os.O_CREAT)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        with pytest.raises(DirectoryInUseError, match="has not written who it is yet"):
            DirectoryLock(tmp_path, "second").acquire()
    finally:
        os.close(fd)


def test_release_leaves_nothing_it_made(tmp_path):
    folder = tmp_path / "a" / "b"
    with DirectoryLock(folder, "x"):
        assert (folder / LOCK_FILE).exists()
    assert not (tmp_path / "a").exists()  # made for the lock, empty again: removed
    with DirectoryLock(folder, "x"):
        (folder / "kept.txt").write_text("written meanwhile")
    assert sorted(p.name for p in folder.iterdir()) == ["kept.txt"]


def test_a_file_deleted_between_open_and_lock_is_not_held(tmp_path, monkeypatch):
    """The holder releases (deletes the file) after a writer opened it and before the writer
    locks it: the writer must lock the file at the path, not the deleted one, or a third
    writer would take the path's new file and two would write."""
    from aapo import locks

    real_flock, calls = fcntl.flock, {"n": 0}

    def released_meanwhile(fd, operation):
        calls["n"] += 1
        if calls["n"] == 1:
            (tmp_path / LOCK_FILE).unlink()  # the previous holder's release
        return real_flock(fd, operation)

    monkeypatch.setattr(locks.fcntl, "flock", released_meanwhile)
    with DirectoryLock(tmp_path, "second"):
        monkeypatch.setattr(locks.fcntl, "flock", real_flock)
        assert calls["n"] == 2  # it noticed and locked the new file
        with pytest.raises(DirectoryInUseError):
            DirectoryLock(tmp_path, "third").acquire()
