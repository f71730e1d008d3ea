"""One generation batch of Algorithm 1, top to bottom, and the optimizer steps it feeds.

1. sample G completions per prompt from the policy;
2. (estimators that need it, i.e. AAPO) the frozen reference's G completions per prompt, from
   whichever `Reference` the run was built with (sampled now, or read from a cache);
3. score both with the weighted reward functions (1-3: collect.py; with group selection,
   tied groups are replaced by new prompts there);
4. advantages, computed on the whole generation batch (gathered across processes, so
   batch-level options such as scale_rewards=batch or GPG's alpha see every group);
5. loss over micro-batches, each normalised by token/sequence counts of the WHOLE optimizer
   step, so the gradient does not depend on how the step is split (update.py);
6. clip gradients and take the optimizer step (update.py);
7. metrics, one dict per optimizer step (step_metrics.py).
A generation batch feeds `num_iterations` × (steps_per_generation / gradient_accumulation_steps)
optimizer steps (TRL's μ and steps_per_generation). With one update per batch the sampling
policy is the current one, so the ratio's "old" log-probs are the same forward pass, detached;
otherwise they are computed once per generation batch, before its first update.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch

from aapo.algorithms import compute_advantages
from aapo.data.rows import PromptRow
from aapo.metrics import timed
from aapo.rewards.scoring import RewardScorer
from aapo.rollout import Sampler, SamplingParams
from aapo.training.collect import Batch, collect
from aapo.training.config import TrainConfig
from aapo.training.reference import Reference
from aapo.training.step_metrics import (
    GatheredRewards,
    completion_table,
    rollout_metrics,
    update_metrics,
)
from aapo.training.update import (
    LossSettings,
    MicroBatch,
    fill_fixed_logprobs,
    micro_batches,
    optimizer_step,
)


@dataclass
class StepParts:
    """What a step needs; built once per run (training/builders.py)."""

    config: TrainConfig
    model: Any  # the trained policy, possibly wrapped for distributed training
    policy_sampler: Sampler
    reference: Reference | None  # AAPO's reference rollouts, sampled or cached; None: not needed
    # the reference's log-probs of a micro-batch, for the KL term (beta > 0); None otherwise
    reference_logprobs: Callable[[MicroBatch], torch.Tensor] | None
    scorer: RewardScorer
    optimizer: torch.optim.Optimizer
    scheduler: Any
    accelerator: Any
    pad_id: int
    # pushes the policy's weights into its rollout engine when they changed (sampler vllm);
    # returns the seconds it took. None: the sampler reads the live model
    sync_weights: Callable[[], float] | None
    sampling: SamplingParams  # G, temperature, top_p, max_completion_length
    estimator: str  # the advantage estimator's registered name
    loss: LossSettings
    advantage_options: dict[str, Any] = field(default_factory=dict)  # by the estimator's signature


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
    synced = {"time/weight_sync": parts.sync_weights()} if parts.sync_weights else {}
    batch = collect(  # 1, 2, 3
        rows,
        draw_more,
        policy_sampler=parts.policy_sampler,
        reference=parts.reference,
        scorer=parts.scorer,
        params=parts.sampling,
        accelerator=acc,
        min_informative=cfg.informative_target(),
        max_rounds=cfg.max_sampling_rounds,
    )
    gathered = GatheredRewards.gather(acc, batch.policy, batch.reference, batch.rows)  # 4
    result = compute_advantages(
        parts.estimator,
        gathered.rewards,
        valid=gathered.valid,
        ref_rewards=gathered.ref_rewards,
        ref_valid=gathered.ref_valid,
        **parts.advantage_options,
    )
    local = slice(acc.process_index * len(batch.rows), (acc.process_index + 1) * len(batch.rows))
    advantages = result.advantages[local].reshape(-1)  # [N_local]
    rollout = rollout_metrics(acc, parts.scorer, gathered, batch.policy, result.advantages)  # 7
    rollout.update(result.metrics)
    table = (
        completion_table(acc, parts.scorer.names, batch, advantages, cfg.log_completions_max_rows)
        if cfg.log_completions
        else None
    )
    for metrics in _updates(parts, batch, advantages, {**rollout, **synced, **batch.metrics}):
        yield StepOutput(metrics, table)


def _updates(
    parts: StepParts, batch: Batch, advantages: torch.Tensor, rollout: dict[str, float]
) -> Iterator[dict[str, float]]:
    """Steps 5-7 for every optimizer step the generation batch feeds."""
    cfg, settings = parts.config, parts.loss
    per_step = cfg.gradient_accumulation_steps
    times: dict[str, float] = {}
    with timed(times, "time/update"):
        batches = micro_batches(
            [row.prompt_ids for row in batch.rows],
            batch.policy.samples,
            advantages,
            size=cfg.per_device_train_batch_size,
            per_step=per_step,
            pad_id=parts.pad_id,
            mask_truncated=cfg.mask_truncated_completions,
            device=parts.accelerator.device,
            shared=settings.share_prompts,
        )
        off_policy = cfg.num_iterations > 1 or len(batches) > per_step
        # π_old is read by a ratio loss, and by the engine comparison of engine samples
        reads_old = settings.uses_ratio or any(mb.engine_logps is not None for mb in batches)
        fill_fixed_logprobs(
            batches,
            policy=parts.model if off_policy and reads_old else None,
            reference_logprobs=parts.reference_logprobs if cfg.beta > 0 else None,
            temperature=cfg.temperature,
        )
    for _ in range(cfg.num_iterations):
        for start in range(0, len(batches), per_step):
            with timed(times, "time/update"):
                update = optimizer_step(  # 5, 6
                    batches[start : start + per_step],
                    settings,
                    model=parts.model,
                    optimizer=parts.optimizer,
                    scheduler=parts.scheduler,
                    accelerator=parts.accelerator,
                )
            metrics = {**rollout, **update_metrics(update, parts.scheduler), **times}  # 7
            metrics["time/step"] = sum(v for k, v in metrics.items() if k.startswith("time/"))
            yield metrics
            rollout = {k: v for k, v in rollout.items() if not k.startswith("time/")}
            times = {}
