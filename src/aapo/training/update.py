"""Steps 5-6 of Algorithm 1: the loss over micro-batches and one optimizer step.

A generation batch is cut into micro-batches of `per_device_train_batch_size` completions,
packed once. Each optimizer step consumes `gradient_accumulation_steps` of them; its loss
normalisers (tokens, sequences) count that whole step over every process, so the gradient does
not depend on how the step is split into micro-batches or processes. Log-probabilities that do
not change during the updates on a batch (the sampling policy's, for the ratio when updates are
off-policy; the reference's, for the KL term) are computed once per generation batch.

Engine log-probs: samples from an inference engine (vLLM) carry the engine's log-prob of each
token they sampled. Every optimizer step then reports the engine/trainer mismatch
(`vllm/logprob_gap`, mean |log π_engine − log π_train| over the step's completion tokens, π_train
being the sampling policy as the trainer computes it at the sampling temperature) and, with
`is_cap`, weights each token's loss by the truncated importance ratio min(π_train / π_engine,
cap), detached (docs/ALGORITHMS.md §11), for every policy loss.

Little padding: within one optimizer step's completions (the step's set of rows is fixed, so
its loss is too), rows are ordered to pad least before the step is cut into micro-batches
(`bucket_order`), each micro-batch is as wide as its own longest prompt and completion, and
each distinct prompt in it is stored and computed once (`Packed`). Every per-row quantity
(advantage, loss mask, stored log-probs) travels with its row.

Left out: sampling and scoring (collect.py), advantages (step.py); a token budget per
micro-batch (the number of rows stays `per_device_train_batch_size`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from aapo.algorithms import aggregate_loss, k3_kl, truncated_importance_weights
from aapo.rollout import Sample
from aapo.training.logprobs import Packed, packed_logprobs


@dataclass
class MicroBatch:
    """Packed completions of one micro-batch, on the training device."""

    batch: Packed  # the rows' prompts (each distinct one once) and completions
    mask: torch.Tensor  # [n, T]: tokens in the loss
    advantages: torch.Tensor  # [n]
    old_logps: torch.Tensor | None = None  # [n, T], the sampling policy's (off-policy updates)
    ref_logps: torch.Tensor | None = None  # [n, T], the reference's (KL term)
    engine_logps: torch.Tensor | None = None  # [n, T], the sampling engine's (vLLM)

    @property
    def num_tokens(self) -> float:
        return float(self.mask.sum().item())


@dataclass
class UpdateResult:
    loss: float
    grad_norm: float
    num_tokens: int
    kl: float | None
    clip_fractions: dict[str, float]
    engine: dict[str, float] = field(default_factory=dict)  # vllm/*: the engine mismatch


@dataclass(frozen=True)
class LossSettings:
    """What the loss of one optimizer step needs besides the micro-batches."""

    loss_fn: Callable[..., Any]
    aggregation: str
    temperature: float  # log-probs are of logits / T, the distribution that was sampled
    epsilon_low: float
    epsilon_high: float | None
    beta: float
    max_completion_length: int
    max_grad_norm: float
    share_prompts: bool = True  # False: one prompt copy per row (gradient checkpointing)
    uses_ratio: bool = True  # the loss reads π_old (clipped surrogate); False: plain NLL
    is_cap: float | None = None  # truncated importance weights on engine samples; None: off


def micro_batches(
    prompt_ids: list[list[int]],
    samples: list[Sample],
    advantages: torch.Tensor,
    *,
    size: int,
    per_step: int,
    pad_id: int,
    mask_truncated: bool,
    device: Any,
    shared: bool = True,
) -> list[MicroBatch]:
    """Cut `samples` ([N_local], group-major; prompt b's group follows prompt_ids[b]) into
    micro-batches of `size` completions, `per_step` of them per optimizer step; the rows of
    each optimizer step are reordered (`bucket_order`; `shared`: the loss computes each
    distinct prompt of a micro-batch once), never moved to another step."""
    G = len(samples) // len(prompt_ids)
    prompt_of = [n // G for n in range(len(samples))]  # [N_local]
    prompt_lengths = [len(p) for p in prompt_ids]
    out = []
    for start in range(0, len(samples), size * per_step):
        rows = range(start, min(start + size * per_step, len(samples)))
        order = bucket_order(
            [prompt_of[n] for n in rows],
            [prompt_lengths[prompt_of[n]] for n in rows],
            [len(samples[n].completion_ids) for n in rows],
            size,
            shared=shared,
        )
        for first in range(0, len(order), size):
            chosen = [rows[i] for i in order[first : first + size]]
            batch = _packed_rows(prompt_ids, prompt_of, samples, chosen, pad_id)
            keep = [not (mask_truncated and samples[n].truncated) for n in chosen]
            mask = batch.completion_mask * torch.tensor(keep, dtype=torch.float32).unsqueeze(1)
            engine = _engine_logps([samples[n] for n in chosen], mask.shape)
            out.append(
                MicroBatch(
                    batch.to(device),
                    mask.to(device),
                    advantages[chosen].to(device),
                    engine_logps=None if engine is None else engine.to(device),
                )
            )
    return out


def _engine_logps(rows: list[Sample], shape: torch.Size) -> torch.Tensor | None:
    """The engine's log-probs of the rows' tokens, laid out as their completions [n, T]
    (0 past each end); None unless every row has them."""
    if any(s.logprobs is None for s in rows):
        return None
    out = torch.zeros(shape, dtype=torch.float32)
    for row, sample in enumerate(rows):
        if len(sample.logprobs) != len(sample.completion_ids):
            raise ValueError(
                f"a sample has {len(sample.logprobs)} engine log-probs for "
                f"{len(sample.completion_ids)} tokens"
            )
        out[row, : len(sample.logprobs)] = torch.tensor(sample.logprobs, dtype=torch.float32)
    return out


def bucket_order(
    prompts: Sequence[int],
    prompt_lengths: Sequence[int],
    lengths: Sequence[int],
    size: int,
    *,
    shared: bool = True,
) -> list[int]:
    """An order of the rows (their prompt ids, prompt and completion lengths) that pads least
    once cut into micro-batches of `size`: the one of {as given (groups whole), longest
    completion first, longest prompt + completion first} with the fewest computed tokens,
    each micro-batch being as wide as its widest prompt and completion, its prompts counted
    once each when `shared`, once per row otherwise. Ties keep the given order."""
    given = list(range(len(lengths)))
    candidates = [
        given,
        sorted(given, key=lambda i: -lengths[i]),
        sorted(given, key=lambda i: -(lengths[i] + prompt_lengths[i])),
    ]

    def cost(order: list[int]) -> int:
        total = 0
        for first in range(0, len(order), size):
            chunk = order[first : first + size]
            copies = len({prompts[i] for i in chunk}) if shared else len(chunk)
            total += copies * max(prompt_lengths[i] for i in chunk)
            total += len(chunk) * max(max(lengths[i] for i in chunk), 1)
        return total

    return min(candidates, key=cost)


def _packed_rows(
    prompt_ids: list[list[int]],
    prompt_of: list[int],
    samples: list[Sample],
    chosen: list[int],
    pad_id: int,
) -> Packed:
    """Rows `chosen` (indices into `samples`) with each distinct prompt stored once."""
    distinct = list(dict.fromkeys(prompt_of[n] for n in chosen))
    slot = {b: i for i, b in enumerate(distinct)}
    return Packed.build(
        [prompt_ids[b] for b in distinct],
        [slot[prompt_of[n]] for n in chosen],
        [samples[n].completion_ids for n in chosen],
        pad_id,
    )


@torch.no_grad()
def fill_fixed_logprobs(
    batches: list[MicroBatch],
    *,
    policy: Any | None,
    reference_logprobs: Callable[[MicroBatch], torch.Tensor] | None,
    temperature: float,
) -> None:
    """Log-probs that stay fixed during a generation batch's updates, computed once: the
    sampling policy's (when `policy` is given: a ratio loss, or engine samples, updated
    off-policy) and the reference's (when a KL term needs it).
    No gradient, so shared prompts are computed once whatever the model's checkpointing."""
    for mb in batches:
        if policy is not None:
            mb.old_logps = packed_logprobs(policy, mb.batch, temperature)
        if reference_logprobs is not None:
            mb.ref_logps = reference_logprobs(mb)


