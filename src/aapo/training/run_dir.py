"""A run directory belongs to one run: who may write `output_dir` (and a reference cache).

`claim` is called before any model loads. The main process takes the folder's lock
(`aapo.locks`: a second writer is refused, naming the holder; a lock left by a killed run
is taken over) and, for `aapo train`, checks that a fresh run does not land on another run's
files: a folder holding a run is refused unless the run resumes it (`--resume`) or replaces it
(`--overwrite_output_dir true`, whose `clear` deletes the old run's files when the new run
starts, so no checkpoint, log line or model of it mixes with the new one). Every process of a
launch learns the outcome, so a refusal stops them all, before any collective could wait on
the main process forever.

What counts as a run's files is `RUN_ENTRIES`: what `aapo train` writes there. Files of
others (a `train.log` an outside runner keeps there, notes) are neither a run nor cleared.
The final save's tokenizer files and model card are not in it: the final save rewrites them.
"""

from __future__ import annotations

import errno
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aapo.config import ConfigError
from aapo.locks import DirectoryInUseError, DirectoryLock
from aapo.training.distributed import gather_lists

RUN_ENTRIES = (
    "config.yaml",
    "metrics.jsonl",
    "completions.jsonl",
    "tensorboard",
    "wandb",
    "checkpoint-*",
    "final.tmp",
    "*.safetensors",
    "*.safetensors.index.json",
    "config.json",
    "generation_config.json",
    "adapter_config.json",
)


def claim(
    directory: str | Path,
    command: str,
    accelerator: Any,
    check: Callable[[], None] | None = None,
    main: bool | None = None,
    option: str = "output_dir",
) -> DirectoryLock | None:
    """The folder's lock, taken by the main process (`main`, default the accelerator's) once
    the folder is known usable (`check_writable_dir`, naming `option`), which then runs `check`
    under it; the outcome reaches every process of the launch, and a refusal
    (DirectoryInUseError, or whatever `check` raises) raises on the main process and as a
    ConfigError with its message on the others. → the lock on the main process, None
    elsewhere."""
    lock, failure = None, None
    if accelerator.is_main_process if main is None else main:
        try:
            lock = _lock_usable(Path(directory), command, option)
            if check is not None:
                check()
        except Exception as err:  # every process must hear of it, whatever it is
            if lock is not None:
                lock.release()
            lock, failure = None, err
    refusals = [r for r in gather_lists(accelerator, [failure and str(failure)]) if r]
    if failure is not None:
        raise failure
    if refusals:
        raise ConfigError(refusals[0])
    return lock


def run_entries(directory: Path) -> list[str]:
    """The names in `directory` that belong to an `aapo train` run, sorted."""
    if not directory.is_dir():
        return []
    return sorted({p.name for pattern in RUN_ENTRIES for p in directory.glob(pattern)})


def check_fresh(directory: Path, resume: str | None, overwrite: bool) -> None:
    """A run may start in `directory`: it holds no run, or this run resumes that run (from
    one of its checkpoints: `latest` or a path inside it) or replaces it on purpose."""
    if resume and overwrite:
        raise ConfigError(
            "--resume continues the run in output_dir and --overwrite_output_dir true deletes "
            "it: pass one of them"
        )
    found = run_entries(directory)
    if not found or overwrite:
        return
    listed = ", ".join(found[:6]) + (f" and {len(found) - 6} more" if len(found) > 6 else "")
    if not resume:
        raise ConfigError(
            f"output_dir {directory} already holds a run ({listed}); continue it with --resume, "
            "replace it with --overwrite_output_dir true, or choose another output_dir"
        )
    if resume != "latest" and Path(resume).resolve().parent != directory.resolve():
        raise ConfigError(
            f"output_dir {directory} holds another run ({listed}) than the checkpoint "
            f"{resume} resumes; resume into that checkpoint's own folder or an empty one"
        )


def clear(directory: Path) -> list[str]:
    """Delete the previous run's files (`RUN_ENTRIES`) from `directory`; → their names."""
    found = run_entries(directory)
    for name in found:
        path = directory / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink(missing_ok=True)
    return found


def _lock_usable(path: Path, command: str, option: str) -> DirectoryLock:
    """The folder's lock once the folder is known usable: the lock makes the folders it needs
    (and removes them again, empty, when a refused run lets go), then a write is tried."""
    _check_not_a_file(path, option)
    try:
        lock = DirectoryLock(path, command).acquire()
    except DirectoryInUseError:
        raise
    except OSError:  # the folder cannot be made or locked: say why in one line
        check_writable_dir(path, option)
        raise
    try:
        check_writable_dir(path, option)
    except ConfigError:
        lock.release()
        raise
    return lock


def _check_not_a_file(path: Path, option: str) -> None:
    existing = next(p for p in (path, *path.parents) if p.exists())
    if not existing.is_dir():
        where = "is a file" if existing == path else f"is inside {str(existing)!r}, a file"
        raise ConfigError(f"{option} {str(path)!r} {where}: choose a directory")


def check_writable_dir(path: Path, option: str) -> None:
    """The directory the option `option` names exists or can be made, and a file can be
    written and synced in it (a full disk and a read-only mount fail here, whoever runs)."""
    _check_not_a_file(path, option)
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path, prefix=".aapo-write-test-") as probe:
            probe.write(b"aapo")
            probe.flush()
            os.fsync(probe.fileno())
    except OSError as err:
        why = "its disk is full" if err.errno == errno.ENOSPC else "it is not writable"
        raise ConfigError(
            f"{option} {str(path)!r} cannot be used: {why} ({err.strerror or err}): choose "
            f"another {option}"
        ) from err
