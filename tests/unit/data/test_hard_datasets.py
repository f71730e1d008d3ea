"""The whole dataset is checked up front and every row comes out with the same columns."""

import json

import pytest

from aapo.data.datasets import DatasetError, load_problems
from aapo.rewards import get_reward_function


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def test_rows_with_different_columns_all_get_every_column(tmp_path):
    path = _write(
        tmp_path / "d.jsonl",
        [
            {"problem": "1+1?", "answer": "2", "level": 1},
            {"problem": "2+2?", "solution": "so \\boxed{4}"},
            {"question": "3+3?", "answer": "6", "hint": "add"},
        ],
    )
    rows = load_problems(str(path))
    assert len({tuple(row) for row in rows}) == 1  # one column set, one order
    assert set(rows[0]) == {"problem", "answer", "level", "solution", "question", "hint",
                            "_source"}  # fmt: skip
    assert rows[1]["answer"] is None and rows[1]["level"] is None
    assert rows[2]["problem"] == "3+3?" and rows[0]["hint"] is None


def test_the_accuracy_reward_reads_answer_or_solution_per_row_of_a_mixed_batch(tmp_path):
    path = _write(
        tmp_path / "d.jsonl",
        [{"problem": "1+1?", "answer": "2"}, {"problem": "2+2?", "solution": "so \\boxed{4}"}],
    )
    rows = load_problems(str(path))
    # what the training step builds: one list per column, over the rows of a batch
    columns = {key: [row[key] for row in rows] for key in rows[0] if not key.startswith("_")}
    accuracy = get_reward_function("accuracy")
    completions = ["<answer>\\boxed{2}</answer>", "<answer>\\boxed{4}</answer>"]
    assert accuracy([r["problem"] for r in rows], completions, **columns) == [1.0, 1.0]


def test_a_null_gold_column_is_skipped_for_the_other_one(tmp_path):
    row = {"problem": "p", "answer": None, "solution": "\\boxed{3}"}
    path = _write(tmp_path / "d.jsonl", [row])
    assert load_problems(str(path))[0]["solution"] == "\\boxed{3}"


def test_a_non_utf8_line_names_file_and_line(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"problem": "a", "answer": "1"}\n{"problem": "caf\xe9", "answer": "2"}\n')
    with pytest.raises(DatasetError, match=rf"{path}:2: not UTF-8 text \(byte 0xe9 at column 17"):
        load_problems(str(path))


def test_a_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"problem": "a", "answer": "1"}\n')
    assert load_problems(str(path))[0]["problem"] == "a"


@pytest.mark.parametrize("name", ["x.jsonl", "x.parquet"])
def test_a_directory_named_like_a_data_file_is_named(tmp_path, name):
    folder = tmp_path / name
    folder.mkdir()
    with pytest.raises(DatasetError, match=rf"dataset path {folder} is a directory"):
        load_problems(str(folder))


def test_a_huge_unparsable_gold_is_shown_once_and_cut(tmp_path):
    huge = "\\frac{1}{" + "1" * 10_000_000
    path = _write(tmp_path / "d.jsonl", [{"problem": "p", "answer": "1"},
                                          {"problem": "q", "answer": huge}])  # fmt: skip
    with pytest.raises(DatasetError) as info:
        load_problems(str(path))
    message = str(info.value)
    assert message.startswith(f"{path}:2: gold answer '\\\\frac{{1}}{{111")
    assert f"({len(huge)} characters)" in message
    assert len(message) < 400 + len(str(path))


def test_every_bad_gold_is_found_before_training(tmp_path):
    path = _write(tmp_path / "d.jsonl", [{"problem": "p", "answer": "\\sqrt{2"},
                                          {"problem": "q", "answer": "1"},
                                          {"problem": "r", "answer": "\\frac{1}{"}])  # fmt: skip
    with pytest.raises(DatasetError, match=r":1: gold answer .* \(1 more rows have unparsable"):
        load_problems(str(path))
