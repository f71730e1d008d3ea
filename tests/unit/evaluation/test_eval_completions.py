"""Grading a completions file made elsewhere: validation by file:line, k samples per row,
benchmarks from the `benchmark` column, resume, and no model loaded at any point."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aapo.config import ConfigError
from aapo.data.datasets import DatasetError
from aapo.evaluation import EvalConfig, harness, run_eval, score
from aapo.evaluation.external import load_completions
from aapo.evaluation.report import score_to_dict
from aapo.rewards import Grader

BOX = "so the answer is \\boxed{{{}}}"


def _write(path: Path, rows: list) -> Path:
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _k3_rows() -> list[dict]:
    """Two problems, three samples each: 2/3 and 0/3 correct."""
    return [
        {"problem": "1+1?", "answer": "2", "id": "a", "level": 1,
         "completions": [BOX.format(2), BOX.format(3), "\\boxed{2}"]},
        {"problem": "2+2?", "solution": "It is $\\boxed{4}$.", "id": "b", "level": 2,
         "completions": [BOX.format(5), "no answer", BOX.format(3)],
         "truncated": [False, True, False], "completion_tokens": [7, 64, 9]},
    ]  # fmt: skip


def _config(tmp_path: Path, path: Path, **overrides) -> EvalConfig:
    return EvalConfig(
        completions=str(path), output_dir=str(tmp_path / "out"), progress=False,
        grading_timeout=20.0, **overrides,
    )  # fmt: skip


@pytest.fixture
def no_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Any attempt to resolve, load or sample from a model fails the test."""

    def refuse(*args, **kwargs):
        raise AssertionError("grading a completions file must not touch a model")

    for name in ("resolve_model_path", "load_model", "load_tokenizer", "make_sampler"):
        monkeypatch.setattr(harness, name, refuse)


def test_k3_lists_are_scored_with_the_eval_code(tmp_path: Path, no_model, capsys) -> None:
    path = _write(tmp_path / "mine.jsonl", _k3_rows())
    results = run_eval(_config(tmp_path, path, model_name="engine"))
    entry = results["benchmarks"]["mine"]  # the file's stem names the benchmark
    expected = score_to_dict(score([2, 0], 3))
    assert {key: entry[key] for key in expected} == expected
    assert entry["pass@1"] == pytest.approx(2 / 6)
    assert entry["levels"]["1"]["pass@1"] == pytest.approx(2 / 3)
    assert entry["truncated"] == 1 and entry["mean_completion_tokens"] == 26.7  # 80 / 3
    assert results["num_samples"] == 3 and results["samples"] == {"graded": 6, "reused": 0}

    out = tmp_path / "out"
    lines = [json.loads(line) for line in (out / "samples.jsonl").read_text().splitlines()]
    assert [(r["id"], r["sample"], r["correct"]) for r in lines] == [
        ("a", 0, True), ("a", 1, False), ("a", 2, True),
        ("b", 0, False), ("b", 1, False), ("b", 2, False),
    ]  # fmt: skip
    assert lines[3]["gold"] == "4" and lines[3]["extracted"] == "5"  # gold from the solution
    assert lines[0]["prompt"] == "1+1?" and lines[0]["completion_tokens"] is None
    assert (out / "results.csv").exists() and json.loads((out / "results.json").read_text())
    stdout = capsys.readouterr().out
    assert "| Model | mine |" in stdout and "| engine | 33.3 [" in stdout and "k=3" in stdout


def test_benchmark_column_groups_rows_and_each_keeps_its_k(
    tmp_path: Path, no_model, capsys
) -> None:
    rows = [
        {"benchmark": "aime24", "problem": "p", "answer": "1", "completions": [BOX.format(1)] * 4},
        {"benchmark": "math500", "problem": "q", "answer": "2", "completion": BOX.format(2)},
        {"benchmark": "math500", "problem": "r", "answer": "3", "completion": BOX.format(0)},
        {"benchmark": "math500", "problem": "s", "answer": "4", "completion": BOX.format(4)},
    ]
    path = _write(tmp_path / "mixed.jsonl", rows)
    results = run_eval(_config(tmp_path, path, limit=2))  # first 2 rows of each benchmark
    assert results["model"] == "mixed" and results["num_samples"] is None
    aime, math = results["benchmarks"]["aime24"], results["benchmarks"]["math500"]
    assert (aime["num_samples"], aime["pass@1"]) == (4, 1.0)
    assert (math["num_samples"], math["num_problems"], math["pass@1"]) == (1, 2, 0.5)
    assert results["average"]["pass@1"] == pytest.approx(0.75)
    assert "mean over k (aime24 4, math500 1) samples per problem" in capsys.readouterr().out