def optimizer_step(
    batches: list[MicroBatch],
    settings: LossSettings,
    *,
    model: Any,
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    accelerator: Any,
) -> UpdateResult:
    """Accumulate the loss of `batches` (one optimizer step) and step the optimizer."""
    acc = accelerator
    totals = acc.reduce(
        torch.tensor(
            [sum(mb.num_tokens for mb in batches), sum(len(mb.mask) for mb in batches)],
            dtype=torch.float64,
        ),
        "sum",
    )
    num_tokens, num_sequences = totals[0].item(), int(totals[1].item())
    # DDP averages gradients over processes; each process's loss is already a share of the
    # global sum, so undo that average
    scale = acc.num_processes
    total_loss, kl_sum, clip_sums, engine_sums = 0.0, 0.0, {}, {}
    model.train()
    for index, mb in enumerate(batches):
        last = index == len(batches) - 1
        with contextlib.nullcontext() if last else acc.no_sync(model):
            loss, kl, masks, engine = _micro_batch_loss(
                model, mb, settings, num_tokens, num_sequences
            )
            acc.backward(loss * scale)
        total_loss += loss.item()
        if kl is not None:
            kl_sum += (kl.detach() * mb.mask).sum().item()
        for key, flags in masks.items():
            clip_sums[key] = clip_sums.get(key, 0.0) + (flags.float() * mb.mask).sum().item()
        for key, values in engine.items():  # where, not multiply: padding may be -inf
            total = torch.where(mb.mask != 0, values, 0.0).sum().item()
            engine_sums[key] = engine_sums.get(key, 0.0) + total

    grad_norm = _clip_and_step(model, optimizer, scheduler, acc, settings.max_grad_norm)
    sums = [total_loss, kl_sum, *clip_sums.values(), *engine_sums.values()]
    reduced = acc.reduce(torch.tensor(sums, dtype=torch.float64), "sum").tolist()
    denominator = max(num_tokens, 1.0)
    clips = reduced[2 : 2 + len(clip_sums)]
    engines = reduced[2 + len(clip_sums) :]
    return UpdateResult(
        loss=reduced[0],
        grad_norm=grad_norm,
        num_tokens=int(num_tokens),
        kl=reduced[1] / denominator if settings.beta > 0 else None,
        clip_fractions={k: v / denominator for k, v in zip(clip_sums, clips, strict=True)},
        engine={k: v / denominator for k, v in zip(engine_sums, engines, strict=True)},
    )


