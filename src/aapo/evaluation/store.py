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
malformed line anywhere else is an error.
"""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from aapo.config import ConfigError
from aapo.evaluation.config import EvalConfig

log = logging.getLogger(__name__)

SAMPLES_FILE = "samples.jsonl"
FINGERPRINT_FILE = "fingerprint.json"
Key = tuple[str, str, int]  # (benchmark, problem id, sample index)


class SampleStore:
    """Finished samples of one output folder, and the open file new ones are appended to."""

    def __init__(self, output_dir: Path, records: dict[Key, dict[str, Any]]) -> None:
        self.output_dir = output_dir
        self.records = records
        self._handle = (output_dir / SAMPLES_FILE).open("a", encoding="utf-8")

    @classmethod
    def open(
        cls, output_dir: str | Path, fingerprint: dict[str, Any], overwrite: bool = False
    ) -> SampleStore:
        """Open `output_dir` for an evaluation with `fingerprint`, resuming when it matches."""
        output_dir = Path(output_dir)
        samples, stamp = output_dir / SAMPLES_FILE, output_dir / FINGERPRINT_FILE
        if overwrite:
            samples.unlink(missing_ok=True)
            stamp.unlink(missing_ok=True)
        output_dir.mkdir(parents=True, exist_ok=True)
        if samples.exists() and samples.stat().st_size > 0:
            if not stamp.exists():
                raise ConfigError(
                    f"{samples} exists but {stamp} does not, so it cannot be checked for reuse; "
                    "use another --output_dir or --overwrite true"
                )
            _check_fingerprint(
                json.loads(stamp.read_text(encoding="utf-8")), fingerprint, output_dir
            )
            records = _read_records(samples)
        else:
            records = {}
        stamp.write_text(json.dumps(fingerprint, indent=2) + "\n", encoding="utf-8")
        return cls(output_dir, records)

    def get(self, key: Key, prompt: str, gold: str) -> dict[str, Any] | None:
        """The finished sample for `key`, after checking it was made for the same prompt/gold."""
        record = self.records.get(key)
        if record is None:
            return None
        for name, now in (("prompt", prompt), ("gold", gold)):
            if record[name] != now:
                raise ConfigError(
                    f"{self.output_dir / SAMPLES_FILE}: {key[0]} problem {key[1]!r} has a "
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

    def __enter__(self) -> SampleStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def record_key(record: dict[str, Any]) -> Key:
    return (record["benchmark"], record["id"], record["sample"])


def _check_fingerprint(before: dict[str, Any], now: dict[str, Any], output_dir: Path) -> None:
    changed = [
        f"{key}: {before.get(key)!r} then, {now.get(key)!r} now"
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
    for lineno, line in enumerate(data[:end].decode("utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            records[record_key(record)] = record
        except (json.JSONDecodeError, KeyError, TypeError) as err:
            raise ConfigError(f"{path}:{lineno}: not a sample record ({err})") from err
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
