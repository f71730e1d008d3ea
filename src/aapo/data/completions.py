"""Completions sampled elsewhere, one JSONL row each: the per-row parsing that `aapo eval
--completions` (evaluation/external.py) and `aapo reference --completions`
(training/reference/importer.py) share, so neither imports the other.

A row gives `completion` (one string) or `completions` (a list), an optional `prompt` (the
text the engine was given; default: the row's `problem`), and per sample the optional
`truncated` (bool) and `completion_tokens` (a count), a scalar beside `completion` or a list
as long as `completions`. Every error names the row's file:line. Left out: the columns each
command reads besides these (benchmark, answer, completion_ids): the commands check those.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aapo.data.datasets import DatasetError
from aapo.messages import shown

PER_SAMPLE = {"truncated": bool, "completion_tokens": int}  # optional, one per completion


@dataclass(frozen=True)
class Completion:
    """One external sample of a row."""

    prompt: str
    text: str
    truncated: bool | None = None
    completion_tokens: int | None = None


def row_completions(where: str, row: dict[str, Any]) -> list[Completion]:
    """The row's samples, with their optional per-sample fields, checked."""
    if ("completion" in row) == ("completions" in row):
        given = "both" if "completion" in row else "neither"
        raise DatasetError(
            f"{where}: a row needs exactly one of 'completion' (a string) or 'completions' (a "
            f"list of strings); it has {given} (fields: {sorted(row)})"
        )
    single = "completion" in row
    texts = [row["completion"]] if single else row["completions"]
    if not single and (not isinstance(texts, list) or not texts):
        raise DatasetError(
            f"{where}: 'completions' must be a non-empty list of strings, got {shown(texts)}"
        )
    for j, text in enumerate(texts):
        if not isinstance(text, str):
            at = "'completion'" if single else f"'completions'[{j}]"
            raise DatasetError(f"{where}: {at} must be a string, got {shown(text)}")
    extra = {name: _per_sample(where, row, name, kind, single, len(texts))
             for name, kind in PER_SAMPLE.items()}  # fmt: skip
    prompt = row.get("prompt", row.get("problem"))  # a missing problem is reported later
    if "prompt" in row and not isinstance(prompt, str):
        raise DatasetError(f"{where}: 'prompt' must be a string, got {shown(prompt)}")
    return [
        Completion(prompt, text, extra["truncated"][j], extra["completion_tokens"][j])
        for j, text in enumerate(texts)
    ]


def _per_sample(
    where: str, row: dict[str, Any], name: str, kind: type, single: bool, k: int
) -> list[Any]:
    """`name` for each of the row's k samples (None when the row does not give it)."""
    if name not in row:
        return [None] * k
    values = [row[name]] if single else row[name]
    if not (isinstance(values, list) and len(values) == k and all(map(_fits(kind), values))):
        wanted = f"a {kind.__name__}" if single else f"a list of {k} {kind.__name__}s"
        raise DatasetError(f"{where}: {name!r} must be {wanted}, got {shown(row[name])}")
    return values


def _fits(kind: type) -> Any:
    if kind is bool:
        return lambda v: isinstance(v, bool)
    return lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 0  # a count
