"""Loading and validating benchmark rows; errors name the file and line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aapo.data.datasets import DatasetError, synthetic_split
from aapo.evaluation.benchmarks import (
    BENCHMARK_FILES,
    SYNTHETIC_SEED,
    default_data_dir,
    load_benchmark,
)
from aapo.rewards import Grader

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "benchmarks"


def _write(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_rows_become_items(tmp_path: Path, eval_grader: Grader) -> None:
    path = _write(
        tmp_path / "mine.jsonl",
        [
            {"id": "a", "problem": "1+1?", "answer": "2", "level": 3},
            "",
            {"problem": "Half of 1?", "answer": "\\frac{1}{2}"},
            {"unique_id": "u/7", "problem": "27?", "answer": 27.0},
            {"problem": "3?", "solution": "It is $\\boxed{3}$."},
        ],
    )
    bench = load_benchmark(str(path), grader=eval_grader)
    assert bench.name == "mine" and bench.default_template == "eval_math"
    assert [i.id for i in bench.items] == ["a", "row-1", "u/7", "row-3"]
    assert bench.items[0].level == "3" and bench.items[1].level is None
    assert bench.items[2].answer == "27.0"
    assert bench.items[3].answer == "3"  # the last box of a worked solution
    assert bench.items[1].where == f"{path}:3"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"answer": "2"}, "'problem'"),
        ({"problem": "x", "answer": ""}, "'answer'"),
        ({"problem": "x", "answer": ["2"]}, "'answer'"),
        ({"problem": "x", "solution": ""}, "'answer'"),
        ("[1, 2]", "JSON object"),
        ("{not json", "not valid JSON"),
    ],
)
def test_bad_rows_name_file_and_line(tmp_path: Path, eval_grader: Grader, row, message) -> None:
    path = _write(tmp_path / "b.jsonl", [{"problem": "1+1?", "answer": "2"}, row])
    with pytest.raises(DatasetError, match=message) as err:
        load_benchmark(str(path), grader=eval_grader)
    assert f"{path}:2" in str(err.value)


def test_bad_gold_is_an_error_or_a_counted_skip(tmp_path: Path, eval_grader: Grader) -> None:
    rows = [
        {"id": "ok", "problem": "p", "answer": "2"},
        {"id": "bad", "problem": "q", "answer": "\\frac{"},
    ]
    path = _write(tmp_path / "g.jsonl", rows)
    with pytest.raises(DatasetError, match=r"g\.jsonl:2: gold answer .*skip_bad_gold"):
        load_benchmark(str(path), grader=eval_grader)
    bench = load_benchmark(str(path), skip_bad_gold=True, grader=eval_grader)
    assert [i.id for i in bench.items] == ["ok"]
    assert len(bench.skipped) == 1 and f"{path}:2" in bench.skipped[0]


def test_duplicate_ids_are_refused(tmp_path: Path, eval_grader: Grader) -> None:
    path = _write(tmp_path / "d.jsonl", [{"id": 1, "problem": "p", "answer": "2"}] * 2)
    with pytest.raises(DatasetError, match="already used"):
        load_benchmark(str(path), grader=eval_grader)


def test_limit_keeps_the_first_rows(tmp_path: Path, eval_grader: Grader) -> None:
    rows = [{"id": f"r{i}", "problem": f"{i}+0?", "answer": str(i)} for i in range(5)]
    rows.append("{broken")  # beyond the limit: never read
    path = _write(tmp_path / "l.jsonl", rows)
    bench = load_benchmark(str(path), limit=2, grader=eval_grader)
    assert [i.id for i in bench.items] == ["r0", "r1"]


def test_named_benchmarks_come_from_the_data_dir(
    tmp_path: Path, eval_grader: Grader, monkeypatch: pytest.MonkeyPatch
) -> None:
    _write(tmp_path / "minerva_math.jsonl", [{"id": "m", "problem": "p", "answer": "3.83e35"}])
    assert load_benchmark("minerva", tmp_path, grader=eval_grader).name == "minerva"
    monkeypatch.setenv("AAPO_DATA_DIR", str(tmp_path))
    assert default_data_dir() == tmp_path
    assert load_benchmark("minerva", grader=eval_grader).items[0].id == "m"
    with pytest.raises(DatasetError, match=r"aime24\.jsonl does not exist.*--data_dir"):
        load_benchmark("aime24", tmp_path, grader=eval_grader)


def test_unknown_names_and_missing_files(tmp_path: Path, eval_grader: Grader) -> None:
    with pytest.raises(DatasetError, match="unknown benchmark 'gsm9k'"):
        load_benchmark("gsm9k", grader=eval_grader)
    with pytest.raises(DatasetError, match="does not exist"):
        load_benchmark(str(tmp_path / "none.jsonl"), grader=eval_grader)


def test_synthetic_is_the_training_held_out_split(eval_grader: Grader) -> None:
    bench = load_benchmark("synthetic", grader=eval_grader)
    held_out = synthetic_split("test", seed=SYNTHETIC_SEED)
    # by default the first 500, as before the split grew to 1,500; --limit reaches the rest
    assert [i.id for i in bench.items] == [r["id"] for r in held_out[:500]]
    assert len(bench.items) == 500 and bench.default_template == "plain"
    assert {i.level for i in bench.items} == {"1", "2", "3", "4", "5"}
    first = load_benchmark("synthetic", limit=7, grader=eval_grader)
    assert first.items == bench.items[:7] and first.source == bench.source
    longer = load_benchmark("synthetic", limit=1000, grader=eval_grader)
    assert longer.items[:500] == bench.items and len(longer.items) == 1000
    assert len(load_benchmark("synthetic", limit=10**6, grader=eval_grader).items) == 1500


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"benchmark data not found at {SHARED}")
@pytest.mark.parametrize("name", sorted(BENCHMARK_FILES))
def test_shared_benchmark_files_load(name: str, eval_grader: Grader) -> None:
    bench = load_benchmark(name, SHARED, limit=3, grader=eval_grader)
    assert len(bench.items) == 3 and not bench.skipped
    assert len({i.id for i in bench.items}) == 3


@pytest.mark.skipif(not SHARED.is_dir(), reason=f"benchmark data not found at {SHARED}")
def test_aime24_loads_whole(eval_grader: Grader) -> None:
    bench = load_benchmark("aime24", SHARED, grader=eval_grader)
    assert len(bench.items) == 30 and bench.items[0].id == "aime24-2024-I-1"
