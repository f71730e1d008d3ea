"""VLLMSampler without vLLM: the install hint when it is missing, and the translation of
vLLM's outputs into `Sample`s against a stand-in module (the GPU path itself is untested here).
"""

from __future__ import annotations

import json
import sys
import types
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import pytest

from aapo.evaluation import EvalConfig
from aapo.evaluation.harness import make_sampler
from aapo.rollout import SamplingParams
from aapo.rollout.vllm_sampler import VLLMSampler


def test_missing_vllm_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "vllm", None)  # makes `import vllm` raise ImportError
    with pytest.raises(ImportError, match=r"pip install 'aapo\[vllm\]'"):
        VLLMSampler("some/model")
    config = EvalConfig(backend="vllm")
    with pytest.raises(ImportError, match=r"aapo\[vllm\]"):
        make_sampler(config, "some/model", "cuda", "bfloat16", tokenizer=None)


class FakeTokenizer:
    eos_token_id = 2

    def decode(self, ids: list[int], skip_special_tokens: bool = True) -> str:
        return " ".join(map(str, ids))


class FakeLLM:
    instances: ClassVar[list[FakeLLM]] = []

    def __init__(self, **kwargs) -> None:
        self.kwargs = kwargs
        self.requests: list = []
        FakeLLM.instances.append(self)

    def get_tokenizer(self) -> FakeTokenizer:
        return FakeTokenizer()

    def generate(self, prompts, sampling_params, use_tqdm):
        self.requests.append((prompts, sampling_params))
        outputs = []
        for prompt, params in zip(prompts, sampling_params, strict=True):
            first = prompt["prompt_token_ids"][0]
            stopped = SimpleNamespace(token_ids=[first, 5, 2], finish_reason="stop")
            capped = SimpleNamespace(token_ids=[first, 9, 9], finish_reason="length")
            outputs.append(SimpleNamespace(outputs=[stopped, capped][: params.n]))
        return outputs


@pytest.fixture
def fake_vllm(monkeypatch: pytest.MonkeyPatch) -> types.ModuleType:
    module = types.ModuleType("vllm")
    module.LLM = FakeLLM
    module.SamplingParams = lambda **kw: SimpleNamespace(**kw)
    inputs = types.ModuleType("vllm.inputs")
    inputs.TokensPrompt = dict  # a TypedDict in vLLM: building one gives a plain dict
    monkeypatch.setitem(sys.modules, "vllm", module)
    monkeypatch.setitem(sys.modules, "vllm.inputs", inputs)
    FakeLLM.instances.clear()
    return module


def test_outputs_become_samples(fake_vllm, tmp_path: Path) -> None:
    (tmp_path / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 8]}))
    sampler = VLLMSampler(str(tmp_path), seed=3, dtype="bfloat16", gpu_memory_utilization=0.5)
    llm = FakeLLM.instances[-1]
    assert llm.kwargs == {
        "model": str(tmp_path), "seed": 3, "dtype": "bfloat16", "gpu_memory_utilization": 0.5,
    }  # fmt: skip
    assert sampler.eos_ids == {2, 8}
    out = sampler.generate([[11, 12], [13]], SamplingParams(n=2, temperature=0.6, max_new_tokens=3))
    assert [[s.completion_ids for s in row] for row in out] == [
        [[11, 5, 2], [11, 9, 9]],  # the stopping EOS (2) is kept; a capped one has none
        [[13, 5, 2], [13, 9, 9]],
    ]
    assert [s.truncated for s in out[0]] == [False, True]
    assert out[0][0].text == "11 5"
    prompts, params = llm.requests[-1]
    assert prompts == [{"prompt_token_ids": [11, 12]}, {"prompt_token_ids": [13]}]
    assert (params[0].n, params[0].max_tokens, params[0].temperature) == (2, 3, 0.6)
    assert [p.seed for p in params] == [None, None]


def test_set_seed_seeds_the_next_call_only(fake_vllm, tmp_path: Path) -> None:
    sampler = VLLMSampler(str(tmp_path))
    sampler.set_seed(100)
    sampler.generate([[1], [2]], SamplingParams(temperature=0))
    _, params = FakeLLM.instances[-1].requests[-1]
    assert [p.seed for p in params] == [100, 101]
    assert params[0].top_p == 1.0  # greedy: nucleus sampling off
    sampler.generate([[1]], SamplingParams())
    assert FakeLLM.instances[-1].requests[-1][1][0].seed is None
