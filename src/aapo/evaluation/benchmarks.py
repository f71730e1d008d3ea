"""Benchmarks by name: the paper's five from a data folder, the bundled synthetic task, any JSONL
file with `problem`/`answer` (or `solution`, whose last `\\boxed{}` is then the gold), or
`hf:<dataset>[:split]`.

Rows are validated when loaded: a row without a problem or a usable gold answer is an error
naming its file and line, so a typo in a data file never turns into a silently wrong score.
A gold the grader cannot parse is an error too, unless `skip_bad_gold` is set; then the row is
left out, logged, and counted in the results. `limit` keeps the first N rows of the file
(before validation, so `--limit 5` is always rows 1-5 and costs five gold checks).

`synthetic` is the first 500 problems of the held-out `test` split of `aapo.data.synthetic`
with seed 42 (`--limit` reaches the whole split, `SYNTHETIC_TEST_SIZE` problems): the same
problems `aapo train` holds out with its default seed, disjoint by construction from every
synthetic training split. The split grew from 500 to 1,500 problems for longer final checks;
its first 500 are unchanged, and so is this benchmark by default. It keeps each row's
`level`, so the report breaks the score down by level (MATH-500's `level` field gets the same
treatment).
Left out: `datasets` configs (subsets) other than the default one, multiple-choice benchmarks.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aapo.data.datasets import SYNTHETIC_TEST_SIZE, DatasetError, read_jsonl
from aapo.messages import shown
from aapo.rewards import Grader, get_grader, gold_text

log = logging.getLogger(__name__)

BENCHMARK_FILES = {
    "aime24": "aime24.jsonl",
    "math500": "math500.jsonl",
    "amc23": "amc23.jsonl",
    "minerva": "minerva_math.jsonl",
    "olympiadbench": "olympiadbench.jsonl",
}
SYNTHETIC = "synthetic"
SYNTHETIC_SEED = 42  # TrainConfig's default seed, so `aapo train` holds out the same problems
SYNTHETIC_BENCHMARK_SIZE = 500  # the benchmark without --limit: the split as it was before it grew
DATA_DIR_ENV = "AAPO_DATA_DIR"


@dataclass(frozen=True)
class Item:
    """One problem of a benchmark, as the harness needs it."""

    id: str
    problem: str
    answer: str
    level: str | None = None  # kept as text: it is a JSON key in the results
    where: str = ""  # file:line, for error messages


@dataclass
class Benchmark:
    name: str  # key in the results and the table
    source: str  # where the rows came from
    items: list[Item]
    default_template: str  # prompt template used when `prompt_template` is `auto`
    skipped: list[str] = field(default_factory=list)  # "file:line: why", for skip_bad_gold


def default_data_dir() -> Path:
    return Path(os.environ.get(DATA_DIR_ENV) or Path("data") / "benchmarks")


def load_benchmark(
    name: str, data_dir: str | Path | None = None, limit: int | None = None,
    skip_bad_gold: bool = False, grader: Grader | None = None,
) -> Benchmark:  # fmt: skip
    """Load and validate one benchmark by name, file path or `hf:` spec. Golds are checked by
    `grader` (default: the process-wide one), the same parser that grades completions."""
    grader = grader or get_grader()
    if name == SYNTHETIC:
        return _synthetic(limit)
    if name.startswith("hf:"):
        return _hub(name, limit, skip_bad_gold, grader)
    if name in BENCHMARK_FILES:
        folder = Path(data_dir) if data_dir is not None else default_data_dir()
        path = folder / BENCHMARK_FILES[name]
        if not path.exists():
            raise DatasetError(
                f"benchmark {shown(name)}: {path} does not exist. Point --data_dir (or "
                f"${DATA_DIR_ENV}) at a folder holding {', '.join(BENCHMARK_FILES.values())}"
            )
        return from_rows(name, str(path), read_jsonl(path, limit), skip_bad_gold, grader)
    path = Path(name)
    if path.suffix == ".jsonl":
        if not path.exists():
            raise DatasetError(f"benchmark file {path} does not exist")
        return from_rows(path.stem, str(path), read_jsonl(path, limit), skip_bad_gold, grader)
    known = ", ".join([*BENCHMARK_FILES, SYNTHETIC])
    raise DatasetError(
        f"unknown benchmark {shown(name)}: use one of {known}, a .jsonl path, or "
        "hf:<dataset>[:split]"
    )


def from_rows(
    name: str, source: str, rows: list[tuple[str, Any]], skip_bad_gold: bool, grader: Grader
) -> Benchmark:
    """A benchmark from (file:line, row) pairs: rows checked, golds checked in one round trip,
    ids unique. Also used for the rows of a completions file (external.py)."""
    if not rows:
        raise DatasetError(f"benchmark {shown(name)} ({source}) has no rows")
    parsed = [_item(row, where, index) for index, (where, row) in enumerate(rows)]
    gold_errors = grader.check_golds([item.answer for item in parsed])  # one round trip
    items, skipped, seen = [], [], {}
    for item, error in zip(parsed, gold_errors, strict=True):
        if error is not None:
            message = f"{item.where}: gold answer {shown(item.answer)} cannot be parsed ({error})"
            if not skip_bad_gold:
                raise DatasetError(f"{message}; fix the row or pass --skip_bad_gold true")
            log.warning("skipping %s", message)
            skipped.append(message)
            continue
        where = item.where
        if item.id in seen:
            raise DatasetError(f"{where}: id {shown(item.id)} already used at {seen[item.id]}")
        seen[item.id] = where
        items.append(item)
    if not items:
        raise DatasetError(f"benchmark {shown(name)} ({source}): every row was skipped")
    return Benchmark(name, source, items, "eval_math", skipped)


def _item(row: Any, where: str, index: int) -> Item:
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    problem, answer = row.get("problem"), row.get("answer")
    if answer is None and isinstance(row.get("solution"), str):
        # Hub copies of MATH-500 and Minerva give only a worked solution (the paper's own
        # evaluation used it as the gold): its last \boxed{} is the answer.
        answer = gold_text(row["solution"])
    if not isinstance(problem, str) or not problem.strip():
        raise DatasetError(
            f"{where}: row needs a non-empty string 'problem'; fields are {sorted(row)}"
        )
    if isinstance(answer, (int, float)) and not isinstance(answer, bool):
        answer = str(answer)  # AMC-style numeric golds
    if not isinstance(answer, str) or not answer.strip():
        raise DatasetError(
            f"{where}: row needs a non-empty string 'answer' (the bare gold) or a 'solution' "
            f"ending in \\boxed{{...}}; got {shown(answer)}"
        )
    raw_id = row.get("id", row.get("unique_id"))
    item_id = str(raw_id) if raw_id is not None else f"row-{index}"
    level = row.get("level")
    return Item(item_id, problem, answer, None if level is None else str(level), where)


def _synthetic(limit: int | None) -> Benchmark:
    from aapo.data.synthetic import make_splits

    size = SYNTHETIC_BENCHMARK_SIZE if limit is None else min(limit, SYNTHETIC_TEST_SIZE)
    # A smaller request is a prefix of the full split (synthetic.py draws each level from its
    # own seeded stream), so `--limit` keeps the first N problems as it does for files.
    rows = make_splits(0, SYNTHETIC_TEST_SIZE, SYNTHETIC_SEED)["test"][:size]
    shown = max(size, SYNTHETIC_BENCHMARK_SIZE)  # the source a --limit within 500 always had
    source = f"aapo.data.synthetic test split (seed {SYNTHETIC_SEED}, {shown} problems)"
    items = [
        Item(r["id"], r["problem"], r["answer"], str(r["level"]), f"{SYNTHETIC}[{i}]")
        for i, r in enumerate(rows)
    ]
    return Benchmark(SYNTHETIC, source, items, "plain")


def _hub(spec: str, limit: int | None, skip_bad_gold: bool, grader: Grader) -> Benchmark:
    """`hf:<dataset>[:split]` through `datasets.load_dataset` (default split: test)."""
    dataset, _, split = spec[3:].partition(":")
    split = split or "test"
    from datasets import load_dataset

    try:
        table = load_dataset(dataset, split=split)
    except Exception as err:  # datasets raises many types; the user needs the name and cause
        raise DatasetError(
            f"could not load {shown(spec)} (dataset {shown(dataset)}, split {shown(split)}): {err}"
        ) from err
    count = len(table) if limit is None else min(limit, len(table))
    rows = [(f"{spec} row {i}", table[i]) for i in range(count)]
    return from_rows(dataset.rsplit("/", 1)[-1], spec, rows, skip_bad_gold, grader)
