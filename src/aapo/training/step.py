"""One generation batch of Algorithm 1, top to bottom, and the optimizer steps it feeds.

1. sample G completions per prompt from the policy;
2. (estimators that need it, i.e. AAPO) sample G completions per prompt from the frozen reference;
3. score both with the weighted reward functions (1-3: collect.py; with group selection,
   tied groups are replaced by new prompts there);
4. advantages, computed on the whole generation batch (gathered across processes, so
   batch-level options such as scale_rewards=batch or GPG's alpha see every group);
5. loss over micro-batches, each normalised by token/sequence counts of the WHOLE optimizer
   step, so the gradient does not depend on how the step is split (update.py);
6. clip gradients and take the optimizer step;
7. metrics, one dict per optimizer step.
A generation batch feeds `num_iterations` × (steps_per_generation / gradient_accumulation_steps)
optimizer steps (TRL's μ and steps_per_generation). With one update per batch the sampling
policy is the current one, so the ratio's "old" log-probs are the same forward pass, detached;
otherwise they are computed once per generation batch, before its first update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from aapo.algorithms import (
    CLIP_METRIC_NAMES,
    Algorithm,
    compute_advantages,
    get_policy_loss,
    group_stats,
    policy_loss_uses_ratio,
)
from aapo.data.rows import PromptRow
from aapo.rollout import Sampler, SamplingParams
from aapo.rollout.reference_cache import ReferenceCache
from aapo.training.collect import Batch, Scored, collect, timed
from aapo.training.config import TrainConfig
from aapo.training.scoring import RewardScorer
from aapo.training.update import (
    LossSettings,
    MicroBatch,
    UpdateResult,
    fill_fixed_logprobs,
    micro_batches,
    optimizer_step,
)


@dataclass
class StepParts:
    """What a step needs; built once by the trainer."""

    config: TrainConfig
    algorithm: Algorithm
    advantage_name: str
    model: Any  # the trained policy, possibly wrapped for distributed training
    policy_sampler: Sampler
    reference_sampler: Sampler | None
    reference_cache: ReferenceCache | None  # precomputed reference rewards (AAPO), if any
    # the reference's log-probs of a micro-batch, for the KL term (beta > 0); None otherwise
    reference_logprobs: Callable[[MicroBatch], torch.Tensor] | None
    scorer: RewardScorer
    optimizer: torch.optim.Optimizer
    scheduler: Any
    accelerator: Any
    pad_id: int
    advantage_options: dict[str, Any] = field(default_factory=dict)  # by the estimator's signature
    share_prompts: bool = True  # the loss computes each group's prompt once (update.py)


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


@dataclass
class StepOutput:
    """What one optimizer step reports."""

    metrics: dict[str, float]  # global
    completions: list[dict[str, Any]] | None  # the generation batch's samples (log_completions)


def train_round(
    parts: StepParts, rows: list[PromptRow], draw_more: Callable[[], list[PromptRow]]
) -> Iterator[StepOutput]:
    """Run one generation batch on this process's prompts `rows`; yield each optimizer
    step's output as soon as the step is taken."""
    cfg, acc = parts.config, parts.accelerator
    params = SamplingParams(
        cfg.num_generations, cfg.temperature, cfg.top_p, cfg.max_completion_length
    )
    batch = collect(  # 1-3
        rows,
        draw_more,
        policy_sampler=parts.policy_sampler,
        reference_sampler=parts.reference_sampler,
        reference_cache=parts.reference_cache,
        scorer=parts.scorer,
        params=params,
        accelerator=acc,
        min_informative=cfg.informative_target(),
        max_rounds=cfg.max_sampling_rounds,
    )
    gathered = GatheredRewards.gather(acc, batch.policy, batch.reference)  # 4
    result = compute_advantages(
        parts.advantage_name,
        gathered.rewards,
        valid=gathered.valid,
        ref_rewards=gathered.ref_rewards,
        ref_valid=gathered.ref_valid,
        **parts.advantage_options,
    )
    local = slice(acc.process_index * len(batch.rows), (acc.process_index + 1) * len(batch.rows))
    advantages = result.advantages[local].reshape(-1)  # [N_local]
    rollout = _rollout_metrics(parts, gathered, batch.policy, result.advantages)
    rollout.update(result.metrics)
    table = completion_table(parts, batch, advantages) if cfg.log_completions else None
    for metrics in _updates(parts, batch, advantages, {**rollout, **batch.metrics}):
        yield StepOutput(metrics, table)


