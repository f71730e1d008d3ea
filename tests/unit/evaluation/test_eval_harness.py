"""The harness with a fake model: batching, reseeding, resume after an interruption, scoring.

The fake sampler draws its answer from torch's RNG, like HFSampler, so these tests also check
that each batch is reseeded from the run's seed and its first task.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from aapo.evaluation import EvalConfig
from aapo.evaluation.benchmarks import Benchmark, Item
from aapo.evaluation.harness import build_results, build_tasks, sample_missing
from aapo.evaluation.store import SampleStore
from aapo.rewards import Grader
from aapo.rollout import Sample, SamplingParams


class CharTokenizer:
    """One token per character; no chat template, so prompts are plain text."""

    chat_template = None

    def __call__(self, text: str, add_special_tokens: bool = True) -> dict:
        return {"input_ids": [ord(c) for c in text]}

    def decode(self, ids: list[int], skip_special_tokens: bool = False) -> str:
        return "".join(map(chr, ids))


class CoinSampler:
    """Answers `\\boxed{0}` or `\\boxed{1}` by a torch coin flip; can fail on a given call."""

    def __init__(self, fail_on_call: int | None = None) -> None:
        self.calls: list[int] = []  # prompts per call
        self.fail_on_call = fail_on_call

    def generate(self, prompts: list[list[int]], params: SamplingParams) -> list[list[Sample]]:
        if len(self.calls) + 1 == self.fail_on_call:
            raise KeyboardInterrupt
        self.calls.append(len(prompts))
        flips = torch.randint(0, 2, (len(prompts),)).tolist()
        return [[Sample([7], f"so \\boxed{{{f}}}", truncated=False)] for f in flips]


def _benchmark() -> Benchmark:
    items = [Item(f"q{i}", f"Problem {i}", str(i % 2), level=str(1 + i % 2)) for i in range(5)]
    return Benchmark("toy", "memory", items, "plain")


def _run(tmp: Path, sampler: CoinSampler, grader: Grader, **overrides) -> SampleStore:
    config = EvalConfig(num_samples=2, batch_size=3, progress=False, **overrides)
    tasks = [build_tasks(_benchmark(), config, CharTokenizer())]
    store = SampleStore.open(tmp, {"seed": config.seed})
    with store:
        sample_missing(tasks, store, config, grader, lambda: sampler)
    return store


def test_tasks_are_problem_major_with_plain_prompts() -> None:
    tasks = build_tasks(_benchmark(), EvalConfig(num_samples=2), CharTokenizer())
    assert [t.key for t in tasks[:3]] == [("toy", "q0", 0), ("toy", "q0", 1), ("toy", "q1", 0)]
    assert tasks[0].prompt == "Problem 0\n"  # template `auto` → plain for this benchmark
    with_template = build_tasks(
        _benchmark(), EvalConfig(prompt_template="eval_math"), CharTokenizer()
    )
    assert "\\boxed{ANSWER}" in with_template[0].prompt
    # a checkpoint trained with worked examples is evaluated with them
    shown = build_tasks(
        _benchmark(),
        EvalConfig(system_prompt="Box it.", prompt_examples="boxed_arithmetic"),
        CharTokenizer(),
    )
    assert shown[0].prompt == (
        "Box it.\n\nWhat is 2 + 3?\n\n2 + 3 = 5. The final answer is \\boxed{5}.\n\nProblem 0\n"
    )


def test_batches_and_records(tmp_path: Path, eval_grader: Grader) -> None:
    sampler = CoinSampler()
    store = _run(tmp_path, sampler, eval_grader)
    assert sampler.calls == [3, 3, 3, 1]  # 10 samples in batches of 3
    record = store.records[("toy", "q1", 1)]
    assert record["prompt"] == "Problem 1\n" and record["gold"] == "1"
    assert record["correct"] == (record["extracted"] == "1")
    assert record["status"] == "ok" and record["completion_tokens"] == 1


def test_interrupted_then_resumed_equals_a_straight_run(
    tmp_path: Path, eval_grader: Grader
) -> None:
    straight = _run(tmp_path / "straight", CoinSampler(), eval_grader).records
    with pytest.raises(KeyboardInterrupt):
        _run(tmp_path / "resumed", CoinSampler(fail_on_call=3), eval_grader)
    lines = (tmp_path / "resumed" / "samples.jsonl").read_text().splitlines()
    assert len(lines) == 6  # two batches finished and were flushed before the interruption
    again = CoinSampler()
    resumed = _run(tmp_path / "resumed", again, eval_grader).records
    assert again.calls == [3, 1]  # only the unfinished batches
    assert resumed == straight
    idle = CoinSampler()
    _run(tmp_path / "resumed", idle, eval_grader)
    assert idle.calls == []


def test_the_callers_rng_state_is_left_alone(tmp_path: Path, eval_grader: Grader) -> None:
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _run(tmp_path, CoinSampler(), eval_grader)
    assert torch.equal(torch.rand(3), expected)


def test_another_seed_draws_other_samples(tmp_path: Path, eval_grader: Grader) -> None:
    a = _run(tmp_path / "a", CoinSampler(), eval_grader, seed=1).records
    b = _run(tmp_path / "b", CoinSampler(), eval_grader, seed=2).records
    assert [r["completion"] for r in a.values()] != [r["completion"] for r in b.values()]


def test_nothing_to_do_builds_no_sampler(tmp_path: Path, eval_grader: Grader) -> None:
    _run(tmp_path, CoinSampler(), eval_grader)
    config = EvalConfig(num_samples=2, batch_size=3, progress=False)
    tasks = [build_tasks(_benchmark(), config, CharTokenizer())]
    with SampleStore.open(tmp_path, {"seed": config.seed}) as store:
        assert sample_missing(tasks, store, config, eval_grader, _fail) == 0


def _fail() -> CoinSampler:
    raise AssertionError("the sampler should not be built")


def test_results_per_benchmark_and_level(tmp_path: Path, eval_grader: Grader) -> None:
    store = _run(tmp_path, CoinSampler(), eval_grader)
    results = build_results([_benchmark()], store, k=2)
    entry = results["benchmarks"]["toy"]
    correct = [
        sum(store.records[("toy", f"q{i}", j)]["correct"] for j in range(2)) for i in range(5)
    ]
    assert entry["pass@1"] == pytest.approx(sum(correct) / 10)
    assert entry["num_correct"] == sum(correct) and entry["num_problems"] == 5
    assert set(entry["levels"]) == {"1", "2"} and entry["levels"]["1"]["num_problems"] == 3
    assert entry["statuses"] == {"ok": 10} and results["average"] is None
    fewer = build_results([_benchmark()], store, k=1)["benchmarks"]["toy"]
    assert fewer["num_samples"] == 1  # a smaller k reuses the first samples
