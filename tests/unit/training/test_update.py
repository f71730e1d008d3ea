"""Micro-batches that pad little (rows reordered within an optimizer step, each distinct prompt
computed once) give the loss and gradient of the plain path: group-major micro-batches, one
forward pass over each row's prompt + completion. On the bundled model, per algorithm, with
several optimizer steps per generation batch, μ = 2 and a KL term."""

from types import SimpleNamespace

import pytest
import torch
from torch.testing import assert_close

from aapo.algorithms import get_algorithm, get_policy_loss
from aapo.models import load_model
from aapo.rollout import Sample
from aapo.training.builders import shares_prompts
from aapo.training.config import TrainConfig
from aapo.training.logprobs import Packed, packed_logprobs
from aapo.training.update import (
    LossSettings,
    MicroBatch,
    bucket_order,
    fill_fixed_logprobs,
    micro_batches,
    optimizer_step,
)

G, SIZE, PER_STEP = 4, 4, 2  # 4 prompts × 4 = 16 rows: 4 micro-batches, 2 optimizer steps
PAD = 0
LR = 1e-4


def _generation_batch():
    """Prompts of different lengths; completions of lengths 1-12, one truncated per group."""
    generator = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 300, (n,), generator=generator).tolist() for n in (5, 9, 3, 7)]
    lengths = torch.randint(1, 13, (len(prompts) * G,), generator=generator).tolist()
    samples = [
        Sample(torch.randint(3, 300, (n,), generator=generator).tolist(), f"row {i}", i % G == 1)
        for i, n in enumerate(lengths)
    ]
    advantages = torch.randn(len(samples), generator=generator)
    return prompts, samples, advantages


