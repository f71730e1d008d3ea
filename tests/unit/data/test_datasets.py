"""Training data loading: malformed rows are reported with file and line."""

import json

import pytest

from aapo.data.datasets import DatasetError, load_problems


def _write(path, lines):
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_jsonl_rows_load_with_extra_columns(tmp_path):
    path = _write(
        tmp_path / "d.jsonl", [json.dumps({"problem": "1+1?", "answer": "2", "level": 1})]
    )
    rows = load_problems(str(path))
    assert rows[0]["problem"] == "1+1?" and rows[0]["answer"] == "2" and rows[0]["level"] == 1
    assert rows[0]["_source"] == f"{path}:1"


def test_invalid_json_names_file_and_line(tmp_path):
    path = _write(tmp_path / "d.jsonl", [json.dumps({"problem": "a", "answer": "1"}), "{not json"])
    with pytest.raises(DatasetError, match=rf"{path}:2: not valid JSON"):
        load_problems(str(path))


def test_missing_answer_names_line_and_fields(tmp_path):
    path = _write(tmp_path / "d.jsonl", ["", json.dumps({"problem": "a", "gold": "1"})])
    with pytest.raises(
        DatasetError, match=rf"{path}:2: row has no an answer.*\['gold', 'problem'\]"
    ):
        load_problems(str(path))


def test_empty_problem_is_rejected(tmp_path):
    path = _write(tmp_path / "d.jsonl", [json.dumps({"problem": "  ", "answer": "1"})])
    with pytest.raises(DatasetError, match=":1: 'problem' must be a non-empty string"):
        load_problems(str(path))


def test_numeric_answer_becomes_text(tmp_path):
    path = _write(tmp_path / "d.jsonl", [json.dumps({"question": "q", "answer": 27.0})])
    assert load_problems(str(path))[0]["answer"] == "27.0"


def test_missing_file_and_unsupported_type(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        load_problems(str(tmp_path / "none.jsonl"))
    other = tmp_path / "d.csv"
    other.write_text("x")
    with pytest.raises(DatasetError, match="unsupported file type"):
        load_problems(str(other))


def test_synthetic_splits_are_disjoint():
    train = load_problems("synthetic", "train", seed=1, size=200)
    test = load_problems("synthetic", "test", seed=1, size=200)
    assert len(train) == 200 and not {r["problem"] for r in train} & {r["problem"] for r in test}
    with pytest.raises(DatasetError, match="splits 'train' and 'test'"):
        load_problems("synthetic", "validation")
