"""HFSampler keeps the EOS that stopped a completion (docs/ALGORITHMS.md §6), on the bundled model.

The crafted cases make an ordinary token the EOS, so where a completion must stop is known
from a greedy run beforehand.
"""

import copy

import pytest
import torch

from aapo.algorithms.losses import aggregate_loss, nll_policy_loss
from aapo.models import load_model, load_tokenizer
from aapo.rollout import HFSampler, SamplingParams
from aapo.training.logprobs import completion_logprobs, pack

GREEDY = SamplingParams(n=1, temperature=0.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def tokenizer():
    return load_tokenizer("bundled")


@pytest.fixture(scope="module")
def model():
    return load_model("bundled")


@pytest.fixture(scope="module")
def prompt(tokenizer):
    from aapo.data.prompts import build_messages, encode_prompt

    return encode_prompt(tokenizer, build_messages("What is 7 + 5?", None, "{problem}"))


def with_eos(model, token: int):
    """A copy of `model` whose generation config stops on `token` (and nothing else)."""
    crafted = copy.deepcopy(model)
    crafted.generation_config.eos_token_id = [token]
    return crafted


def _greedy_free_run(model, tokenizer, prompt) -> list[int]:
    """Greedy tokens with no stop at all (EOS set to a token the model never emits)."""
    never = tokenizer.pad_token_id
    sampler = HFSampler(with_eos(model, never), tokenizer)
    sampler.eos_ids = [never]  # the tokenizer's own EOS must not stop it either
    return sampler.generate([prompt], GREEDY)[0][0].completion_ids


def test_to_sample_keeps_the_eos_and_drops_what_follows(model, tokenizer):
    sampler = HFSampler(model, tokenizer)
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    stopped = sampler._to_sample([30, 31, eos, pad, pad])
    assert stopped.completion_ids == [30, 31, eos] and not stopped.truncated
    assert stopped.text == tokenizer.decode([30, 31])
    capped = sampler._to_sample([30, 31, 32])
    assert capped.completion_ids == [30, 31, 32] and capped.truncated
    # pad == EOS (SmolLM2, Llama): the first EOS ends it, the padding EOS ids after it go
    assert sampler._to_sample([eos, eos, eos]).completion_ids == [eos]


def test_bundled_model_stops_on_im_end_and_keeps_it(model, tokenizer, prompt):
    params = SamplingParams(n=1, temperature=0.0, max_new_tokens=64)
    sample = HFSampler(model, tokenizer).generate([prompt], params)[0][0]
    assert not sample.truncated
    assert sample.completion_ids[-1] == tokenizer.convert_tokens_to_ids("<|im_end|>")
    assert "<|im_end|>" not in sample.text and "\\boxed" in sample.text
    assert sample.text == tokenizer.decode(sample.completion_ids[:-1], skip_special_tokens=True)


def test_crafted_eos_mid_completion(model, tokenizer, prompt):
    free = _greedy_free_run(model, tokenizer, prompt)
    stop_at = next(i for i in range(2, len(free)) if free[i] not in free[:i])
    sampler = HFSampler(with_eos(model, free[stop_at]), tokenizer)
    sampler.eos_ids = [free[stop_at]]
    sample = sampler.generate([prompt], GREEDY)[0][0]
    assert sample.completion_ids == free[: stop_at + 1]
    assert not sample.truncated
    assert sample.text == tokenizer.decode(free[:stop_at], skip_special_tokens=True)


def test_sampled_batch_ends_each_completion_at_its_first_eos(model, tokenizer, prompt):
    # every digit is an EOS: hot samples stop after 1-4 tokens or run to the cap of 4
    digits = tokenizer.convert_tokens_to_ids(list("0123456789"))
    sampler = HFSampler(with_eos(model, digits[0]), tokenizer)
    sampler.eos_ids = digits
    torch.manual_seed(0)
    params = SamplingParams(n=8, temperature=5.0, max_new_tokens=4)
    flat = [s for group in sampler.generate([prompt, prompt], params) for s in group]
    assert {s.truncated for s in flat} == {True, False}  # both kinds occur at this seed
    assert len({len(s.completion_ids) for s in flat if not s.truncated}) > 1
    for sample in flat:
        ids = sample.completion_ids
        if sample.truncated:
            assert not set(ids) & set(digits) and len(ids) == params.max_new_tokens
        else:
            assert ids[-1] in digits and not set(ids[:-1]) & set(digits)


def test_eos_only_completion_with_negative_advantage_is_trained(model, tokenizer, prompt):
    # the EOS is the first greedy token: the completion is that one token, and with
    # advantage -1 the loss must push its probability down (before, it was [] and had no gradient)
    free = _greedy_free_run(model, tokenizer, prompt)
    sampler = HFSampler(with_eos(model, free[0]), tokenizer)
    sampler.eos_ids = [free[0]]
    sample = sampler.generate([prompt], GREEDY)[0][0]
    assert sample.completion_ids == [free[0]] and sample.text == ""

    policy = copy.deepcopy(model)
    input_ids, attention, mask = pack([prompt], [sample.completion_ids], tokenizer.pad_token_id)
    logps = completion_logprobs(policy, input_ids, attention, mask.shape[1])
    per_token, _ = nll_policy_loss(logps, advantages=torch.tensor([-1.0]))
    num_tokens = mask.sum()
    assert num_tokens == 1  # the EOS counts in the normaliser N
    loss = aggregate_loss(per_token, mask, "token_mean", num_tokens=num_tokens, num_sequences=1)
    loss.backward()
    grad = torch.stack([p.grad.norm() for p in policy.parameters() if p.grad is not None])
    assert grad.norm() > 0
