"""Step 7 of Algorithm 1: what a generation batch and each optimizer step report.

Rollout metrics (rewards, ties overall and by the rows' `level`, lengths, each reward
function's mean and spread, the reference's reward) are computed over every process's groups;
update metrics come from the optimizer step; the completion table (`log_completions`) lists
each policy completion with its rewards and advantage. Names follow TRL where TRL has one
(metrics.py).

Left out: writing them anywhere (metrics.py sinks, the trainer's logging).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import torch

from aapo.algorithms import CLIP_METRIC_NAMES, group_stats
from aapo.data.rows import PromptRow
from aapo.rewards.scoring import RewardScorer
from aapo.training.collect import Batch
from aapo.training.distributed import gather_lists
from aapo.training.scored import Scored
from aapo.training.update import UpdateResult


@dataclass
class GatheredRewards:
    """Every process's rewards, stacked prompt-major: what batch-level statistics need."""

    rewards: torch.Tensor  # [B, G]
    valid: torch.Tensor  # [B, G]
    per_function: torch.Tensor  # [N, K]
    ref_rewards: torch.Tensor | None  # [B, G]
    ref_valid: torch.Tensor | None  # [B, G]
    levels: list[Any]  # [B] each prompt's `level` column, None where its row has none

    @classmethod
    def gather(
        cls, acc: Any, policy: Scored, ref: Scored | None, rows: list[PromptRow]
    ) -> GatheredRewards:
        return cls(
            rewards=acc.gather(policy.rewards),
            valid=acc.gather(policy.valid),
            per_function=acc.gather(policy.per_function.T),
            ref_rewards=acc.gather(ref.rewards) if ref is not None else None,
            ref_valid=acc.gather(ref.valid) if ref is not None else None,
            levels=gather_lists(acc, [row.columns.get("level") for row in rows]),
        )


def rollout_metrics(
    acc: Any,
    scorer: RewardScorer,
    gathered: GatheredRewards,
    policy: Scored,
    advantages: torch.Tensor,
) -> dict[str, float]:
    """What the generation batch shows: rewards, ties, lengths (every process's groups)."""
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
    for k, name in enumerate(scorer.names):
        column = per_function[:, k]
        present = column[~torch.isnan(column)]
        out[f"rewards/{name}/mean"] = _mean(present)
        out[f"rewards/{name}/std"] = present.std().item() if present.numel() > 1 else 0.0
    if gathered.ref_rewards is not None:
        out["ref_reward"] = _mean(gathered.ref_rewards[gathered.ref_valid])
    out.update(level_ties(gathered.levels, stats.tied))
    out.update(_sum_counts(acc, scorer.pop_metrics()))
    return out


def level_ties(levels: list[Any], tied: torch.Tensor) -> dict[str, float]:
    """`ties/level_<L>`: the share of the batch's groups of level L whose rewards all tie
    (`frac_reward_zero_std` by level), for the levels the batch drew; rows without a level
    are left out."""
    by_level: dict[Any, list[bool]] = defaultdict(list)
    for level, is_tied in zip(levels, tied.tolist(), strict=True):
        if level is not None:
            by_level[level].append(is_tied)
    return {f"ties/level_{lv}": sum(v) / len(v) for lv, v in sorted(by_level.items(), key=str)}


def update_metrics(update: UpdateResult, scheduler: Any) -> dict[str, float]:
    """Loss, gradient norm, learning rate, tokens, KL and clip fractions of one step."""
    out = {
        "loss": update.loss,
        "grad_norm": update.grad_norm,
        "learning_rate": scheduler.get_last_lr()[0],
        "num_tokens": float(update.num_tokens),
    }
    if update.kl is not None:
        out["kl"] = update.kl
    for key, value in update.clip_fractions.items():
        out[CLIP_METRIC_NAMES.get(key, f"clip_ratio/{key}")] = value
    out.update(update.engine)  # vllm/*: engine samples only
    return out


def completion_table(
    acc: Any, names: list[str], batch: Batch, advantages: torch.Tensor, max_rows: int
) -> list[dict[str, Any]]:
    """One row per policy completion of the generation batch (every process's, at most
    `max_rows`): prompt, completion, each reward (`names`), the advantage and, for AAPO, the
    paired reference completion's reward."""
    G = batch.policy.rewards.shape[1]
    ref = batch.reference
    rows = []
    for n, sample in enumerate(batch.policy.samples):
        b, i = divmod(n, G)
        scores = batch.policy.per_function[:, n].tolist()
        row = {
            "prompt": batch.rows[b].problem,
            "completion": sample.text,
            "rewards": {
                name: None if math.isnan(v) else v for name, v in zip(names, scores, strict=True)
            },
            "reward": batch.policy.rewards[b, i].item(),
            "advantage": advantages[n].item(),
            "length": len(sample.completion_ids),
            "truncated": sample.truncated,
        }
        if ref is not None:
            row["ref_reward"] = ref.rewards[b, i].item()
        rows.append(row)
    return gather_lists(acc, rows)[:max_rows]


def _sum_counts(acc: Any, counts: dict[str, float]) -> dict[str, float]:
    """Sum event counts over processes; keys may differ between processes."""
    total: dict[str, float] = {}
    for part in gather_lists(acc, [counts]):
        for key, value in part.items():
            total[key] = total.get(key, 0.0) + value
    return total


def _mean(values: torch.Tensor) -> float:
    return values.float().mean().item() if values.numel() else float("nan")