def _micro_batch_loss(
    model: Any, mb: MicroBatch, settings: LossSettings, num_tokens: float, num_sequences: int
) -> tuple[torch.Tensor, torch.Tensor | None, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    batch = mb.batch if settings.share_prompts else mb.batch.unshared()
    logps = packed_logprobs(model, batch, settings.temperature)
    # on-policy (the first update on a batch, no stored old log-probs): ρ = 1 in value
    old = mb.old_logps if mb.old_logps is not None else logps.detach()
    per_token, masks = settings.loss_fn(
        logps,
        advantages=mb.advantages,
        old_logps=old,
        epsilon_low=settings.epsilon_low,
        epsilon_high=settings.epsilon_high,
    )
    engine: dict[str, torch.Tensor] = {}
    if mb.engine_logps is not None:  # [n, T] per-token sums, counted over the step's tokens
        engine["vllm/logprob_gap"] = (old - mb.engine_logps).abs()
        if settings.is_cap is not None:
            weight, clipped = truncated_importance_weights(old, mb.engine_logps, settings.is_cap)
            per_token = per_token * weight
            engine["vllm/is_weight_mean"] = weight
            engine["vllm/is_clipped_frac"] = clipped.float()
    kl = None
    if settings.beta > 0 and mb.ref_logps is not None:
        kl = k3_kl(logps, mb.ref_logps)
        per_token = per_token + settings.beta * kl
    loss = aggregate_loss(
        per_token,
        mb.mask,
        settings.aggregation,
        num_tokens=num_tokens,
        num_sequences=num_sequences,
        max_completion_length=settings.max_completion_length,
    )
    return loss, kl, masks, engine


def _clip_and_step(
    model: Any, optimizer: Any, scheduler: Any, acc: Any, max_grad_norm: float
) -> float:
    params = [p for p in model.parameters() if p.requires_grad]
    if max_grad_norm > 0:
        norm = acc.clip_grad_norm_(params, max_grad_norm)
    else:
        norm = torch.linalg.vector_norm(
            torch.stack([p.grad.detach().norm() for p in params if p.grad is not None])
        )
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return float(norm)
