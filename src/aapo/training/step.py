"""One optimizer step of Algorithm 1, top to bottom.

1. sample G completions per prompt from the policy;
2. (estimators that need it, i.e. AAPO) sample G completions per prompt from the frozen reference;
3. score both with the weighted reward functions;
4. advantages, computed on the whole batch (gathered across processes, so batch-level options
   such as scale_rewards=batch or GPG's alpha see every group);
5. loss over micro-batches, each normalised by token/sequence counts of the WHOLE step, so the
   gradient does not depend on how the step is split into micro-batches or processes;
6. clip gradients and take the optimizer step;
7. metrics.
With one update per batch the sampling policy is the current one, so the ratio's "old"
log-probs are the same forward pass, detached: no second forward is ever computed.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from aapo.algorithms import (
    CLIP_METRIC_NAMES,
    Algorithm,
    aggregate_loss,
    as_groups,
    combine_rewards,
    compute_advantages,
    get_policy_loss,
    group_stats,
    k3_kl,
)
from aapo.data.rows import PromptRow
from aapo.rollout import Sample, Sampler, SamplingParams
from aapo.training.config import TrainConfig
from aapo.training.logprobs import completion_logprobs, pack
from aapo.training.scoring import RewardScorer


@dataclass
class StepParts:
    """What a step needs; built once by the trainer."""

    config: TrainConfig
    algorithm: Algorithm
    advantage_name: str
    model: Any  # the trained policy, possibly wrapped for distributed training
    policy_sampler: Sampler
    reference_sampler: Sampler | None
    reference_model: Any | None  # for the KL term (beta > 0); None otherwise
    scorer: RewardScorer
    optimizer: torch.optim.Optimizer
    scheduler: Any
    accelerator: Any
    pad_id: int
    advantage_options: dict[str, Any] = field(default_factory=dict)  # by the estimator's signature


@dataclass
class Scored:
    """Samples of one side (policy or reference) and their rewards; [B, G] tensors."""

    samples: list[Sample]  # [N] = B·G, group-major
    per_function: torch.Tensor  # [K, N], NaN = not applicable
    rewards: torch.Tensor  # [B, G]
    valid: torch.Tensor  # [B, G]


@dataclass
class GatheredRewards:
    """Every process's rewards, stacked prompt-major: what batch-level statistics need."""

    rewards: torch.Tensor  # [B, G]
    valid: torch.Tensor  # [B, G]
    per_function: torch.Tensor  # [N, K]
    ref_rewards: torch.Tensor | None  # [B, G]
    ref_valid: torch.Tensor | None  # [B, G]

    @classmethod
    def gather(cls, acc: Any, policy: Scored, ref: Scored | None) -> GatheredRewards:
        return cls(
            rewards=acc.gather(policy.rewards),
            valid=acc.gather(policy.valid),
            per_function=acc.gather(policy.per_function.T),
            ref_rewards=acc.gather(ref.rewards) if ref is not None else None,
            ref_valid=acc.gather(ref.valid) if ref is not None else None,
        )


