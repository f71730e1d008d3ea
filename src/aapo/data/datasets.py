"""Training problems from the bundled synthetic task, local JSONL/Parquet files or `datasets`.

Every row must give a problem (`problem`, or `question`/`prompt`) and a gold answer
(`answer`, or `solution` as in TRL/open-r1 data). Gold answers are checked by the grader's
parser once, here, so a row the grader cannot read is reported with its file and line before
training starts instead of being scored silently. All other columns are kept and reach the
reward functions as keyword arguments, as in TRL.

The whole dataset is checked up front, and every row comes out with the same columns: a row
without a problem or a gold is reported by file and line; any other column some rows lack
(including the gold column a row does not use, `solution` where others use `answer`) is set
to None there, the value reward functions read as "does not apply to this row" (the built-in
rewards read `answer`, else `solution`, row by row). A non-UTF-8 line, a directory where a
file is expected and a gold the grader cannot parse are errors naming the file and line;
long values are shown cut to `messages.SHOWN_CHARS` characters.

TRL's two prompt forms both load: "standard" (`prompt` is text, used like `problem`) and
"conversational" (`prompt` is a list of `{role, content}` messages, optionally opening with a
system turn and ending with the user's turn). A conversational prompt is kept as given (the
model sees exactly those messages through its chat template); its last user turn becomes
`problem`. A dataset mixes the two forms only as an error.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aapo.messages import shown

PROBLEM_KEYS = ("problem", "question", "prompt")
ANSWER_KEYS = ("answer", "solution")
# The synthetic held-out split, fixed so every run of a seed shares it: 300 problems per level,
# interleaved level by level. Each level is drawn from its own seeded stream, so the first 500
# (100 per level) are the 500-problem split of earlier releases, and any held-out check of up to
# 500 problems is what it was. Level 1 has only 389 test-side texts, so 5 x 389 is the ceiling.
SYNTHETIC_TEST_SIZE = 1500


class DatasetError(ValueError):
    """A dataset that cannot be used; the message names the file and line (or row)."""


def load_problems(
    name: str,
    split: str = "train",
    seed: int = 42,
    size: int = 2000,
    levels: Sequence[int] | None = None,
) -> list[dict]:
    """Rows with at least `problem` and `answer`, validated, from any supported source.
    `size` and `levels` (None: all) shape the synthetic task only."""
    if name == "synthetic":
        return synthetic_split(split, seed=seed, size=size, levels=levels)
    path = Path(name)
    if path.suffix == ".jsonl" or path.suffix == ".json":
        return _validate(read_jsonl(path), str(path))
    if path.suffix == ".parquet":
        return _validate(_read_parquet(path), str(path))
    if path.exists():
        raise DatasetError(f"{path}: unsupported file type (use .jsonl or .parquet)")
    return _validate(_read_hub(name, split), f"{name}[{split}]")


def synthetic_split(
    split: str, seed: int = 42, size: int = 2000, levels: Sequence[int] | None = None
) -> list[dict]:
    """`size` train problems, or the `SYNTHETIC_TEST_SIZE` held-out ones; each level draws its
    own stream, so a prefix of either is the same whatever the size."""
    from aapo.data.synthetic import LEVELS, generate_problems

    if split not in ("train", "test"):
        raise DatasetError(
            f"the synthetic dataset has splits 'train' and 'test', not {shown(split)}"
        )
    count = size if split == "train" else SYNTHETIC_TEST_SIZE
    return generate_problems(count, seed, LEVELS if levels is None else levels, split=split)


def held_out_problems(seed: int, size: int, levels: Sequence[int] | None = None) -> list[dict]:
    """The first `size` problems of the synthetic held-out split over `levels`: with all
    levels, exactly the first `size` of `synthetic_split("test", seed)`."""
    from aapo.data.synthetic import LEVELS, generate_problems

    return generate_problems(size, seed, LEVELS if levels is None else levels, split="test")


def read_jsonl(path: Path, limit: int | None = None) -> list[tuple[str, Any]]:
    """(`file:line`, parsed row) for the first `limit` non-blank lines; a line that is not
    UTF-8 or not JSON names its line."""
    _check_file(path)
    rows: list[tuple[str, Any]] = []
    try:
        with path.open("rb") as handle:
            for lineno, raw in enumerate(handle, start=1):
                if limit is not None and len(rows) >= limit:
                    break
                line = _decode_line(raw, path, lineno)
                if not line.strip():
                    continue
                try:
                    rows.append((f"{path}:{lineno}", json.loads(line)))
                except json.JSONDecodeError as err:
                    raise DatasetError(f"{path}:{lineno}: not valid JSON ({err.msg})") from err
    except OSError as err:
        raise DatasetError(f"cannot read dataset file {path}: {err.strerror or err}") from err
    return rows


def _check_file(path: Path) -> None:
    if not path.exists():
        raise DatasetError(f"dataset file {path} does not exist")
    if path.is_dir():
        raise DatasetError(f"dataset path {path} is a directory, not a {path.suffix} file")


def _decode_line(raw: bytes, path: Path, lineno: int) -> str:
    if lineno == 1:
        raw = raw.removeprefix(b"\xef\xbb\xbf")  # a UTF-8 byte-order mark
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as err:
        raise DatasetError(
            f"{path}:{lineno}: not UTF-8 text (byte {raw[err.start]:#04x} at column "
            f"{err.start + 1}); save the file as UTF-8"
        ) from err


def _read_parquet(path: Path) -> list[tuple[str, Any]]:
    _check_file(path)
    from datasets import load_dataset

    table = load_dataset("parquet", data_files=str(path), split="train")
    return [(f"{path} row {i}", row) for i, row in enumerate(table)]


def _read_hub(name: str, split: str) -> list[tuple[str, Any]]:
    from datasets import load_dataset

    try:
        table = load_dataset(name, split=split)
    except Exception as err:  # datasets raises many types; the user needs the name and cause
        raise DatasetError(
            f"could not load dataset {shown(name)} (split {shown(split)}): {err}. Give a local "
            ".jsonl or .parquet path, or check the name and your network"
        ) from err
    return [(f"{name}[{split}] row {i}", row) for i, row in enumerate(table)]


def _validate(rows: list[tuple[str, Any]], source: str) -> list[dict]:
    """Check every row (see the module doc); → rows that all have the same columns."""
    if not rows:
        raise DatasetError(f"{source}: the dataset is empty")
    checked = [_validate_row(where, row) for where, row in rows]
    out = [row for row, _ in checked]
    _check_forms(out)
    _check_golds(out, [gold for _, gold in checked])
    columns = list(dict.fromkeys(key for row in out for key in row))
    return [{key: row.get(key) for key in columns} for row in out]


def _validate_row(where: str, row: Any) -> tuple[dict, str]:
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    # a null column counts as absent: Parquet and hub tables fill missing cells with None
    problem_key = next((k for k in PROBLEM_KEYS if row.get(k) is not None), None)
    answer_key = next((k for k in ANSWER_KEYS if row.get(k) is not None), None)
    if problem_key is None or answer_key is None:
        missing = (
            "a problem (problem/question/prompt)"
            if problem_key is None
            else "an answer (answer/solution)"
        )
        raise DatasetError(f"{where}: row has no {missing} field; fields are {sorted(row)}")
    problem, answer = row[problem_key], row[answer_key]
    if problem_key == "prompt" and isinstance(problem, list):
        problem = _last_user_turn(where, problem)
    if not isinstance(problem, str) or not problem.strip():
        raise DatasetError(
            f"{where}: {problem_key!r} must be a non-empty string, got {shown(problem)}"
        )
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)
    if not isinstance(answer, str) or not answer.strip():
        raise DatasetError(
            f"{where}: {answer_key!r} must be a non-empty string, got {shown(answer)}"
        )
    return {**row, "problem": problem, answer_key: answer, "_source": where}, answer


ROLES = ("system", "user", "assistant")


def _last_user_turn(where: str, messages: list[Any]) -> str:
    """Check a conversational prompt; → the text of its final (user) turn."""
    for index, message in enumerate(messages):
        if not (
            isinstance(message, dict)
            and message.get("role") in ROLES
            and isinstance(message.get("content"), str)
        ):
            raise DatasetError(
                f"{where}: prompt message {index} must be {{role: system/user/assistant, "
                f"content: text}}, got {shown(message)}"
            )
    if not messages or messages[-1]["role"] != "user":
        raise DatasetError(f"{where}: a conversational prompt must end with a user turn")
    return messages[-1]["content"]


def _check_forms(rows: list[dict]) -> None:
    conversational = isinstance(rows[0].get("prompt"), list)
    other = next((r for r in rows if isinstance(r.get("prompt"), list) != conversational), None)
    if other is not None:
        raise DatasetError(
            f"{other['_source']}: rows mix conversational prompts (message lists) with plain "
            f"text prompts ({rows[0]['_source']} is the other form); use one form throughout"
        )


def _check_golds(rows: list[dict], golds: list[str]) -> None:
    """Parse every gold in one round trip to the grader; report the first bad one (and how
    many others there are)."""
    from aapo.rewards import get_grader

    errors = get_grader().check_golds(golds)
    bad = [(row, gold, err) for row, gold, err in zip(rows, golds, errors, strict=True) if err]
    if bad:
        row, gold, err = bad[0]
        others = f" ({len(bad) - 1} more rows have unparsable golds)" if len(bad) > 1 else ""
        reason = getattr(err, "reason", str(err))
        raise DatasetError(
            f"{row['_source']}: gold answer {shown(gold)} cannot be parsed: {reason}{others}"
        )
