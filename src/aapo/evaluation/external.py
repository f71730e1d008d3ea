"""`aapo eval --completions FILE.jsonl`: grade completions made elsewhere (vLLM, SGLang, a
serving fleet) with the training grader, into the same results.json/.csv, samples.jsonl and
Table 1 as `aapo eval`. No model or tokenizer is loaded.

A row: `problem`, the gold `answer` (or a `solution` whose last `\\boxed{}` is the gold, as
in `aapo eval`'s benchmark files), and either `completion` (one string) or `completions` (a
list of strings, the row's k samples). Optional: `benchmark` (groups rows in the report;
default: the file's stem), `id` and `level` (as in benchmark files), `prompt` (the text the
engine was given, kept in samples.jsonl; default: the problem), and per sample `truncated`
(bool) and `completion_tokens` (int), a scalar beside `completion` or a list as long as
`completions`. Every row is checked before anything is graded, each error naming file:line;
golds go through the grader's `check_golds` once, as benchmark files do.

k: every row of one benchmark must carry the same number of completions, since pass@1 and its
interval (report.py) are computed over n problems × k samples; benchmarks may differ in k
(AIME with 16, MATH-500 with 1). `--limit N` keeps the first N rows of each benchmark.
Grading is resumable like sampling: samples.jsonl is flushed every `batch_size` completions,
and `fingerprint.json` records the file's sha256 and the grader timeout.
The same rows (for the training prompts, with D·G completions each) become a reference cache
through `aapo reference --completions` (aapo.training.reference.importer), which reuses
`row_completions`. Left out: token ids (grading reads text only).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aapo.data.completions import Completion, row_completions
from aapo.data.datasets import DatasetError, read_jsonl
from aapo.evaluation.benchmarks import Benchmark, Item, from_rows
from aapo.evaluation.config import EvalConfig
from aapo.evaluation.report import build_results, finish, load_results, model_label, slug
from aapo.evaluation.store import SampleStore
from aapo.files import file_sha256
from aapo.messages import shown
from aapo.models import BUNDLED
from aapo.rewards import Grader


@dataclass
class CompletionsFile:
    """A validated completions file: benchmarks as `aapo eval` has them, plus the samples."""

    path: Path
    benchmarks: list[Benchmark]
    samples: dict[str, list[Completion]]  # by the row's file:line (Item.where)
    k: dict[str, int]  # by benchmark name


def load_completions(
    path: str | Path, grader: Grader, limit: int | None = None, skip_bad_gold: bool = False
) -> CompletionsFile:
    """Read and check every row of `path`; golds are checked by `grader` once per benchmark."""
    path = Path(path)
    rows = read_jsonl(path)
    if not rows:
        raise DatasetError(f"completions file {path} has no rows")
    groups: dict[str, list[tuple[str, Any]]] = {}
    samples: dict[str, list[Completion]] = {}
    first: dict[str, str] = {}  # a benchmark's first row, for the k error
    for where, row in rows:
        name = _benchmark_name(where, row, path.stem)
        samples[where] = row_completions(where, row)
        if name in first and len(samples[where]) != len(samples[first[name]]):
            raise DatasetError(
                f"{where}: {len(samples[where])} completion(s), but {first[name]} (the first row "
                f"of benchmark {shown(name)}) has {len(samples[first[name]])}; every row of a "
                "benchmark needs the same k (give each k its own `benchmark` name)"
            )
        first.setdefault(name, where)
        groups.setdefault(name, []).append((where, row))
    benchmarks = [
        from_rows(name, f"{path} (completions)", group[:limit], skip_bad_gold, grader)
        for name, group in groups.items()
    ]
    k = {name: len(samples[where]) for name, where in first.items()}
    return CompletionsFile(path, benchmarks, samples, k)


def _benchmark_name(where: str, row: Any, default: str) -> str:
    if not isinstance(row, dict):
        raise DatasetError(f"{where}: a row must be a JSON object, got {type(row).__name__}")
    name = row.get("benchmark", default)
    if not isinstance(name, str) or not name.strip():
        raise DatasetError(f"{where}: 'benchmark' must be a non-empty string, got {shown(name)}")
    return name


def grade_missing(
    data: CompletionsFile, store: SampleStore, grader: Grader, batch_size: int, progress: bool
) -> int:
    """Grade every sample not in `store`, `batch_size` at a time; returns how many."""
    todo = [
        (bench.name, item, j, sample)
        for bench in data.benchmarks
        for item in bench.items
        for j, sample in enumerate(data.samples[item.where])
        if store.get((bench.name, item.id, j), sample.prompt, item.answer) is None
    ]
    from tqdm.auto import tqdm

    with tqdm(total=len(todo), desc="grade", unit="sample", disable=not progress) as bar:
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            verdicts = grader.grade([t[3].text for t in batch], [t[1].answer for t in batch])
            store.append([record(*task, v) for task, v in zip(batch, verdicts, strict=True)])
            bar.update(len(batch))
    return len(todo)


def record(benchmark: str, item: Item, j: int, sample: Completion, verdict: Any) -> dict:
    """One line of samples.jsonl, with the fields `aapo eval` writes (harness.record)."""
    return {
        "benchmark": benchmark,
        "id": item.id,
        "sample": j,
        "level": item.level,
        "prompt": sample.prompt,
        "completion": sample.text,
        "extracted": verdict.extracted,
        "gold": item.answer,
        "correct": bool(verdict.correct),
        "status": verdict.status,
        "truncated": sample.truncated,
        "completion_tokens": sample.completion_tokens,
    }


def grade_completions(config: EvalConfig) -> dict[str, Any]:
    """`run_eval` for `config.completions`: prints the table, writes the files, returns them."""
    started = time.monotonic()
    path = Path(config.completions)
    named = config.model not in ("", BUNDLED)  # the bundled default names no engine's model
    label = config.model_name or (model_label(config.model) if named else path.stem)
    output_dir = Path(config.output_dir or Path("runs") / "eval" / slug(label))
    compared = [load_results(p) for p in config.compare]  # fail early on a bad path
    with Grader(timeout=config.grading_timeout) as grader:
        data = load_completions(path, grader, config.limit, config.skip_bad_gold)
        fingerprint = {
            "completions": "sha256:" + file_sha256(path),
            "grading_timeout": config.grading_timeout,
        }
        with SampleStore.open(output_dir, fingerprint, config.overwrite) as store:
            graded = grade_missing(data, store, grader, config.batch_size, config.progress)
            results = build_results(data.benchmarks, store, data.k)
            total = sum(len(b.items) * data.k[b.name] for b in data.benchmarks)
            ks = set(data.k.values())
            return finish(  # while the folder is still this evaluation's
                results,
                config,
                grader,
                output_dir,
                fingerprint,
                started,
                compared,
                model=label,
                model_path=None,
                completions=str(path),
                num_samples=ks.pop() if len(ks) == 1 else None,  # per benchmark in its entry
                samples={"graded": graded, "reused": total - graded},
            )
