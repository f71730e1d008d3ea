"""A side's completions scored: TRL's reward call on a step's prompt rows, combined.

`score(scorer, rows, samples, G)` is the one path the policy's groups, the sampled reference's,
`aapo reference` and its import all take, so a reward means the same everywhere; `probe` makes
the same call once on stand-in completions before any model loads. `Scored`
holds the result; a reference cache fills it with rewards alone (no completions).

Left out: running the reward functions (rewards/scoring.py: timeouts, worker processes).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch

from aapo.algorithms import as_groups, combine_rewards
from aapo.data.rows import PromptRow
from aapo.rewards import gold_text
from aapo.rewards.errors import RewardReturnError
from aapo.rewards.scoring import RewardScorer
from aapo.rollout import Sample

log = logging.getLogger("aapo")


@dataclass
class Scored:
    """Completions of one side (policy or reference) and their rewards."""

    samples: list[Sample] | None  # [N] = B·G, group-major; None: rewards only (a cache)
    per_function: torch.Tensor  # [K, N], NaN = not applicable
    rewards: torch.Tensor  # [B, G]
    valid: torch.Tensor  # [B, G]


def score(scorer: RewardScorer, rows: list[PromptRow], samples: list[Sample], G: int) -> Scored:
    """Score `samples` (G per row, group-major) with TRL's reward call (`reward_call`)."""
    per_function = scorer.score(*reward_call(rows, samples, G))
    rewards, valid = combine_rewards(per_function, scorer.weights, names=scorer.names)
    return Scored(samples, per_function, as_groups(rewards, G), as_groups(valid, G))


def reward_call(
    rows: list[PromptRow], samples: list[Sample], G: int
) -> tuple[list[Any], list[Any], list[list[int]], dict[str, list[Any]]]:
    """TRL's reward call: (prompts, completions, completion_ids, columns), dataset columns
    repeated once per completion of the row's group; for conversational data, prompts are
    message lists and each completion is `[{"role": "assistant", "content": text}]`, as TRL
    passes them."""
    columns = {key: [row.columns[key] for row in rows for _ in range(G)] for key in rows[0].columns}
    columns["rendered_prompt"] = [row.rendered_prompt for row in rows for _ in range(G)]
    if rows[0].conversational:
        prompts = columns["prompt"]
        completions: list[Any] = [[{"role": "assistant", "content": s.text}] for s in samples]
    else:
        prompts, completions = columns["problem"], [s.text for s in samples]
    return prompts, completions, [s.completion_ids for s in samples], columns


PROBE_ROWS = 2


def probe(scorer: RewardScorer, rows: list[PromptRow], tokenizer: Any) -> None:
    """Call every reward function once, before any model loads, through the same call as
    `score`, on the first `PROBE_ROWS` dataset rows with three stand-in completions each: the
    row's gold answer boxed in the paper's format (ended by EOS), an empty one (EOS alone), and
    one cut at the length cap with no answer. A wrong return (wrong length, strings, bools,
    inf, 2-D, a generator) is a RewardReturnError now, saying how it was found; a function that
    raises or times out on these is logged, as training would count it, and the run goes on."""
    rows = rows[:PROBE_ROWS]
    samples = [sample for row in rows for sample in _stand_ins(row, tokenizer)]
    try:
        problems = scorer.probe(*reward_call(rows, samples, len(samples) // len(rows)))
    except RewardReturnError as err:
        where = ", ".join(row.source for row in rows)
        raise RewardReturnError(
            f"{err} [found before any model loaded, by one call on stand-in completions for "
            f"{where}]"
        ) from err
    for problem in problems:
        log.warning("before training, on stand-in completions: %s", problem)


def _stand_ins(row: PromptRow, tokenizer: Any) -> list[Sample]:
    gold = gold_text(row.columns.get("answer") or row.columns.get("solution")) or "0"
    eos = [] if tokenizer.eos_token_id is None else [tokenizer.eos_token_id]
    texts = [
        (f"<think>\nStand-in reasoning.\n</think>\n<answer>\n\\boxed{{{gold}}}\n</answer>", False),
        ("", False),
        ("Stand-in reasoning that was cut at the length cap before", True),
    ]
    samples = []
    for text, cut in texts:
        ids = tokenizer(text, add_special_tokens=False)["input_ids"] if text else []
        samples.append(Sample(list(ids) + ([] if cut else eos), text, cut))
    return samples
