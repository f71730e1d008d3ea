"""Files written whole or not at all, their checksums, and JSON objects read back: what a
reference cache, its manifest and an imported completions file are identified and written by;
the final model's files are staged in a folder and moved into place (`move_into_place`);
checkpoint states, manifests and evaluation files are read back by `read_json_object`.

Left out: checkpoints, which are whole directories renamed into place (training/checkpoint.py).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

from aapo.messages import shown


def atomic_write(path: Path, data: bytes) -> None:
    """Write to a unique temporary name, flush to disk, rename: readers see all or nothing."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with tmp.open("wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def file_sha256(path: Path) -> str:
    """The file's sha256 as hex, read a block at a time."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def move_into_place(staging: Path, target: Path, last: tuple[str, ...] = ()) -> None:
    """Flush every file of `staging` to disk, then rename each entry into `target`, replacing
    what is there: every file is at all times the old one or the new one, whole (a full disk
    fails while `staging` is written, before anything in `target` changes). Names in `last`
    move after the others, so a kill in between leaves no new file that claims the set is
    complete (a model's config.json). `staging` and `target` must be on one filesystem."""
    for path in staging.rglob("*"):
        if path.is_file():
            with path.open("rb") as handle:
                os.fsync(handle.fileno())
    for path in sorted(staging.iterdir(), key=lambda p: (p.name in last, p.name)):
        destination = target / path.name
        if path.is_dir() and destination.is_dir():
            shutil.rmtree(destination)
        os.replace(path, destination)
    _fsync_directory(target)


def _fsync_directory(path: Path) -> None:
    """Make the renames into `path` durable (where the platform allows opening a folder)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_json_object(path: Path, error: type[Exception], hint: str = "") -> dict[str, Any]:
    """The JSON object in `path`; text that is not JSON, not UTF-8, or not an object raises
    `error` naming the file (and `hint`: what to do)."""
    try:
        value = json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as err:  # JSONDecodeError and UnicodeDecodeError both are
        raise error(f"{path} is not valid JSON ({err}){hint}") from err
    if not isinstance(value, dict):
        raise error(f"{path} must hold a JSON object, got {shown(value)}{hint}")
    return value
