"""A side's completions scored: TRL's reward call on a step's prompt rows, combined.

`score(scorer, rows, samples, G)` is the one path the policy's groups, the sampled reference's,
`aapo reference` and its import all take, so a reward means the same everywhere. `Scored`
holds the result; a reference cache fills it with rewards alone (no completions).

Left out: running the reward functions (rewards/scoring.py: timeouts, worker processes).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from aapo.algorithms import as_groups, combine_rewards
from aapo.data.rows import PromptRow
from aapo.rewards.scoring import RewardScorer
from aapo.rollout import Sample


@dataclass
class Scored:
    """Completions of one side (policy or reference) and their rewards."""

    samples: list[Sample] | None  # [N] = B·G, group-major; None: rewards only (a cache)
    per_function: torch.Tensor  # [K, N], NaN = not applicable
    rewards: torch.Tensor  # [B, G]
    valid: torch.Tensor  # [B, G]


def score(scorer: RewardScorer, rows: list[PromptRow], samples: list[Sample], G: int) -> Scored:
    """TRL's reward call: dataset columns repeated once per completion of the row's group;
    for conversational data, prompts are message lists and each completion is
    `[{"role": "assistant", "content": text}]`, as TRL passes them."""
    columns = {key: [row.columns[key] for row in rows for _ in range(G)] for key in rows[0].columns}
    columns["rendered_prompt"] = [row.rendered_prompt for row in rows for _ in range(G)]
    if rows[0].conversational:
        prompts = columns["prompt"]
        completions: list[Any] = [[{"role": "assistant", "content": s.text}] for s in samples]
    else:
        prompts, completions = columns["problem"], [s.text for s in samples]
    per_function = scorer.score(prompts, completions, [s.completion_ids for s in samples], columns)
    rewards, valid = combine_rewards(per_function, scorer.weights, names=scorer.names)
    return Scored(samples, per_function, as_groups(rewards, G), as_groups(valid, G))
