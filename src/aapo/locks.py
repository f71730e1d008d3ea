"""One writer per output folder: a lock that a second `aapo train`, `aapo reference` or
`aapo eval` writing the same folder meets at start, and is refused by.

`DirectoryLock(folder, command).acquire()` opens `folder/.aapo.lock` and takes
`fcntl.flock(LOCK_EX | LOCK_NB)` on it, then writes into the file who holds it (pid, host,
start time, command), which a second writer's refusal quotes. The kernel drops a flock when
the process holding it ends, however it ends (SIGKILL, a crash, the OOM killer), so a lock
left by a killed run is stale by construction: the next writer takes it over, saying whose it
was. There is no guessing from pids (which are reused, and mean nothing on another machine)
and no lock file to delete by hand. `release()` deletes the file while still holding it; a
writer that opened the file just before then locks a deleted file, which `acquire` notices
(the path no longer names the file it locked) and retries on the new one.

The lock belongs to an open file, not to a process: a second `DirectoryLock` on one folder
in the same process is refused too, and in a run of several processes (`accelerate launch`)
only the main process takes it (`training/run_dir.claim` tells the others the outcome). The
descriptor is not inherited across `exec` (reward and grading workers never hold it).

NFS and other shared filesystems: Linux carries a flock over NFS as a POSIX lock held by the
server (NLM with NFSv3, part of the protocol in v4), so processes on two machines writing one
folder see each other, with caveats. A mount with `nolock` or `local_lock=flock` (or `all`)
keeps locks on each machine, so two machines can both take it. After a client dies, the
server keeps its lock until the client's lease or the grace period ends (tens of seconds),
so an immediate restart elsewhere is refused, naming the dead holder: wait and retry. A
filesystem without lock support (Lustre mounted without `-o flock`, some FUSE mounts) fails
the call; aapo then warns that the folder is not locked and goes on, rather than refusing to
run at all.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
import sys
import time
import weakref
from pathlib import Path
from typing import Any

from aapo.config import ConfigError

log = logging.getLogger("aapo")
LOCK_FILE = ".aapo.lock"


class DirectoryInUseError(ConfigError):
    """Another process holds the folder's lock; the message names it (pid, host, command)."""


class DirectoryLock:
    """The lock on one output folder, held from `acquire()` to `release()` (or a `with`)."""

    def __init__(self, directory: str | Path, command: str) -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_FILE
        self.command = command
        self._fd: int | None = None
        self._finalizer: Any = None
        self._created: list[Path] = []

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> DirectoryLock:
        """Take the lock, or raise DirectoryInUseError naming its holder. Folders it has to
        create are removed again at release if nothing was written into them."""
        missing = [p for p in (self.directory, *self.directory.parents) if not p.exists()]
        self.directory.mkdir(parents=True, exist_ok=True)
        self._created = missing
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read(fd)
                os.close(fd)
                self._remove_created()
                raise DirectoryInUseError(
                    f"{self.directory} is being written by {describe(holder)}; wait for it to "
                    f"finish (or stop it: kill {holder.get('pid', 'its pid')}), or choose "
                    "another folder"
                ) from None
            except OSError as err:  # no lock support on this filesystem
                os.close(fd)
                log.warning(
                    "cannot lock %s (%s): a second process writing it will not be noticed",
                    self.directory, err.strerror or err,
                )  # fmt: skip
                return self
            if _names(self.path, fd):
                break
            os.close(fd)  # released and deleted by its holder meanwhile: lock the new file
        previous = _read(fd)
        if previous:  # a holder that ended without releasing: killed, crashed
            log.warning(
                "%s: taking over the lock of %s, which no longer runs", self.directory,
                describe(previous),
            )  # fmt: skip
        mine = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "command": self.command,
            "argv": " ".join(sys.argv)[:500],
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(mine) + "\n").encode(), 0)
        self._fd = fd
        self._finalizer = weakref.finalize(self, _release, fd, self.path)
        return self

    def release(self) -> None:
        """Delete the lock file and let go (idempotent)."""
        if self._fd is not None:
            self._finalizer.detach()
            _release(self._fd, self.path)
            self._fd = None
            self._remove_created()

    def _remove_created(self) -> None:
        """The folders `acquire` made, innermost first, where they are still empty."""
        for folder in self._created:
            try:
                folder.rmdir()
            except OSError:  # written into (or another process's now): kept
                break
        self._created = []

    def __enter__(self) -> DirectoryLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def describe(holder: dict[str, Any]) -> str:
    """`pid 123 on host h (aapo train, started ...)` from a lock file's contents."""
    if not holder.get("pid"):
        return "another process (it has not written who it is yet)"
    started = f", started {holder['started']}" if holder.get("started") else ""
    return (
        f"pid {holder['pid']} on host {holder.get('host', '?')} "
        f"({holder.get('command', 'aapo')}{started})"
    )


def _read(fd: int) -> dict[str, Any]:
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode("utf-8", "replace") or "{}")
    except ValueError:
        return {}
    return info if isinstance(info, dict) else {}


def _names(path: Path, fd: int) -> bool:
    """Whether `path` still names the file open as `fd`."""
    try:
        here = os.stat(path)
    except FileNotFoundError:
        return False
    mine = os.fstat(fd)
    return (here.st_dev, here.st_ino) == (mine.st_dev, mine.st_ino)


def _release(fd: int, path: Path) -> None:
    with contextlib.suppress(OSError):
        if _names(path, fd):
            path.unlink()
    os.close(fd)
