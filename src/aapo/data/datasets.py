"""Training problems from the bundled synthetic task, local JSONL/Parquet files or `datasets`.

Every row must give a problem (`problem`, or `question`/`prompt`) and a gold answer
(`answer`, or `solution` as in TRL/open-r1 data). Gold answers are checked by the grader's
parser once, here, so a row the grader cannot read is reported with its file and line before
training starts instead of being scored silently. All other columns are kept and reach the
reward functions as keyword arguments, as in TRL.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

PROBLEM_KEYS = ("problem", "question", "prompt")
ANSWER_KEYS = ("answer", "solution")
SYNTHETIC_TEST_SIZE = 500  # the synthetic held-out split; fixed so every run shares it


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file and line (or row)."""


def load_problems(name: str, split: str = "train", seed: int = 42, size: int = 2000) -> list[dict]:
    """Rows with at least `problem` and `answer`, validated, from any supported source."""
    if name == "synthetic":
        return synthetic_split(split, seed=seed, size=size)
    path = Path(name)
    if path.suffix == ".jsonl" or path.suffix == ".json":
        return _validate(read_jsonl(path), str(path))
    if path.suffix == ".parquet":
        return _validate(_read_parquet(path), str(path))
    if path.exists():
        raise DatasetError(f"{path}: unsupported file type (use .jsonl or .parquet)")
    return _validate(_read_hub(name, split), f"{name}[{split}]")


def synthetic_split(split: str, seed: int = 42, size: int = 2000) -> list[dict]:
    from aapo.data.synthetic import make_splits

    if split not in ("train", "test"):
        raise DatasetError(f"the synthetic dataset has splits 'train' and 'test', not {split!r}")
    return make_splits(size, SYNTHETIC_TEST_SIZE, seed)[split]


def read_jsonl(path: Path, limit: int | None = None) -> list[tuple[str, Any]]:
    """(`file:line`, parsed row) for the first `limit` non-blank lines; bad JSON names its line."""
    if not path.exists():
        raise DatasetError(f"dataset file {path} does not exist")
    rows: list[tuple[str, Any]] = []
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if limit is not None and len(rows) >= limit:
                break
            if not line.strip():
                continue
            try:
                rows.append((f"{path}:{lineno}", json.loads(line)))
            except json.JSONDecodeError as err:
                raise DatasetError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
    return rows


def _read_parquet(path: Path) -> list[tuple[str, Any]]:
    if not path.exists():
        raise DatasetError(f"dataset file {path} does not exist")
    from datasets import load_dataset

    table = load_dataset("parquet", data_files=str(path), split="train")
    return [(f"{path} row {i}", row) for i, row in enumerate(table)]


def _read_hub(name: str, split: str) -> list[tuple[str, Any]]:
    from datasets import load_dataset

    try:
        table = load_dataset(name, split=split)
    except Exception as err:  # datasets raises many types; the user needs the name and cause
        raise DatasetError(
            f"could not load dataset {name!r} (split {split!r}): {err}. Give a local .jsonl or "
            ".parquet path, or check the name and your network"
        ) from err
    return [(f"{name}[{split}] row {i}", row) for i, row in enumerate(table)]


def _validate(rows: list[tuple[str, Any]], source: str) -> list[dict]:
    from aapo.rewards import check_gold

    if not rows:
        raise DatasetError(f"{source}: the dataset is empty")
    out = []
    for where, row in rows:
        if not isinstance(row, dict):
            raise DatasetError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
        problem_key = next((k for k in PROBLEM_KEYS if k in row), None)
        answer_key = next((k for k in ANSWER_KEYS if k in row), None)
        if problem_key is None or answer_key is None:
            missing = (
                "a problem (problem/question/prompt)"
                if problem_key is None
                else "an answer (answer/solution)"
            )
            raise DatasetError(f"{where}: row has no {missing} field; fields are {sorted(row)}")
        problem, answer = row[problem_key], row[answer_key]
        if not isinstance(problem, str) or not problem.strip():
            raise DatasetError(
                f"{where}: {problem_key!r} must be a non-empty string, got {problem!r}"
            )
        if isinstance(answer, (int, float)) and not isinstance(answer, bool):
            answer = str(answer)
        if not isinstance(answer, str) or not answer.strip():
            raise DatasetError(
                f"{where}: {answer_key!r} must be a non-empty string, got {answer!r}"
            )
        try:
            check_gold(answer)
        except ValueError as err:
            raise DatasetError(f"{where}: gold answer {answer!r} cannot be parsed: {err}") from err
        out.append({**row, "problem": problem, answer_key: answer, "_source": where})
    return out