def test_a_rerun_reuses_grades_and_a_changed_file_is_refused(tmp_path: Path, no_model) -> None:
    path = _write(tmp_path / "mine.jsonl", _k3_rows())
    first = run_eval(_config(tmp_path, path))
    again = run_eval(_config(tmp_path, path))
    assert again["samples"] == {"graded": 0, "reused": 6}
    assert again["benchmarks"] == first["benchmarks"]
    rows = _k3_rows()
    rows[0]["completions"][1] = BOX.format(2)
    _write(path, rows)
    with pytest.raises(ConfigError, match="completions: 'sha256:"):
        run_eval(_config(tmp_path, path))
    changed = run_eval(_config(tmp_path, path, overwrite=True))
    assert changed["benchmarks"]["mine"]["num_correct"] == 3


GOOD = {"problem": "1+1?", "answer": "2", "completion": "\\boxed{2}"}
BAD_ROWS = [
    ({"problem": "p", "answer": "2"}, "exactly one of 'completion'.*it has neither"),
    ({**GOOD, "completions": ["x"]}, "exactly one of 'completion'.*it has both"),
    ({"problem": "p", "answer": "2", "completions": []}, "'completions' must be a non-empty list"),
    ({"problem": "p", "answer": "2", "completions": "x"}, "'completions' must be a non-empty list"),
    ({"problem": "p", "answer": "2", "completions": ["a", 3]}, r"'completions'\[1\] must be a str"),
    ({"problem": "p", "answer": "2", "completion": ["a"]}, "'completion' must be a string"),
    ({"answer": "2", "completion": "x"}, "needs a non-empty string 'problem'"),
    ({"problem": "p", "completion": "x"}, "needs a non-empty string 'answer'"),
    ({**GOOD, "truncated": [True]}, "'truncated' must be a bool"),
    ({"problem": "p", "answer": "2", "completions": ["a", "b"], "completion_tokens": [3]},
     "'completion_tokens' must be a list of 2 ints"),
    ({**GOOD, "completion_tokens": -1}, "'completion_tokens' must be a int"),
    ({**GOOD, "benchmark": ""}, "'benchmark' must be a non-empty string"),
    ({**GOOD, "prompt": ["messages"]}, "'prompt' must be a string"),
    (["not", "an", "object"], "a row must be a JSON object"),
    ("{not json", "not valid JSON"),
]  # fmt: skip


@pytest.mark.parametrize(("row", "message"), BAD_ROWS)
def test_bad_rows_name_their_file_and_line(
    tmp_path: Path, eval_grader: Grader, row: object, message: str
) -> None:
    path = _write(tmp_path / "c.jsonl", [GOOD, row])
    with pytest.raises(DatasetError, match=message) as caught:
        load_completions(path, eval_grader)
    assert str(caught.value).startswith(f"{path}:2: ")


def test_k_must_not_change_within_a_benchmark(tmp_path: Path, eval_grader: Grader) -> None:
    other = {"benchmark": "other", "problem": "q", "answer": "1", "completions": ["a", "b"]}
    rows = [GOOD, other, {"problem": "q", "answer": "1", "completions": ["a", "b"]}]
    path = _write(tmp_path / "c.jsonl", rows)
    with pytest.raises(DatasetError) as caught:
        load_completions(path, eval_grader)
    assert str(caught.value).startswith(f"{path}:3: 2 completion(s), but {path}:1 ")
    assert "(the first row of benchmark 'c') has 1;" in str(caught.value)


def test_an_id_used_twice_in_a_benchmark_names_both_lines(
    tmp_path: Path, eval_grader: Grader
) -> None:
    rows = [{**GOOD, "id": "x"}, {**GOOD, "id": "x", "benchmark": "other"}, {**GOOD, "id": "x"}]
    path = _write(tmp_path / "c.jsonl", rows)
    with pytest.raises(DatasetError, match=rf"c\.jsonl:3: id 'x' already used at {path}:1$"):
        load_completions(path, eval_grader)


def test_bad_gold_and_bad_utf8_name_the_row(tmp_path: Path, eval_grader: Grader) -> None:
    path = _write(tmp_path / "c.jsonl", [GOOD, {**GOOD, "answer": "\\frac{"}])
    with pytest.raises(DatasetError, match=r"c\.jsonl:2: gold answer '\\\\frac\{' cannot be"):
        load_completions(path, eval_grader)
    kept = load_completions(path, eval_grader, skip_bad_gold=True)
    assert len(kept.benchmarks[0].items) == 1 and "c.jsonl:2" in kept.benchmarks[0].skipped[0]
    path.write_bytes(json.dumps(GOOD).encode() + b"\n" + b'{"problem": "\xff"}\n')
    with pytest.raises(DatasetError, match=r"c\.jsonl:2"):
        load_completions(path, eval_grader)


def test_options_that_cannot_apply_are_refused() -> None:
    with pytest.raises(ValueError, match="benchmarks and completions exclude each other"):
        EvalConfig(completions="c.jsonl", benchmarks=["math500"])
    with pytest.raises(ValueError, match="k is the number of completions"):
        EvalConfig(completions="c.jsonl", num_samples=4)
    with pytest.raises(ValueError, match=r"must be a \.jsonl file"):
        EvalConfig(completions="c.csv")
