"""samples.jsonl: appended per batch, reused on resume, refused when settings differ."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aapo.config import ConfigError
from aapo.evaluation import EvalConfig
from aapo.evaluation.store import SampleStore, make_fingerprint, model_identity

FINGERPRINT = {"model": "sha256:abc", "temperature": 0.6, "seed": 42}


def _record(problem: str, sample: int, correct: bool = True) -> dict:
    return {
        "benchmark": "aime24", "id": problem, "sample": sample, "prompt": f"P {problem}",
        "completion": "\\boxed{1}", "gold": "1", "correct": correct, "status": "ok",
        "extracted": "1", "truncated": False, "completion_tokens": 3,
    }  # fmt: skip


def test_records_survive_reopening(tmp_path: Path) -> None:
    with SampleStore.open(tmp_path, FINGERPRINT) as store:
        store.append([_record("a", 0), _record("a", 1, correct=False)])
    assert json.loads((tmp_path / "fingerprint.json").read_text()) == FINGERPRINT
    with SampleStore.open(tmp_path, FINGERPRINT) as store:
        assert store.get(("aime24", "a", 1), "P a", "1")["correct"] is False
        assert store.get(("aime24", "b", 0), "P b", "1") is None
        store.append([_record("b", 0)])
    assert len((tmp_path / "samples.jsonl").read_text().splitlines()) == 3


def test_other_settings_are_refused(tmp_path: Path) -> None:
    with SampleStore.open(tmp_path, FINGERPRINT) as store:
        store.append([_record("a", 0)])
    changed = {**FINGERPRINT, "temperature": 1.0}
    with pytest.raises(ConfigError, match=r"temperature: 0.6 then, 1.0 now.*--overwrite"):
        SampleStore.open(tmp_path, changed)
    with SampleStore.open(tmp_path, changed, overwrite=True) as store:
        assert store.records == {}


def test_a_changed_prompt_or_gold_is_refused(tmp_path: Path) -> None:
    with SampleStore.open(tmp_path, FINGERPRINT) as store:
        store.append([_record("a", 0)])
        with pytest.raises(ConfigError, match="different prompt"):
            store.get(("aime24", "a", 0), "P a, reworded", "1")
        with pytest.raises(ConfigError, match="different gold"):
            store.get(("aime24", "a", 0), "P a", "2")


def test_a_line_cut_by_a_kill_is_dropped(tmp_path: Path) -> None:
    with SampleStore.open(tmp_path, FINGERPRINT) as store:
        store.append([_record("a", 0)])
    path = tmp_path / "samples.jsonl"
    with path.open("a") as handle:
        handle.write(json.dumps(_record("a", 1))[:20])  # no newline: the write was interrupted
    with SampleStore.open(tmp_path, FINGERPRINT) as store:
        assert list(store.records) == [("aime24", "a", 0)]
        store.append([_record("a", 1)])
    lines = path.read_text().splitlines()
    assert [json.loads(line)["sample"] for line in lines] == [0, 1]


def test_a_malformed_line_in_the_middle_is_an_error(tmp_path: Path) -> None:
    with SampleStore.open(tmp_path, FINGERPRINT) as store:
        store.append([_record("a", 0)])
    path = tmp_path / "samples.jsonl"
    path.write_text("garbage\n" + path.read_text())
    with pytest.raises(ConfigError, match=r"samples.jsonl:1: not a sample record"):
        SampleStore.open(tmp_path, FINGERPRINT)


def test_unicode_line_separators_inside_text_survive(tmp_path: Path) -> None:
    record = {**_record("a", 0), "completion": "x\u2028y\x1cz"}
    with SampleStore.open(tmp_path, FINGERPRINT) as store:
        store.append([record])
    with SampleStore.open(tmp_path, FINGERPRINT) as store:
        assert store.records[("aime24", "a", 0)]["completion"] == "x\u2028y\x1cz"


def test_samples_without_a_fingerprint_are_not_reused(tmp_path: Path) -> None:
    (tmp_path / "samples.jsonl").write_text(json.dumps(_record("a", 0)) + "\n")
    with pytest.raises(ConfigError, match="cannot be checked"):
        SampleStore.open(tmp_path, FINGERPRINT)


def test_fingerprint_follows_the_weights_not_the_path(tmp_path: Path) -> None:
    first, copy = tmp_path / "m1", tmp_path / "m2"
    for folder in (first, copy):
        folder.mkdir()
        (folder / "model.safetensors").write_bytes(b"\x01" * 3000)
    assert model_identity(str(first)) == model_identity(str(copy))
    (copy / "model.safetensors").write_bytes(b"\x01" * 2999 + b"\x02")  # same size, new weights
    assert model_identity(str(first)) != model_identity(str(copy))
    assert model_identity("Qwen/Qwen2.5-Math-7B") == "Qwen/Qwen2.5-Math-7B"
    config = EvalConfig(temperature=1.0)
    stamp = make_fingerprint(config, str(first), "float32")
    assert stamp["temperature"] == 1.0 and stamp["model"].startswith("sha256:")
    assert "limit" not in stamp and "num_samples" not in stamp  # these only select work
