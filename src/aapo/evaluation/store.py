"""`samples.jsonl`: every graded sample of an evaluation, appended as batches finish, and the
resume logic built on it.

Each line is one sample: benchmark, problem id, sample index, the prompt as the model saw it,
the completion, the extracted and gold answers and the verdict, so any score can be audited
and recomputed from this file alone. Lines are flushed after each batch. Rerunning with the
same output folder reuses every finished (benchmark, id, sample index); `fingerprint.json`
beside it records the settings that change what a sample is (model weights, dtype, backend,
sampling settings, seed, batch size, grader timeout), and a run whose settings differ is
refused rather than mixed in. The batch size is among them because a batch's draws come from
one seeded RNG stream shared by its rows: other batches mean other draws. Prompts and golds
are compared line by line when reused, which catches a changed template, system prompt, chat
template or data file. A line cut short by a kill is dropped (its sample is redone); a
malformed line anywhere else is an error, and so is a record whose fields are not what aapo
writes (types; one line per sample: a key written twice means two evaluations wrote the file),
naming the line and the field.

An open store holds the folder's lock (`aapo.locks`) until it is closed, so a second
evaluation writing the same folder is refused at start, naming the first; the results are
written before the store closes. `fingerprint.json` is written whole or not at all.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from aapo.config import ConfigError
from aapo.evaluation.config import EvalConfig
from aapo.files import atomic_write, read_json_object
from aapo.locks import DirectoryLock
from aapo.messages import shown

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
FINGERPRINT_FILE = "fingerprint.json"
Key = tuple[str, str, int]  # (benchmark, problem id, sample index)


class SampleStore:
    """Finished samples of one output folder, and the open file new ones are appended to."""

    def __init__(
        self, output_dir: Path, records: dict[Key, dict[str, Any]], lock: DirectoryLock
    ) -> None:
        self.output_dir = output_dir
        self.records = records
        self._lock = lock
        self._handle = (output_dir / SAMPLES_FILE).open("a", encoding="utf-8")

    @classmethod
    def open(
        cls, output_dir: str | Path, fingerprint: dict[str, Any], overwrite: bool = False
    ) -> SampleStore:
        """Open `output_dir` for an evaluation with `fingerprint`, resuming when it matches;
        the folder is this evaluation's until `close()`."""
        output_dir = Path(output_dir)
        lock = DirectoryLock(output_dir, "aapo eval").acquire()
        try:
            records = _open_records(output_dir, fingerprint, overwrite)
            return cls(output_dir, records, lock)
        except BaseException:
            lock.release()
            raise

    def get(self, key: Key, prompt: str, gold: str) -> dict[str, Any] | None:
        """The finished sample for `key`, after checking it was made for the same prompt/gold."""
        record = self.records.get(key)
        if record is None:
            return None
        for name, now in (("prompt", prompt), ("gold", gold)):
            if record[name] != now:
                raise ConfigError(
                    f"{self.output_dir / SAMPLES_FILE}: {key[0]} problem {shown(key[1])} has a "
                    f"different {name} than when it was sampled (template, system prompt, chat "
                    "template or data changed); use another --output_dir or --overwrite true"
                )
        return record

    def append(self, records: list[dict[str, Any]]) -> None:
        """Write one batch of finished samples and flush, so a kill loses at most this batch."""
        self._handle.write("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
        self._handle.flush()
        for r in records:
            self.records[record_key(r)] = r

    def close(self) -> None:
        self._handle.close()
        self._lock.release()

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record_key(record: dict[str, Any]) -> Key:
    return (record["benchmark"], record["id"], record["sample"])


def _open_records(
    output_dir: Path, fingerprint: dict[str, Any], overwrite: bool
) -> dict[Key, dict[str, Any]]:
    samples, stamp = output_dir / SAMPLES_FILE, output_dir / FINGERPRINT_FILE
    if overwrite:
        samples.unlink(missing_ok=True)
        stamp.unlink(missing_ok=True)
    records: dict[Key, dict[str, Any]] = {}
    if samples.exists() and samples.stat().st_size > 0:
        if not stamp.exists():
            raise ConfigError(
                f"{samples} exists but {stamp} does not, so it cannot be checked for reuse; "
                "use another --output_dir or --overwrite true"
            )
        _check_fingerprint(_read_fingerprint(stamp), fingerprint, output_dir)
        records = _read_records(samples)
    atomic_write(stamp, (json.dumps(fingerprint, indent=2) + "\n").encode())
    return records


def _read_fingerprint(path: Path) -> dict[str, Any]:
    return read_json_object(path, ConfigError, "; use another --output_dir or --overwrite true")


# what each field of a record must be, as harness.record and external.py write it
RECORD_FIELDS: dict[str, tuple[type, ...]] = {
    "benchmark": (str,),
    "id": (str,),
    "sample": (int,),
    "prompt": (str,),
    "gold": (str,),
    "completion": (str,),
    "correct": (bool,),
    "status": (str,),
    "truncated": (bool, type(None)),  # None: a completions file that does not say
    "extracted": (str, type(None)),
    "completion_tokens": (int, type(None)),
}


def check_record(where: str, record: Any) -> dict[str, Any]:
    """A record as aapo writes it: every field present with its type (`sample` and
    `completion_tokens` >= 0); a failure names `where` (file:line) and the field."""
    if not isinstance(record, dict):
        raise ConfigError(f"{where}: not a sample record (a JSON object), got {shown(record)}")
    for name, types in RECORD_FIELDS.items():
        value = record.get(name)
        wrong_int = type(value) is bool and bool not in types  # a bool is an int to Python
        if name not in record or not isinstance(value, types) or wrong_int:
            wanted = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            raise ConfigError(f"{where}: field {name!r} must be {wanted}, got {shown(value)}")
        if isinstance(value, int) and not isinstance(value, bool) and value < 0:
            raise ConfigError(f"{where}: field {name!r} must be >= 0, got {value}")
    return record


def _check_fingerprint(before: dict[str, Any], now: dict[str, Any], output_dir: Path) -> None:
    changed = [
        f"{key}: {shown(before.get(key))} then, {shown(now.get(key))} now"
        for key in sorted(set(before) | set(now))
        if before.get(key) != now.get(key)
    ]
    if changed:
        raise ConfigError(
            f"{output_dir} holds samples of an evaluation with other settings ("
            + "; ".join(changed)
            + "). Reusing them would mix two evaluations: use another --output_dir, or "
            "--overwrite true to discard them"
        )


def _read_records(path: Path) -> dict[Key, dict[str, Any]]:
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        # The last line has no newline: the run was killed while writing it. Cut it from the
        # file too, so the next append starts on a fresh line; its sample is redone.
        log.warning("%s: dropping an incomplete last line (interrupted write)", path)
        with path.open("r+b") as handle:
            handle.truncate(end)
    records: dict[Key, dict[str, Any]] = {}
    first_line: dict[Key, int] = {}
    for lineno, line in enumerate(data[:end].decode("utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConfigError(f"{path}:{lineno}: not a sample record ({err})") from err
        key = record_key(check_record(f"{path}:{lineno}", record))
        if key in first_line:
            raise ConfigError(
                f"{path}:{lineno}: sample {key} was already written on line {first_line[key]}: "
                "two evaluations wrote this file; use another --output_dir or --overwrite true"
            )
        records[key], first_line[key] = record, lineno
    return records


def make_fingerprint(config: EvalConfig, model_path: str, dtype: str) -> dict[str, Any]:
    """The settings that change what a sample is; a resumed run must match them all."""
    return {
        "model": model_identity(model_path),
        "dtype": dtype,
        "backend": config.backend,
        "temperature": config.temperature,
        "top_p": config.top_p,
        "max_new_tokens": config.max_new_tokens,
        "seed": config.seed,
        "batch_size": config.batch_size,  # draws are seeded per batch (see harness.py)
        "grading_timeout": config.grading_timeout,
    }


def model_identity(model_path: str) -> str:
    """A local model's weights digest (size plus first and last MiB of each weights file, cheap
    even for 15 GB checkpoints); a hub id stands for itself."""
    folder = Path(model_path)
    files = sorted(p for p in folder.glob("*") if p.suffix in (".safetensors", ".bin"))
    if not files:
        return model_path
    digest = hashlib.sha256()
    for path in files:
        size = path.stat().st_size
        digest.update(f"{path.name}:{size}".encode())
        with path.open("rb") as handle:
            digest.update(handle.read(1 << 20))
            handle.seek(max(0, size - (1 << 20)))
            digest.update(handle.read(1 << 20))
    return f"sha256:{digest.hexdigest()[:16]}"