def _plain_micro_batches(prompts, samples, advantages):
    """Today's layout before bucketing: contiguous group-major chunks, a prompt copy per row."""
    out = []
    for start in range(0, len(samples), SIZE):
        rows = range(start, start + SIZE)
        batch = Packed.build(
            [prompts[n // G] for n in rows],
            list(range(SIZE)),
            [samples[n].completion_ids for n in rows],
            PAD,
        )
        keep = torch.tensor([not samples[n].truncated for n in rows], dtype=torch.float32)
        out.append(MicroBatch(batch, batch.completion_mask * keep[:, None], advantages[rows]))
    return out


def _settings(algorithm, share, beta):
    spec = get_algorithm(algorithm)
    return LossSettings(
        loss_fn=get_policy_loss(spec.policy_loss),
        aggregation=spec.aggregation,
        temperature=0.7,
        epsilon_low=0.2,
        epsilon_high=0.28,
        beta=beta,
        max_completion_length=12,
        max_grad_norm=0.0,  # no clipping: the parameter change is the gradient itself
        share_prompts=share,
    )


def _train(batches, algorithm, share, iterations, beta, reference, checkpointing=False):
    """Every optimizer step of one generation batch (SGD) on a fresh bundled model:
    → (losses, gradients), one per optimizer step."""
    torch.manual_seed(0)
    model = load_model("bundled")
    if checkpointing:
        model.gradient_checkpointing_enable()
    optimizer = torch.optim.SGD(model.parameters(), lr=LR)
    gradients = []
    step = optimizer.step
    optimizer.step = lambda: (
        gradients.append([p.grad.clone() for p in model.parameters()]),
        step(),
    )
    accelerator = SimpleNamespace(
        num_processes=1,
        reduce=lambda tensor, op: tensor,
        backward=lambda loss: loss.backward(),
        no_sync=lambda model: torch.enable_grad(),
    )
    needs_old = iterations > 1 and get_algorithm(algorithm).policy_loss == "clipped"
    fill_fixed_logprobs(
        batches,
        policy=model if needs_old else None,
        reference_logprobs=(lambda mb: packed_logprobs(reference, mb.batch, 0.7)) if beta else None,
        temperature=0.7,
    )
    losses = []
    for _ in range(iterations):
        for start in range(0, len(batches), PER_STEP):
            result = optimizer_step(
                batches[start : start + PER_STEP],
                _settings(algorithm, share, beta),
                model=model,
                optimizer=optimizer,
                scheduler=SimpleNamespace(step=lambda: None),
                accelerator=accelerator,
            )
            losses.append(result.loss)
    return losses, gradients


@pytest.fixture(scope="module")
def reference():
    model = load_model("bundled")
    with torch.no_grad():
        for p in model.parameters():  # a reference the policy differs from, so the KL acts
            p.add_(0.01 * torch.randn_like(p))
    return model


def _bucketed(prompts, samples, advantages, shared: bool = True):
    """The update's own micro-batches of the crafted generation batch."""
    return micro_batches(
        prompts,
        samples,
        advantages,
        size=SIZE,
        per_step=PER_STEP,
        pad_id=PAD,
        mask_truncated=True,
        device="cpu",
        shared=shared,
    )


@pytest.mark.parametrize(
    ("algorithm", "iterations", "beta"),
    [("aapo", 1, 0.0), ("grpo", 1, 0.0), ("grpo", 2, 0.0), ("dr_grpo", 2, 0.04), ("dapo", 2, 0.0)],
)
def test_bucketed_shared_prompt_steps_equal_the_plain_steps(algorithm, iterations, beta, reference):
    prompts, samples, advantages = _generation_batch()
    plain = _plain_micro_batches(prompts, samples, advantages)
    bucketed = _bucketed(prompts, samples, advantages)
    assert any(mb.batch.shares_prompts for mb in bucketed)
    padded = sum(mb.batch.completion_mask.numel() for mb in bucketed)
    assert padded < sum(mb.batch.completion_mask.numel() for mb in plain)  # it did reorder
    want_losses, want = _train(plain, algorithm, False, iterations, beta, reference)
    got_losses, got = _train(bucketed, algorithm, True, iterations, beta, reference)
    assert_close(got_losses, want_losses, rtol=1e-5, atol=1e-6)
    assert len(got_losses) == 2 * iterations and len(set(got_losses)) > 1
    assert len(got) == len(want) == 2 * iterations
    for got_step, want_step in zip(got, want, strict=True):  # float32 sums in another order
        _assert_close_in_norm(got_step, want_step)


def _assert_close_in_norm(got: list[torch.Tensor], want: list[torch.Tensor]) -> None:
    """Each tensor within 1e-4 of the other relative to its norm (float32 sums reordered)."""
    for got_tensor, want_tensor in zip(got, want, strict=True):
        error = (got_tensor - want_tensor).norm() / want_tensor.norm().clamp(min=1e-12)
        assert error < 1e-4


def test_gradient_checkpointing_turns_sharing_off_and_keeps_the_gradient(reference):
    assert not shares_prompts(TrainConfig(gradient_checkpointing=True))
    assert shares_prompts(TrainConfig())
    prompts, samples, advantages = _generation_batch()
    plain = _plain_micro_batches(prompts, samples, advantages)
    bucketed = _bucketed(prompts, samples, advantages, shared=False)
    # old log-probs (no gradient) still share prompts; the loss's forward passes cannot
    want_losses, want = _train(plain, "grpo", False, 2, 0.0, reference)
    got_losses, got = _train(bucketed, "grpo", False, 2, 0.0, reference, checkpointing=True)
    assert_close(got_losses, want_losses, rtol=1e-5, atol=1e-6)
    for got_step, want_step in zip(got, want, strict=True):
        _assert_close_in_norm(got_step, want_step)


def test_rows_keep_their_advantage_mask_and_optimizer_step():
    prompts, samples, advantages = _generation_batch()
    bucketed = _bucketed(prompts, samples, advantages)
    by_completion = {tuple(s.completion_ids): n for n, s in enumerate(samples)}
    for index, mb in enumerate(bucketed):
        input_ids, _ = mb.batch.joined()
        for row in range(len(mb.mask)):
            length = int(mb.batch.completion_mask[row].sum())
            n = by_completion[tuple(mb.batch.completion_ids[row, :length].tolist())]
            assert n // (SIZE * PER_STEP) == index // PER_STEP  # never moved to another step
            assert mb.advantages[row] == advantages[n]
            assert bool(mb.mask[row].any()) == (not samples[n].truncated)
            prompt = input_ids[row, : mb.batch.prompt_ids.shape[1]]
            assert prompt[prompt != PAD].tolist() == prompts[n // G]


def test_bucket_order_worked_examples():
    # two groups (prompts 0 and 1, 10 tokens each), completions 2 or 20 tokens, micro-batch 2.
    # as given: [20, 2 | 2, 20] → 2 × (10 + 20) per micro-batch = 60 tokens each, 120 in all;
    # longest first: [20, 20 | 2, 2] → (2 prompts × 10 + 2 × 20) + (2 × 10 + 2 × 2) = 84
    prompts, prompt_lengths, lengths = [0, 0, 1, 1], [10] * 4, [20, 2, 2, 20]
    assert bucket_order(prompts, prompt_lengths, lengths, 2) == [0, 3, 1, 2]
    # with 100-token prompts, keeping groups whole costs 2 × (100 + 2 × 20) = 280 against
    # (200 + 40) + (200 + 4) = 444: the given order stays
    assert bucket_order(prompts, [100] * 4, lengths, 2) == [0, 1, 2, 3]
    # without sharing every row pays its prompt: sorting wins again (2 × 2 × 100 + 48 < 480)
    assert bucket_order(prompts, [100] * 4, lengths, 2, shared=False) == [0, 3, 1, 2]


def test_shared_prompts_give_the_joined_values_and_gradient():
    model = load_model("bundled")
    prompts, samples, _ = _generation_batch()
    index = [n // G for n in range(len(samples))]
    shared = Packed.build(prompts, index, [s.completion_ids for s in samples], PAD)
    assert shared.shares_prompts and not shared.unshared().shares_prompts
    weights = torch.randn(shared.completion_mask.shape) * shared.completion_mask
    runs = []
    for batch in (shared, shared.unshared()):
        model.zero_grad()
        values = packed_logprobs(model, batch, 0.7)
        (values * weights).sum().backward()
        runs.append((values * shared.completion_mask, [p.grad.clone() for p in model.parameters()]))
    (got, got_grads), (want, want_grads) = runs
    assert_close(got, want, rtol=1e-5, atol=1e-6)
    _assert_close_in_norm(got_grads, want_grads)


def test_a_model_that_drops_the_cache_is_refused_not_misread():
    # gradient checkpointing in training drops the KV cache; the completions would then be
    # scored without their prompt
    model = load_model("bundled")
    model.gradient_checkpointing_enable()
    model.train()
    prompts, samples, _ = _generation_batch()
    batch = Packed.build(prompts[:1], [0, 0], [s.completion_ids for s in samples[:2]], PAD)
    with pytest.raises(RuntimeError, match="did not fill the KV cache"):
        packed_logprobs(model, batch)
    packed_logprobs(model, batch.unshared())  # the unshared layout needs no cache
