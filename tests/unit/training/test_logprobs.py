"""Training log-probs: tempered (docs/ALGORITHMS.md §6), exact, blockwise, and the LoRA reference.

The reference everywhere is the plain formula: log_softmax(logits / T) gathered at the
sampled tokens, with autograd through it.
"""

import pytest
import torch
from torch.testing import assert_close

from aapo.algorithms import k3_kl
from aapo.models import load_model, load_tokenizer
from aapo.training import logprobs
from aapo.training.logprobs import (
    Packed,
    adapter_disabled_logprobs,
    completion_logprobs,
    pack,
    tempered_token_logprobs,
)


def reference_logprobs(logits: torch.Tensor, targets: torch.Tensor, temperature: float):
    T = targets.shape[1]
    scaled = logits[:, :T].float() / temperature
    return torch.log_softmax(scaled, -1).gather(-1, targets.unsqueeze(-1)).squeeze(-1)


@pytest.fixture(scope="module")
def bundled():
    return load_model("bundled"), load_tokenizer("bundled")


def _prompts_and_completions(tokenizer):
    prompts = [tokenizer("What is 2 + 2?")["input_ids"], tokenizer("7 - 3 =")["input_ids"]]
    completions = [tokenizer(" <think> 4 </think>")["input_ids"], tokenizer(" 4")["input_ids"]]
    return prompts, completions


def _batch(tokenizer):
    return pack(*_prompts_and_completions(tokenizer), tokenizer.pad_token_id)


def _packed(tokenizer):
    prompts, completions = _prompts_and_completions(tokenizer)
    return Packed.build(prompts, [0, 1], completions, tokenizer.pad_token_id)


# block sizes: whole batch in one block; several rows per block; one row split into pieces
@pytest.mark.parametrize("block", [1 << 24, 2 * 5 * 11, 3 * 11])
@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_blockwise_values_and_gradient_equal_the_plain_formula(monkeypatch, block, temperature):
    monkeypatch.setattr(logprobs, "BLOCK_ELEMENTS", block)
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 11, generator=generator) * 3  # [n, T+1, V]: one spare position
    targets = torch.randint(0, 11, (4, 5), generator=generator)
    weights = torch.randn(4, 5, generator=generator)

    ours = logits.clone().requires_grad_(True)
    got = tempered_token_logprobs(ours, targets, temperature)
    (got * weights).sum().backward()
    plain = logits.clone().requires_grad_(True)
    expected = reference_logprobs(plain, targets, temperature)
    (expected * weights).sum().backward()

    assert_close(got, expected)
    assert_close(ours.grad, plain.grad)
    assert torch.equal(ours.grad[:, 5], torch.zeros(4, 11))  # the spare position predicts nothing


def test_only_the_logits_and_a_per_token_logsumexp_are_kept_for_backward():
    # a log_softmax(logits / T) would keep a second [n, T, V] float32 tensor alive
    logits = torch.randn(3, 5, 17, dtype=torch.bfloat16, requires_grad=True)
    targets = torch.randint(0, 17, (3, 4))
    out = tempered_token_logprobs(logits, targets, 0.7)
    saved = out.grad_fn.saved_tensors
    large = [x for x in saved if x.numel() >= logits.numel()]
    assert len(large) == 1 and large[0].data_ptr() == logits.data_ptr()
    assert sorted(tuple(x.shape) for x in saved if x is not large[0]) == [(3, 4), (3, 4)]
    out.sum().backward()
    assert logits.grad.dtype == torch.bfloat16  # the gradient comes back in the logits' dtype


def test_gradient_passes_gradcheck_in_float64(monkeypatch):
    monkeypatch.setattr(logprobs, "BLOCK_ELEMENTS", 7 * 2)  # several blocks per row
    logits = torch.randn(2, 4, 7, dtype=torch.float64, requires_grad=True)
    targets = torch.randint(0, 7, (2, 3))

    def value(x):  # float32 output: compare in float64 by feeding float64 through the formula
        return tempered_token_logprobs(x, targets, 0.7).double()

    assert torch.autograd.gradcheck(value, (logits,), eps=1e-3, atol=1e-3, rtol=1e-3)


@pytest.mark.parametrize("temperature", [0.7, 1.0])
def test_bundled_model_logprobs_are_of_logits_over_temperature(bundled, temperature):
    model, tokenizer = bundled
    input_ids, attention, mask = _batch(tokenizer)
    T = mask.shape[1]
    with torch.no_grad():
        got = completion_logprobs(model, input_ids, attention, T, temperature=temperature)
        positions = (attention.cumsum(-1) - 1).clamp(min=0)
        logits = model(input_ids=input_ids, attention_mask=attention, position_ids=positions).logits
    expected = reference_logprobs(logits[:, -T - 1 :], input_ids[:, -T:], temperature)
    assert got.dtype == torch.float32
    assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_temperature_changes_the_logprobs(bundled):
    # sampling at T = 0.7 and scoring at T = 1 biases the gradient; they must differ
    model, tokenizer = bundled
    input_ids, attention, mask = _batch(tokenizer)
    with torch.no_grad():
        cold = completion_logprobs(model, input_ids, attention, mask.shape[1], temperature=0.7)
        plain = completion_logprobs(model, input_ids, attention, mask.shape[1])
    assert (cold - plain).abs()[mask.bool()].min() > 1e-4


def test_bad_temperature_and_shapes_are_refused():
    with pytest.raises(ValueError, match="temperature must be > 0"):
        tempered_token_logprobs(torch.zeros(1, 2, 3), torch.zeros(1, 2, dtype=torch.long), 0.0)
    with pytest.raises(ValueError, match=r"logits \[n, >=T, V\]"):
        tempered_token_logprobs(torch.zeros(1, 1, 3), torch.zeros(1, 2, dtype=torch.long))


def test_lora_reference_is_the_base_and_kl_grows_once_the_adapter_moves(bundled):
    peft = pytest.importorskip("peft")
    base, tokenizer = bundled
    input_ids, attention, mask = _batch(tokenizer)
    packed = _packed(tokenizer)
    T = mask.shape[1]
    with torch.no_grad():
        base_logps = completion_logprobs(base, input_ids, attention, T, 0.7)
    model = peft.get_peft_model(
        load_model("bundled"), peft.LoraConfig(r=4, lora_alpha=8, task_type="CAUSAL_LM")
    )
    model.eval()  # no LoRA dropout: the numbers below are deterministic
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)

    def kl() -> torch.Tensor:
        policy = completion_logprobs(model, input_ids, attention, T, 0.7)
        reference = adapter_disabled_logprobs(model, packed, 0.7)
        assert not reference.requires_grad
        assert_close(reference, base_logps)  # the reference is the untouched base model
        return (k3_kl(policy, reference) * mask).sum() / mask.sum(), policy

    before, policy = kl()
    assert before.item() == pytest.approx(0.0, abs=1e-7)  # LoRA starts as the identity (B = 0)
    (-(policy * mask).sum()).backward()
    optimizer.step()
    after, _ = kl()
    assert after.item() > 1e-6


def test_adapter_disabled_logprobs_needs_a_peft_model(bundled):
    model, tokenizer = bundled
    packed = _packed(tokenizer)
    with pytest.raises(TypeError, match="peft model"):
        adapter_disabled_logprobs(model, packed)
