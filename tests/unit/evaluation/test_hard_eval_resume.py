"""Eval resume with another batch size is refused: draws are seeded per batch."""

from pathlib import Path

import pytest

from aapo.config import ConfigError
from aapo.evaluation import EvalConfig
from aapo.evaluation.store import SampleStore, make_fingerprint


def _record(sample: int) -> dict:
    return {"benchmark": "toy", "id": "q0", "sample": sample, "prompt": "P", "completion": "x",
            "gold": "1", "correct": False, "status": "ok", "extracted": None,
            "truncated": False, "completion_tokens": 1}  # fmt: skip


def test_a_resume_with_another_batch_size_is_refused_naming_it(tmp_path: Path) -> None:
    model = tmp_path / "model"
    model.mkdir()
    (model / "model.safetensors").write_bytes(b"weights")
    first = make_fingerprint(EvalConfig(batch_size=3), str(model), "float32")
    with SampleStore.open(tmp_path / "out", first) as store:
        store.append([_record(0)])
    again = make_fingerprint(EvalConfig(batch_size=3), str(model), "float32")
    SampleStore.open(tmp_path / "out", again).close()  # same settings: resumed
    other = make_fingerprint(EvalConfig(batch_size=2), str(model), "float32")
    with pytest.raises(ConfigError, match=r"batch_size: 3 then, 2 now"):
        SampleStore.open(tmp_path / "out", other)


# what is read back is checked before it is trusted; one evaluation per folder -----------------

FINGERPRINT = {"model": "sha256:abc", "seed": 1}


def _write(out: Path, *records: dict) -> Path:
    with SampleStore.open(out, FINGERPRINT) as store:
        store.append(list(records))
    return out / "samples.jsonl"


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("correct", "yes", r"field 'correct' must be bool, got 'yes'"),
        ("correct", 1, r"field 'correct' must be bool, got 1"),
        ("sample", -1, r"field 'sample' must be >= 0, got -1"),
        ("sample", "0", r"field 'sample' must be int, got '0'"),
        ("sample", True, r"field 'sample' must be int, got True"),
        ("sample", 0.5, r"field 'sample' must be int, got 0.5"),
        ("completion_tokens", 2.5, r"field 'completion_tokens' must be int or null, got 2.5"),
        ("truncated", "no", r"field 'truncated' must be bool or null, got 'no'"),
        ("status", None, r"field 'status' must be str, got None"),
        ("gold", 1, r"field 'gold' must be str, got 1"),
    ],
)
def test_a_record_with_a_field_aapo_never_writes_is_refused_naming_line_and_field(
    tmp_path: Path, field, value, message
) -> None:
    import json

    samples = _write(tmp_path, _record(0), _record(1))
    lines = samples.read_text().splitlines()
    lines[1] = json.dumps({**_record(1), field: value})
    samples.write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=rf"samples.jsonl:2: {message}"):
        SampleStore.open(tmp_path, FINGERPRINT)


def test_a_missing_field_is_refused(tmp_path: Path) -> None:
    import json

    samples = _write(tmp_path, _record(0))
    record = _record(1)
    del record["status"]
    with samples.open("a") as handle:
        handle.write(json.dumps(record) + "\n")
    with pytest.raises(ConfigError, match=r"samples.jsonl:2: field 'status' must be str, got None"):
        SampleStore.open(tmp_path, FINGERPRINT)


def test_a_sample_written_twice_means_two_writers_and_is_refused(tmp_path: Path) -> None:
    samples = _write(tmp_path, _record(0), _record(1))
    samples.write_text(samples.read_text() + samples.read_text().splitlines()[0] + "\n")
    with pytest.raises(ConfigError, match=r"samples.jsonl:3: sample .* already written on line 1"):
        SampleStore.open(tmp_path, FINGERPRINT)


@pytest.mark.parametrize("text", ["{not json", "[1, 2]", ""])
def test_an_unreadable_fingerprint_file_is_refused_by_name(tmp_path: Path, text: str) -> None:
    _write(tmp_path, _record(0))
    (tmp_path / "fingerprint.json").write_text(text)
    with pytest.raises(ConfigError, match=r"fingerprint.json (is not valid JSON|must hold)"):
        SampleStore.open(tmp_path, FINGERPRINT)


def test_a_second_store_on_an_open_folder_is_refused_naming_the_holder(tmp_path: Path) -> None:
    import os

    from aapo.locks import DirectoryInUseError

    with SampleStore.open(tmp_path, FINGERPRINT):
        with pytest.raises(DirectoryInUseError, match=rf"pid {os.getpid()} .*aapo eval"):
            SampleStore.open(tmp_path, FINGERPRINT, overwrite=True)
        assert (tmp_path / "fingerprint.json").exists()  # the refused one deleted nothing
    SampleStore.open(tmp_path, FINGERPRINT).close()  # free again once closed
    assert not (tmp_path / ".aapo.lock").exists()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("{oops", r"results.json is not valid JSON"),
        ("[]", r"results.json must hold a JSON object"),
        ('{"model": "m"}', r"results.json: field 'benchmarks' must be a mapping"),
    ],
)
def test_results_read_back_for_compare_are_checked(tmp_path: Path, text, message) -> None:
    from aapo.evaluation.report import load_results

    (tmp_path / "results.json").write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_results(tmp_path)