def _updates(
    parts: StepParts, batch: Batch, advantages: torch.Tensor, rollout: dict[str, float]
) -> Iterator[dict[str, float]]:
    """Steps 5-7 for every optimizer step the generation batch feeds."""
    cfg = parts.config
    times: dict[str, float] = {}
    with timed(times, "time/update"):
        batches = micro_batches(
            [row.prompt_ids for row in batch.rows],
            batch.policy.samples,
            advantages,
            size=cfg.per_device_train_batch_size,
            per_step=cfg.gradient_accumulation_steps,
            pad_id=parts.pad_id,
            mask_truncated=cfg.mask_truncated_completions,
            device=parts.accelerator.device,
            shared=parts.share_prompts,
        )
        per_step = cfg.gradient_accumulation_steps
        off_policy = cfg.num_iterations > 1 or len(batches) > per_step
        needs_old = off_policy and policy_loss_uses_ratio(parts.algorithm.policy_loss)
        fill_fixed_logprobs(
            batches,
            policy=parts.model if needs_old else None,
            reference_logprobs=parts.reference_logprobs if cfg.beta > 0 else None,
            temperature=cfg.temperature,
        )
    settings = _loss_settings(parts)
    for _ in range(cfg.num_iterations):
        for start in range(0, len(batches), per_step):
            with timed(times, "time/update"):
                update = optimizer_step(
                    batches[start : start + per_step],
                    settings,
                    model=parts.model,
                    optimizer=parts.optimizer,
                    scheduler=parts.scheduler,
                    accelerator=parts.accelerator,
                )
            metrics = {**rollout, **_update_metrics(parts, update), **times}
            metrics["time/step"] = sum(v for k, v in metrics.items() if k.startswith("time/"))
            yield metrics
            rollout = {k: v for k, v in rollout.items() if not k.startswith("time/")}
            times = {}


def completion_table(
    parts: StepParts, batch: Batch, advantages: torch.Tensor
) -> list[dict[str, Any]]:
    """One row per policy completion of the generation batch (every process's, capped at
    log_completions_max_rows): prompt, completion, each reward, the advantage and, for AAPO,
    the paired reference completion's reward."""
    G = parts.config.num_generations
    ref = batch.reference
    rows = []
    for n, sample in enumerate(batch.policy.samples):
        b, i = divmod(n, G)
        scores = batch.policy.per_function[:, n].tolist()
        row = {
            "prompt": batch.rows[b].problem,
            "completion": sample.text,
            "rewards": {
                name: None if math.isnan(v) else v
                for name, v in zip(parts.scorer.names, scores, strict=True)
            },
            "reward": batch.policy.rewards[b, i].item(),
            "advantage": advantages[n].item(),
            "length": len(sample.completion_ids),
            "truncated": sample.truncated,
        }
        if ref is not None:
            row["ref_reward"] = ref.rewards[b, i].item()
        rows.append(row)
    everyone = _gather_rows(parts.accelerator, rows)
    return everyone[: parts.config.log_completions_max_rows]


def _gather_rows(acc: Any, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    if acc.num_processes == 1:
        return rows
    from accelerate.utils import gather_object

    return [row for part in gather_object([rows]) for row in part]


def _loss_settings(parts: StepParts) -> LossSettings:
    cfg = parts.config
    return LossSettings(
        loss_fn=get_policy_loss(parts.algorithm.policy_loss),
        aggregation=cfg.loss_aggregation or parts.algorithm.aggregation,
        temperature=cfg.temperature,
        epsilon_low=cfg.epsilon,
        epsilon_high=cfg.epsilon_high,
        beta=cfg.beta,
        max_completion_length=cfg.max_completion_length,
        max_grad_norm=cfg.max_grad_norm,
        share_prompts=parts.share_prompts,
    )


def _rollout_metrics(
    parts: StepParts, gathered: GatheredRewards, policy: Scored, advantages: torch.Tensor
) -> dict[str, float]:
    """What the generation batch shows: rewards, ties, lengths (every process's groups)."""
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
    }
    per_function = gathered.per_function  # [N, K]
    for k, name in enumerate(parts.scorer.names):
        column = per_function[:, k]
        present = column[~torch.isnan(column)]
        out[f"rewards/{name}/mean"] = _mean(present)
        out[f"rewards/{name}/std"] = present.std().item() if present.numel() > 1 else 0.0
    if gathered.ref_rewards is not None:
        out["ref_reward"] = _mean(gathered.ref_rewards[gathered.ref_valid])
    out.update(_sum_counts(acc, parts.scorer.pop_metrics()))
    return out


def _update_metrics(parts: StepParts, update: UpdateResult) -> dict[str, float]:
    out = {
        "loss": update.loss,
        "grad_norm": update.grad_norm,
        "learning_rate": parts.scheduler.get_last_lr()[0],
        "num_tokens": float(update.num_tokens),
    }
    if update.kl is not None:
        out["kl"] = update.kl
    for key, value in update.clip_fractions.items():
        out[CLIP_METRIC_NAMES.get(key, f"clip_ratio/{key}")] = value
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