@contextlib.contextmanager
def _timed(times: dict[str, float], key: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    times[key] = times.get(key, 0.0) + time.perf_counter() - start


def train_step(parts: StepParts, rows: list[PromptRow]) -> dict[str, float]:
    """Run one step on this process's prompts `rows`; return the step's (global) metrics."""
    cfg, acc = parts.config, parts.accelerator
    G = cfg.num_generations
    params = SamplingParams(G, cfg.temperature, cfg.top_p, cfg.max_completion_length)
    prompt_ids = [row.prompt_ids for row in rows]
    times: dict[str, float] = {}

    with _timed(times, "time/policy_generation"):  # 1
        policy_samples = _flatten(parts.policy_sampler.generate(prompt_ids, params))
    ref_samples = None
    if parts.reference_sampler is not None:  # 2
        with _timed(times, "time/reference_generation"):
            ref_samples = _flatten(parts.reference_sampler.generate(prompt_ids, params))

    with _timed(times, "time/rewards"):  # 3
        policy = _score(parts, rows, policy_samples)
        ref = _score(parts, rows, ref_samples) if ref_samples is not None else None

    # 4: gather [B_local, G] → [B, G] across processes, compute, keep this process's rows
    gathered = GatheredRewards.gather(acc, policy, ref)
    result = compute_advantages(
        parts.advantage_name,
        gathered.rewards,
        valid=gathered.valid,
        ref_rewards=gathered.ref_rewards,
        ref_valid=gathered.ref_valid,
        **parts.advantage_options,
    )
    local = slice(acc.process_index * len(rows), (acc.process_index + 1) * len(rows))
    advantages = result.advantages[local].reshape(-1)  # [N_local]

    with _timed(times, "time/update"):  # 5, 6
        update = _update(parts, prompt_ids, policy.samples, advantages)

    metrics = _metrics(parts, gathered, policy, result.advantages, update)  # 7
    metrics.update(result.metrics)
    metrics.update(times)
    metrics["time/step"] = sum(times.values())
    return metrics


def _flatten(groups: list[list[Sample]]) -> list[Sample]:
    return [sample for group in groups for sample in group]


def _score(parts: StepParts, rows: list[PromptRow], samples: list[Sample]) -> Scored:
    """TRL's reward call: dataset columns repeated once per completion of the row's group."""
    G = parts.config.num_generations
    columns = {key: [row.columns[key] for row in rows for _ in range(G)] for key in rows[0].columns}
    per_function = parts.scorer.score(
        columns["problem"],
        [s.text for s in samples],
        [s.completion_ids for s in samples],
        columns,
    )
    rewards, valid = combine_rewards(per_function, parts.scorer.weights)
    return Scored(samples, per_function, as_groups(rewards, G), as_groups(valid, G))


@dataclass
class UpdateResult:
    loss: float
    grad_norm: float
    num_tokens: int
    kl: float | None
    clip_fractions: dict[str, float]


def _update(
    parts: StepParts, prompt_ids: list[list[int]], samples: list[Sample], advantages: torch.Tensor
) -> UpdateResult:
    """Steps 5 and 6: micro-batched loss with whole-step normalisers, then one optimizer step."""
    cfg, acc = parts.config, parts.accelerator
    G = cfg.num_generations
    prompts = [p for p in prompt_ids for _ in range(G)]  # [N_local]
    completions = [s.completion_ids for s in samples]
    keep = [not (cfg.mask_truncated_completions and s.truncated) for s in samples]
    lengths = torch.tensor([len(c) if k else 0 for c, k in zip(completions, keep, strict=True)])
    # whole-step normalisers, summed over every process
    totals = acc.reduce(
        torch.tensor([lengths.sum().item(), len(samples)], dtype=torch.float64), "sum"
    )
    num_tokens, num_sequences = totals[0].item(), int(totals[1].item())
    # DDP averages gradients over processes; each process's loss is already a share of the
    # global sum, so undo that average
    scale = acc.num_processes

    loss_fn = get_policy_loss(parts.algorithm.policy_loss)
    device = acc.device
    size = cfg.per_device_train_batch_size
    starts = list(range(0, len(samples), size))
    total_loss, kl_sum, clip_sums = 0.0, 0.0, {}
    parts.model.train()
    for index, start in enumerate(starts):
        chunk = slice(start, start + size)
        input_ids, attention, mask = pack(prompts[chunk], completions[chunk], parts.pad_id)
        mask = mask * torch.tensor(keep[chunk], dtype=mask.dtype).unsqueeze(1)
        input_ids, attention, mask = input_ids.to(device), attention.to(device), mask.to(device)
        last = index == len(starts) - 1
        sync = contextlib.nullcontext() if last else acc.no_sync(parts.model)
        with sync:
            logps = completion_logprobs(parts.model, input_ids, attention, mask.shape[1])
            adv = advantages[chunk].to(device)
            per_token, masks = loss_fn(
                logps,
                advantages=adv,
                old_logps=logps.detach(),
                epsilon_low=cfg.epsilon,
                epsilon_high=cfg.epsilon_high,
            )
            if parts.reference_model is not None and cfg.beta > 0:
                with torch.no_grad():
                    ref_logps = completion_logprobs(
                        parts.reference_model, input_ids, attention, mask.shape[1]
                    )
                kl = k3_kl(logps, ref_logps)
                per_token = per_token + cfg.beta * kl
                kl_sum += (kl.detach() * mask).sum().item()
            loss = aggregate_loss(
                per_token,
                mask,
                _aggregation(parts),
                num_tokens=num_tokens,
                num_sequences=num_sequences,
                max_completion_length=cfg.max_completion_length,
            )
            acc.backward(loss * scale)
        total_loss += loss.item()
        for key, flags in masks.items():
            clip_sums[key] = clip_sums.get(key, 0.0) + (flags.float() * mask).sum().item()

    grad_norm = _clip_and_step(parts)
    reduced = acc.reduce(
        torch.tensor([total_loss, kl_sum, *clip_sums.values()], dtype=torch.float64), "sum"
    ).tolist()
    denominator = max(num_tokens, 1.0)
    return UpdateResult(
        loss=reduced[0],
        grad_norm=grad_norm,
        num_tokens=int(num_tokens),
        kl=reduced[1] / denominator if cfg.beta > 0 else None,
        clip_fractions={k: v / denominator for k, v in zip(clip_sums, reduced[2:], strict=True)},
    )


def _aggregation(parts: StepParts) -> str:
    return parts.config.loss_aggregation or parts.algorithm.aggregation


def _clip_and_step(parts: StepParts) -> float:
    cfg, acc = parts.config, parts.accelerator
    params = [p for p in parts.model.parameters() if p.requires_grad]
    if cfg.max_grad_norm > 0:
        norm = acc.clip_grad_norm_(params, cfg.max_grad_norm)
    else:
        norm = torch.linalg.vector_norm(
            torch.stack([p.grad.detach().norm() for p in params if p.grad is not None])
        )
    parts.optimizer.step()
    parts.scheduler.step()
    parts.optimizer.zero_grad(set_to_none=True)
    return float(norm)


def _metrics(
    parts: StepParts,
    gathered: GatheredRewards,
    policy: Scored,
    advantages: torch.Tensor,
    update: UpdateResult,
) -> dict[str, float]:
    acc = parts.accelerator
    rewards, valid = gathered.rewards, gathered.valid  # [B, G]
    stats = group_stats(rewards, valid)
    lengths = torch.tensor([len(s.completion_ids) for s in policy.samples], dtype=torch.float32)
    truncated = torch.tensor([float(s.truncated) for s in policy.samples])
    lengths, truncated = acc.gather(lengths), acc.gather(truncated)
    terminated = lengths[truncated == 0]
    out: dict[str, float] = {
        "reward": _mean(rewards[valid]),
        "reward_std": stats.std.mean().item(),
        "frac_reward_zero_std": stats.tied.float().mean().item(),
        "advantage/zero_frac": (advantages == 0).float().mean().item(),
        "completions/mean_length": lengths.mean().item(),
        "completions/min_length": lengths.min().item(),
        "completions/max_length": lengths.max().item(),
        "completions/clipped_ratio": truncated.mean().item(),
        "completions/mean_terminated_length": _mean(terminated),
        "loss": update.loss,
        "grad_norm": update.grad_norm,
        "learning_rate": parts.scheduler.get_last_lr()[0],
        "num_tokens": float(update.num_tokens),
    }
    per_function = gathered.per_function  # [N, K]
    for k, name in enumerate(parts.scorer.names):
        column = per_function[:, k]
        present = column[~torch.isnan(column)]
        out[f"rewards/{name}/mean"] = _mean(present)
        out[f"rewards/{name}/std"] = present.std().item() if present.numel() > 1 else 0.0
    if gathered.ref_rewards is not None:
        out["ref_reward"] = _mean(gathered.ref_rewards[gathered.ref_valid])
    if update.kl is not None:
        out["kl"] = update.kl
    for key, value in update.clip_fractions.items():
        out[CLIP_METRIC_NAMES.get(key, f"clip_ratio/{key}")] = value
    out.update(_sum_counts(acc, parts.scorer.pop_metrics()))
    return out


def _sum_counts(acc: Any, counts: dict[str, float]) -> dict[str, float]:
    """Sum event counts over processes; keys may differ between processes."""
    if acc.num_processes == 1:
        return counts
    from accelerate.utils import gather_object

    total: dict[str, float] = {}
    for part in gather_object([counts]):
        for key, value in part.items():
            total[key] = total.get(key, 0.0) + value
    return total


def _mean(values: torch.Tensor) -> float:
    return values.float().mean().item() if values.numel() else float("nan")
